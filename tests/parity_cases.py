"""Read the reference parity fixtures generically and run each DiT case through our core.

A fixture folder holds ``<case>.json`` + ``<case>.safetensors`` pairs and DiT weights ``dit_*.safetensors``. Cases
are recognised by their content, not their names, so another folder of the same format with other configurations
runs unchanged (see ``../shared/fixtures/parity/README.md``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from causal_forcing_core.attention import block_causal_layout
from causal_forcing_core.config import DiTConfig, SamplerConfig
from causal_forcing_core.dit import CausalWanModel
from causal_forcing_core.geometry import WAN21
from causal_forcing_core.kv_cache import KVCache, Recache
from causal_forcing_core.noise import RecordedNoise
from causal_forcing_core.scheduler import FlowMatchScheduler
from causal_forcing_core.stream import Prompt, Stream, start_stream
from ci_env import parity_fixture_path

ATOL = 1e-4
RTOL = 1e-4
#: the largest abs difference seen per compared quantity, "case.what" -> max |ours - reference| (bench/parity_error.py)
MEASURED: dict[str, float] = {}


def fixture_dir() -> Path:
    """The parity fixture folder (see :func:`ci_env.parity_fixture_path`)."""
    return parity_fixture_path()


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # "sample" | "fwd_kv" | "fwd_train"
    meta: dict
    tensors_path: Path

    def tensors(self) -> dict[str, torch.Tensor]:
        return load_file(str(self.tensors_path))


def discover_dit_cases(folder: Path) -> list[Case]:
    """Every JSON with a ``dit_config`` and a tensor file beside it; its kind read off its keys."""
    cases = []
    for meta_path in sorted(folder.glob("*.json")):
        meta = json.loads(meta_path.read_text())
        if "dit_config" not in meta:
            continue
        tensors = meta_path.with_suffix(".safetensors")
        if not tensors.exists():
            raise FileNotFoundError(f"{meta_path.name} has no tensor file {tensors.name}")
        if "calls" in meta and "num_blocks" in meta:
            kind = "sample"
        elif "cache_in" in meta:
            kind = "fwd_kv"
        elif "flex_attention" in meta or "num_frames" in meta:
            kind = "fwd_train"
        else:
            raise ValueError(f"Unrecognised DiT parity case {meta_path.name}: keys {sorted(meta)}")
        cases.append(Case(meta_path.stem, kind, meta, tensors))
    return cases


def load_model(folder: Path, dit_config: dict, rope_dtype: torch.dtype | None = None) -> CausalWanModel:
    """The ``dit_*.safetensors`` weights of the folder whose shapes fit ``dit_config`` (reference key layout);
    ``rope_dtype=torch.float64`` rotates like the reference (exactly), None in the model's default dtype."""
    cfg = DiTConfig.from_dict(dit_config)
    model = CausalWanModel(cfg)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    for path in sorted(folder.glob("dit_*.safetensors")):
        sd = {k.removeprefix("model."): v for k, v in load_file(str(path)).items()}
        if {k: v.shape for k, v in sd.items()} == expected:
            model.load_state_dict(sd, strict=True)
            model.rope_dtype = rope_dtype
            return model.eval().requires_grad_(False)
    raise FileNotFoundError(f"No dit_*.safetensors in {folder} matches config {dit_config}")


def raw_steps(warped: list[float], scheduler: FlowMatchScheduler) -> tuple[int, ...]:
    """Invert the warp: the config integers whose warped timesteps are ``warped``."""
    table = torch.cat([scheduler.timesteps, torch.zeros(1)])
    raw = tuple(1000 - int(torch.argmin((table - t).abs())) for t in warped)
    assert torch.equal(scheduler.warp(raw), torch.tensor(warped, dtype=torch.float32)), (warped, raw)
    return raw


def sampler_for(meta: dict) -> SamplerConfig:
    scheduler = FlowMatchScheduler(meta["timestep_shift"])
    first = meta.get("denoising_step_list_first_chunk")
    return SamplerConfig(
        name=meta.get("case", "fixture"),
        frames_per_block=meta["num_frame_per_block"],
        denoising_steps=raw_steps(meta["denoising_step_list"], scheduler),
        first_chunk_steps=raw_steps(first, scheduler) if first else None,
        shift=meta["timestep_shift"],
        warp=True,
        context_noise=meta["context_noise"],
    )


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    assert actual.shape == expected.shape, f"{what}: shape {list(actual.shape)} != {list(expected.shape)}"
    diff = (actual.float() - expected.float()).abs().max().item() if actual.numel() else 0.0
    MEASURED[what] = max(diff, MEASURED.get(what, 0.0))
    assert torch.allclose(actual.float(), expected.float(), atol=ATOL, rtol=RTOL), f"{what}: max abs diff {diff:.3g}"


def switch_chunk(meta: dict) -> int | None:
    """The generated-chunk index at which the second prompt takes over, if the case switches."""
    if meta.get("switch_block") is not None:
        return int(meta["switch_block"])
    if meta.get("switch_frame") is not None:
        n = meta["num_frame_per_block"]
        first_frame = meta.get("num_input_frames", 0)
        return -(-(meta["switch_frame"] - first_frame) // n)
    return None


def run_sample_case(case: Case, model: CausalWanModel) -> None:
    meta, t = case.meta, case.tensors()
    sampler = sampler_for(meta)
    fsl = meta["frame_seq_length"]
    c, h, w = meta.get("latent_shape_per_frame") or t["noise"].shape[2:]
    window = None if meta["local_attn_size"] == -1 else meta["local_attn_size"]
    prompt_a = Prompt(t["prompt_embeds"] if "prompt_embeds" in t else t["prompt_embeds_a"], "A")
    prompt_b = Prompt(t["prompt_embeds_b"], "B") if "prompt_embeds_b" in t else None
    recache = "recache" in meta
    stream = start_stream(
        model, sampler, height=h * WAN21.spatial_stride, width=w * WAN21.spatial_stride, prompt=prompt_a,
        window_frames=window, sink_frames=meta["sink_size"], context=t.get("initial_latent"),
        capacity_frames=meta["kv_cache_buffer_tokens"] // fsl,
    )
    assert stream.storage.cache.frame_tokens == fsl
    noise = RecordedNoise(t["noise"], t["renoise"])
    x0_steps: list[torch.Tensor] = []

    def on_step(step: int, steps: int, x0: torch.Tensor) -> None:
        if step < steps:
            x0_steps.append(x0.clone())

    switch_at = switch_chunk(meta)
    for block in range(meta["num_blocks"]):
        if prompt_b is not None and block == switch_at:
            if recache:
                stream = switch_with_recache(stream, prompt_b, meta, t)
            else:
                stream = stream.switch_prompt(prompt_b)
        stream = stream.generate(1, noise=noise, on_step=on_step)
    assert not noise.queue, f"{case.name}: {len(noise.queue)} re-noise rows were not consumed"
    assert_close(stream.latents, t["output"], f"{case.name}.output")
    if "x0_steps" in t:
        assert_close(torch.stack(x0_steps), t["x0_steps"], f"{case.name}.x0_steps")
    cache = stream.kv_cache
    for layer, final in enumerate(meta.get("kv_final", [])):
        assert cache.global_end * fsl == final["global_end_index"], f"{case.name}: global_end"
        assert cache.local_end * fsl == final["local_end_index"], f"{case.name}: local_end"
        if f"kv_final.layer{layer}.k" in t:
            k, v = cache.valid(layer)
            assert_close(k, t[f"kv_final.layer{layer}.k"], f"{case.name}.kv_final.layer{layer}.k")
            assert_close(v, t[f"kv_final.layer{layer}.v"], f"{case.name}.kv_final.layer{layer}.v")


def recache_mode(meta: dict) -> Recache:
    """LongLive's ``global_sink`` flag as our mode: true keeps the sink (RECENT), false re-encodes it (WINDOW)."""
    return Recache.WINDOW if meta.get("global_sink") is False else Recache.RECENT


def switch_with_recache(stream: Stream, prompt_b: Prompt, meta: dict, t: dict[str, torch.Tensor]) -> Stream:
    """Switch with re-cache, checking the cache right before and after it against the LongLive fixture."""
    fsl = meta["frame_seq_length"]
    before = stream.kv_cache
    for layer, info in enumerate(meta["recache"]["before"]):
        assert before.local_end * fsl == info["local_end_index"] and before.global_end * fsl == info["global_end_index"]
        k, v = before.valid(layer)
        assert_close(k, t[f"kv_before_recache.layer{layer}.k"][:, : k.shape[1]], f"kv_before_recache.layer{layer}.k")
        assert_close(v, t[f"kv_before_recache.layer{layer}.v"][:, : v.shape[1]], f"kv_before_recache.layer{layer}.v")
    switched = stream.switch_prompt(prompt_b, recache=recache_mode(meta))
    after = switched.kv_cache
    start = meta["recache"]["recache_start_frame"]
    frames = meta["recache"]["current_start_frame"] - start
    assert_close(stream.latents[:, start : start + frames], t["recache_frames"], "recache_frames")
    for layer, info in enumerate(meta["recache"]["after"]):
        assert after.local_end * fsl == info["local_end_index"] and after.global_end * fsl == info["global_end_index"]
        k, v = after.valid(layer)
        assert_close(k, t[f"kv_after_recache.layer{layer}.k"][:, : k.shape[1]], f"kv_after_recache.layer{layer}.k")
        assert_close(v, t[f"kv_after_recache.layer{layer}.v"][:, : v.shape[1]], f"kv_after_recache.layer{layer}.v")
    return switched


def run_fwd_kv_case(case: Case, model: CausalWanModel) -> None:
    meta, t = case.meta, case.tensors()
    fsl, n = meta["frame_seq_length"], meta["num_frame_per_block"]
    cfg = model.config
    cache = KVCache(
        num_layers=cfg.num_layers, batch=t["x"].shape[0], num_heads=cfg.num_heads, head_dim=cfg.head_dim,
        frame_tokens=fsl, capacity_frames=meta["kv_cache_buffer_tokens"] // fsl,
    )
    text = model.embed_text(t["prompt_embeds"])
    scheduler = FlowMatchScheduler(5.0)
    with torch.no_grad():
        ctx = t["context_frames"]
        cache.open_block(0, ctx.shape[1])
        model(ctx.permute(0, 2, 1, 3, 4), t["context_timestep"], text, cache=cache)
        cache.commit_block()
        for layer in range(cfg.num_layers):
            assert_close(cache.valid(layer)[0], t[f"cache_in.layer{layer}.k"], f"cache_in.layer{layer}.k")
            assert_close(cache.valid(layer)[1], t[f"cache_in.layer{layer}.v"], f"cache_in.layer{layer}.v")
        start = meta["current_start_frame"]
        x = t["x"]
        cache.open_block(start, x.shape[1])
        flow = model(x.permute(0, 2, 1, 3, 4), t["timestep"], text, cache=cache, start_frame=start).permute(0, 2, 1, 3, 4)
        cache.commit_block()
    assert_close(flow, t["flow_pred"], "fwd_kv.flow_pred")
    x0 = scheduler.flow_to_x0(x.flatten(0, 1), flow.flatten(0, 1), t["timestep"].flatten()).view_as(flow)
    assert_close(x0, t["x0_pred"], "fwd_kv.x0_pred")
    for layer, info in enumerate(meta["cache_out"]):
        assert cache.global_end * fsl == info["global_end_index"] and cache.local_end * fsl == info["local_end_index"]
        assert_close(cache.valid(layer)[0], t[f"cache_out.layer{layer}.k"], f"cache_out.layer{layer}.k")
        assert_close(cache.valid(layer)[1], t[f"cache_out.layer{layer}.v"], f"cache_out.layer{layer}.v")
        assert_close(text.k[layer], t[f"crossattn.layer{layer}.k"], f"crossattn.layer{layer}.k")
        assert_close(text.v[layer], t[f"crossattn.layer{layer}.v"], f"crossattn.layer{layer}.v")
    assert n == x.shape[1]


def run_fwd_train_case(case: Case, model: CausalWanModel) -> None:
    meta, t = case.meta, case.tensors()
    n, fsl = meta["num_frame_per_block"], meta["frame_seq_length"]
    scheduler = FlowMatchScheduler(5.0)

    def x0_of(x: torch.Tensor, flow: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
        return scheduler.flow_to_x0(x.flatten(0, 1), flow.flatten(0, 1), ts.flatten()).view_as(flow)

    with torch.no_grad():
        df_x = t["df_x"]
        mask = block_causal_layout(df_x.shape[1], n, fsl)
        df = model(df_x.permute(0, 2, 1, 3, 4), t["df_timestep"], t["prompt_embeds"], mask=mask).permute(0, 2, 1, 3, 4)
        tf = model.forward_teacher_forcing(
            t["tf_noisy_x"].permute(0, 2, 1, 3, 4), t["tf_timestep"], t["tf_clean_x"].permute(0, 2, 1, 3, 4),
            t["prompt_embeds"], n,
        ).permute(0, 2, 1, 3, 4)
    assert_close(df, t["df_flow_pred"], "fwd_train.df_flow_pred")
    assert_close(x0_of(df_x, df, t["df_timestep"]), t["df_x0_pred"], "fwd_train.df_x0_pred")
    assert_close(tf, t["tf_flow_pred"], "fwd_train.tf_flow_pred")
    assert_close(x0_of(t["tf_noisy_x"], tf, t["tf_timestep"]), t["tf_x0_pred"], "fwd_train.tf_x0_pred")


RUNNERS = {"sample": run_sample_case, "fwd_kv": run_fwd_kv_case, "fwd_train": run_fwd_train_case}
