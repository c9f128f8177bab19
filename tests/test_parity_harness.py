"""The parity harness is generic: a fixture folder of the same format with another configuration runs unchanged.

We write such a folder here (values from our own implementation, so this checks the harness, not parity: the
reference comparison is tests/test_parity.py) with a different width, head count, depth, text size and a
non-square latent, then discover and run it exactly as the shared fixtures are run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from causal_forcing_core.config import DiTConfig, sampler_preset
from causal_forcing_core.noise import RecordedNoise
from causal_forcing_core.stream import Prompt, start_stream
from parity_cases import RUNNERS, discover_dit_cases, load_model
from tiny import tiny_model

OTHER = DiTConfig(dim=96, ffn_dim=160, num_heads=3, num_layers=3, text_dim=24, text_len=8)
LATENT = (16, 6, 10)  # C, h, w: 3 x 5 = 15 tokens per frame


def _dit_config_json(cfg: DiTConfig) -> dict:
    return {"model_type": "t2v", **cfg.to_dict()}


def _write_sample_case(folder: Path, model, name: str, preset: str, blocks: int, window: int, sink: int) -> None:
    sampler = sampler_preset(preset)
    c, h, w = LATENT
    n = sampler.frames_per_block
    g = torch.Generator().manual_seed(len(name))
    prompt = torch.randn(1, 5, OTHER.text_dim, generator=g)
    noise = torch.randn(1, blocks * n, c, h, w, generator=g)
    steps = [sampler.steps_for_chunk(b) for b in range(blocks)]
    renoise = torch.randn(sum(len(s) - 1 for s in steps), n, c, h, w, generator=g)
    fsl = OTHER.tokens_per_frame(h, w)
    stream = start_stream(model, sampler, height=h * 8, width=w * 8, prompt=Prompt(prompt),
                          window_frames=window or None, sink_frames=sink)
    x0_steps = []
    stream = stream.generate(blocks, noise=RecordedNoise(noise, renoise),
                             on_step=lambda s, total, x0: x0_steps.append(x0.clone()) if s < total else None)
    cache = stream.kv_cache
    sched = stream.storage.scheduler
    meta = {
        "case": name, "dit_config": _dit_config_json(OTHER), "latent_shape_per_frame": list(LATENT),
        "frame_seq_length": fsl, "num_frame_per_block": n, "num_blocks": blocks, "num_input_frames": 0,
        "denoising_step_list": sched.warp(sampler.denoising_steps).tolist(),
        "denoising_step_list_first_chunk": sched.warp(sampler.first_chunk_steps).tolist()
        if sampler.first_chunk_steps else None,
        "context_noise": 0.0, "timestep_shift": 5.0, "local_attn_size": window or -1, "sink_size": sink,
        "kv_cache_buffer_tokens": (window or 21) * fsl, "switch_block": None, "calls": [],
        "kv_final": [{"global_end_index": cache.global_end * fsl, "local_end_index": cache.local_end * fsl}] * 3,
    }
    tensors = {"prompt_embeds": prompt, "noise": noise, "renoise": renoise, "output": stream.latents,
               "x0_steps": torch.stack(x0_steps)}
    for layer in range(OTHER.num_layers):
        k, v = cache.valid(layer)
        tensors[f"kv_final.layer{layer}.k"], tensors[f"kv_final.layer{layer}.v"] = k.clone(), v.clone()
    (folder / f"{name}.json").write_text(json.dumps(meta))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / f"{name}.safetensors"))


@pytest.fixture(scope="module")
def other_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("other_parity")
    model = tiny_model(OTHER, seed=3)
    save_file({f"model.{k}": v.contiguous() for k, v in model.state_dict().items()}, str(folder / "dit_other.safetensors"))
    _write_sample_case(folder, model, "sample_chunk_window", "chunkwise-4step", blocks=4, window=6, sink=3)
    _write_sample_case(folder, model, "sample_frame_2step", "framewise-2step", blocks=3, window=0, sink=0)
    return folder


def test_other_configuration_runs_unchanged(other_folder: Path) -> None:
    cases = discover_dit_cases(other_folder)
    assert {c.name for c in cases} == {"sample_chunk_window", "sample_frame_2step"}
    for case in cases:
        RUNNERS[case.kind](case, load_model(other_folder, case.meta["dit_config"]))


def test_harness_catches_a_wrong_output(other_folder: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    for f in other_folder.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    t = load_file(str(tmp_path / "sample_frame_2step.safetensors"))
    t["output"][0, -1] += 1e-2
    save_file(t, str(tmp_path / "sample_frame_2step.safetensors"))
    case = next(c for c in discover_dit_cases(tmp_path) if c.name == "sample_frame_2step")
    with pytest.raises(AssertionError, match="output: max abs diff"):
        RUNNERS[case.kind](case, load_model(tmp_path, case.meta["dit_config"]))


def test_unknown_case_kind_fails_loudly(tmp_path: Path) -> None:
    (tmp_path / "mystery.json").write_text(json.dumps({"dit_config": {}, "something": 1}))
    save_file({"x": torch.zeros(1)}, str(tmp_path / "mystery.safetensors"))
    with pytest.raises(ValueError, match="Unrecognised DiT parity case"):
        discover_dit_cases(tmp_path)
