"""Parity fixtures for LongLive's KV re-cache on a prompt switch, in both of its modes, from LongLive's own code
(NVlabs/LongLive, branch v1.0), run unmodified on the tiny parity weights on the CPU with runtime patches only.

    python scripts/make_longlive_fixtures.py --official /path/to/LongLive \\
        --weights ../shared/fixtures/parity/dit_tiny.safetensors --out tests/data

``global_sink: true`` keeps the first frames' K/V as the sink and re-encodes the recent ones; ``global_sink: false``
(how LongLive trains) zeroes the cache and re-encodes the last window of frames from the first slot on, so the
sink becomes the oldest re-encoded frames. ``InteractiveCausalInferencePipeline.inference`` runs as is, with:

- float32 SDPA attention (``wan.modules.causal_model.attention``, ``wan.modules.model.flash_attention``);
- ``CausalWanModel.from_pretrained`` building the tiny configuration of ``--weights``;
- the pipeline's ``frame_seq_length`` / ``num_transformer_blocks`` and its two cache initialisers sized for the tiny
  model (the KV initialiser honours LongLive's ``kv_cache_size_override``);
- a recorded, seeded ``torch.randn_like``; a text encoder stub returning seeded embeddings per prompt;
- while the official modules import, ``torch.cuda.current_device`` answering 0 and ``wan.image2video`` a
  stand-in (``scripts/official_patches.py``).

Writes ``<out>/longlive_<case>.safetensors`` (``noise``, ``prompt_embeds_a`` / ``_b``, ``renoise`` [draws, B * 3,
C, h, w] in call order, ``output``, the KV cache of every layer after the run) and ``longlive_<case>.json``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_rolling_fixtures import DIT_CONFIG  # noqa: E402
from official_patches import (  # noqa: E402
    RecordedRandn,
    importing_official_code,
    official_crossattn_cache,
    official_kv_cache,
    sdpa,
    write_fixture_cases,
)

#: configs/longlive_interactive_inference.yaml, scaled to the tiny model: 6-frame window with a 3-frame sink
PIPELINE_ARGS = {"denoising_step_list": [1000, 750, 500, 250], "warp_denoising_step": True, "num_frame_per_block": 3,
                 "context_noise": 0, "model_kwargs": {"local_attn_size": 6, "timestep_shift": 5.0, "sink_size": 3}}
#: case -> global_sink; both switch at frame 9 (block 3) of 6 blocks on 8x8 latents, so the window rolls after it
CASES = {"keep_sink": True, "reencode_sink": False}
NUM_BLOCKS, SWITCH_FRAME, LATENT_HW, SEED = 6, 9, (8, 8), 21


def run_case(name: str, global_sink: bool, official: Path, weights: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    with importing_official_code(str(official)):
        import wan.modules.causal_model as causal_model
        import wan.modules.model as wan_model
        from pipeline.interactive_causal_inference import InteractiveCausalInferencePipeline
        from utils.wan_wrapper import WanDiffusionWrapper
    from safetensors.torch import load_file

    h, w = LATENT_HW
    frame_tokens = (h // DIT_CONFIG["patch_size"][1]) * (w // DIT_CONFIG["patch_size"][2])
    causal_model.attention = sdpa
    wan_model.flash_attention = sdpa
    causal_model.CausalWanModel.from_pretrained = classmethod(lambda cls, path, **kw: cls(**DIT_CONFIG, **kw))
    kwargs = PIPELINE_ARGS["model_kwargs"]
    generator = WanDiffusionWrapper(**kwargs, is_causal=True)
    generator.load_state_dict(load_file(str(weights)), strict=True)
    generator.eval()

    gen = torch.Generator().manual_seed(SEED)
    embeds = {p: torch.randn(1, DIT_CONFIG["text_len"], DIT_CONFIG["text_dim"], generator=gen) for p in ("a", "b")}
    text_encoder = lambda text_prompts: {"prompt_embeds": embeds[text_prompts[0]]}  # noqa: E731 - the official call
    vae = SimpleNamespace(decode_to_pixel=lambda latent, use_cache=False: latent)
    args = SimpleNamespace(**{**PIPELINE_ARGS, "model_kwargs": SimpleNamespace(**kwargs), "global_sink": global_sink})
    pipe = InteractiveCausalInferencePipeline(args, device="cpu", generator=generator, text_encoder=text_encoder,
                                              vae=vae)
    pipe.frame_seq_length = frame_tokens
    pipe.num_transformer_blocks = DIT_CONFIG["num_layers"]
    layers, heads = DIT_CONFIG["num_layers"], DIT_CONFIG["num_heads"]
    head_dim = DIT_CONFIG["dim"] // heads

    def kv_cache(batch_size: int, dtype: torch.dtype, device: Any, kv_cache_size_override: int | None = None) -> None:
        size = kv_cache_size_override or kwargs["local_attn_size"] * frame_tokens
        pipe.kv_cache1 = official_kv_cache(layers, batch_size, size, heads, head_dim, dtype, device)

    def crossattn_cache(batch_size: int, dtype: torch.dtype, device: Any) -> None:
        pipe.crossattn_cache = official_crossattn_cache(layers, batch_size, DIT_CONFIG["text_len"], heads, head_dim,
                                                        dtype, device)

    pipe._initialize_kv_cache = kv_cache
    pipe._initialize_crossattn_cache = crossattn_cache
    calls: list[dict] = []
    official_forward = generator.forward

    def logged_forward(*a: Any, **kw: Any) -> Any:
        calls.append({"current_start_frame": kw["current_start"] // frame_tokens,
                      "num_frames": int(kw["noisy_image_or_video"].shape[1]),
                      "timestep": float(kw["timestep"].flatten()[0]),
                      "sink_recache_after_switch": bool(kw.get("sink_recache_after_switch", False))})
        return official_forward(*a, **kw)

    generator.forward = logged_forward
    num_frames = NUM_BLOCKS * PIPELINE_ARGS["num_frame_per_block"]
    noise = torch.randn(1, num_frames, DIT_CONFIG["in_dim"], h, w, generator=gen)
    randn = RecordedRandn(SEED + 1000)
    original_randn_like = torch.randn_like
    torch.randn_like = randn
    try:
        with torch.no_grad():
            _, output = pipe.inference(noise.clone(), text_prompts_list=[["a"], ["b"]],
                                       switch_frame_indices=[SWITCH_FRAME], return_latents=True)
    finally:
        torch.randn_like = original_randn_like
        sys.path.remove(str(official))
    meta = {"case": f"longlive_{name}", "official": "NVlabs/LongLive v1.0 pipeline/interactive_causal_inference.py "
            "InteractiveCausalInferencePipeline.inference", "global_sink": global_sink, "dit_config": DIT_CONFIG,
            "pipeline_args": PIPELINE_ARGS, "latent_hw": list(LATENT_HW), "frame_seq_length": frame_tokens,
            "num_blocks": NUM_BLOCKS, "switch_frame": SWITCH_FRAME,
            "denoising_step_list": [float(x) for x in pipe.denoising_step_list], "calls": calls,
            "kv_final": [{"global_end_index": int(c["global_end_index"]), "local_end_index": int(c["local_end_index"])}
                         for c in pipe.kv_cache1], "torch": torch.__version__}
    tensors = {"noise": noise, "prompt_embeds_a": embeds["a"], "prompt_embeds_b": embeds["b"],
               "renoise": torch.stack(randn.drawn), "output": output.contiguous()}
    for layer, cache in enumerate(pipe.kv_cache1):
        tensors[f"kv_final.layer{layer}.k"] = cache["k"][:, : int(cache["local_end_index"])].contiguous()
        tensors[f"kv_final.layer{layer}.v"] = cache["v"][:, : int(cache["local_end_index"])].contiguous()
    return meta, tensors


def main(argv: list[str] | None = None) -> int:
    return write_fixture_cases(__doc__, "a NVlabs/LongLive checkout at branch v1.0", "longlive", CASES, run_case,
                               lambda meta, tensors: f"{len(meta['calls'])} calls, output {list(tensors['output'].shape)}", argv)


if __name__ == "__main__":
    sys.exit(main())
