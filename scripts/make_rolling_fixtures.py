"""Parity fixtures for Rolling Forcing: the official ``long_video`` pipeline of thu-ml/Causal-Forcing, run unmodified
on tiny random weights on the CPU, with runtime patches only.

    python scripts/make_rolling_fixtures.py --official /path/to/Causal-Forcing/long_video \\
        --weights ../shared/fixtures/parity/dit_tiny.safetensors --out tests/data

It needs the official code's own imports (torch, diffusers, einops...) in the Python that runs it; nothing of the
official code is copied here or committed. What it does, case by case (``CASES``):

1. puts ``--official`` first on ``sys.path`` and imports ``pipeline.rolling_forcing_inference`` as the official
   ``inference.py`` does;
2. patches at run time (no official file changes):
   - the attention kernels (``wan.modules.causal_model.attention``, ``wan.modules.model.flash_attention``) become
     float32 ``scaled_dot_product_attention`` with scale 1/sqrt(head_dim) and no mask (all official calls pass no
     lengths);
   - ``CausalWanModel.from_pretrained`` builds the tiny configuration of ``--weights`` (``DIT_CONFIG``) instead of
     reading ``wan_models/``;
   - the self-attention layers' hard-coded sizes of the 1.3B model at 832x480 (``frame_length`` 1560 tokens,
     ``block_length`` 3 frames, ``max_attention_size`` 21 frames) are set to the same frame counts in the tiny
     model's tokens;
   - the pipeline's ``frame_seq_length`` (1560) and ``num_transformer_blocks`` (30) attributes, and its two cache
     initialisers (24 frames x 1560 tokens x 12 heads x 128, 512 text tokens), become the same layout sized for the
     tiny model;
   - while the official modules import, ``torch.cuda.current_device`` answers 0 and ``wan.image2video``
     (image-to-video, which needs torchvision) is a stand-in (``scripts/official_patches.py``);
   - ``torch.randn_like`` draws from a seeded generator and records every tensor it returns (``renoise``);
   - the text encoder is a stub returning a seeded prompt embedding; the VAE is never reached (latents are
     compared: ``return_latents=True``, and the pixel decode is a stub);
3. runs ``CausalInferencePipeline.inference_rolling_forcing(noise, ...)`` under ``torch.no_grad`` and writes
   ``<out>/rolling_<case>.safetensors`` (``noise``, ``prompt_embeds``, ``output``, and ``renoise.BBB.K``: block
   ``BBB``'s ``K``-th re-noise, its rows [B * 3, C, h, w] of the ``randn_like`` draw the official loop made for it,
   see :func:`block_renoise`) and ``rolling_<case>.json`` (settings, every generator call in order, the KV-cache indices after
   the run, stats).
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from official_patches import (  # noqa: E402
    RecordedRandn,
    importing_official_code,
    official_crossattn_cache,
    official_kv_cache,
    sdpa,
    write_fixture_cases,
)

#: the tiny DiT of the shared parity fixtures (dit_tiny.safetensors), chunk-wise
DIT_CONFIG = {"model_type": "t2v", "patch_size": [1, 2, 2], "text_len": 16, "in_dim": 16, "dim": 64, "ffn_dim": 128,
              "freq_dim": 256, "text_dim": 32, "out_dim": 16, "num_heads": 2, "num_layers": 2, "qk_norm": True,
              "cross_attn_norm": True, "eps": 1e-06}
#: the settings of configs/rolling_forcing_dmd.yaml merged over configs/default_config.yaml that the pipeline reads
PIPELINE_ARGS = {"denoising_step_list": [1000, 750, 500, 250], "warp_denoising_step": True, "num_frame_per_block": 3,
                 "independent_first_frame": False, "context_noise": 0, "model_kwargs": {"timestep_shift": 5.0}}
#: what the official code hard-codes for the 1.3B model at 832x480, in frames (the sizes are 1560 tokens a frame)
OFFICIAL_FRAMES = {"block": 3, "max_attention": 21, "kv_cache": 24}
#: case -> latent frame size (h, w) and generated blocks; both roll the window and fill the clean cache past its cap
CASES = {
    "square": {"latent_hw": [8, 8], "num_blocks": 12, "seed": 11},
    "nonsquare": {"latent_hw": [8, 12], "num_blocks": 9, "seed": 12},
}


def block_renoise(drawn: list[torch.Tensor], num_blocks: int, steps: int, n: int) -> list[list[torch.Tensor]]:
    """The official loop's ``randn_like`` draws, as each block's re-noise in order: window ``w`` holds blocks
    ``max(0, w - steps + 1) .. min(num_blocks - 1, w)``, block ``b`` at its step ``w - b``; every block not at its
    last step gets one draw of the whole flattened window [B * frames, C, h, w], of which its own rows are used."""
    per_block: list[list[torch.Tensor]] = [[] for _ in range(num_blocks)]
    draws = iter(drawn)
    for w in range(num_blocks + steps - 1):
        first = max(0, w - steps + 1)
        for b in range(first, min(num_blocks - 1, w) + 1):
            if w - b < steps - 1:
                per_block[b].append(next(draws)[(b - first) * n : (b - first + 1) * n].clone())
    if next(draws, None) is not None or any(len(d) != steps - 1 for d in per_block):
        raise RuntimeError("the official loop drew re-noise in another order than block_renoise assumes")
    return per_block


def run_case(name: str, spec: dict, official: Path, weights: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    with importing_official_code(str(official)):
        import wan.modules.causal_model as causal_model
        import wan.modules.model as wan_model
        from pipeline.rolling_forcing_inference import CausalInferencePipeline
        from utils.wan_wrapper import WanDiffusionWrapper
    from safetensors.torch import load_file

    h, w = spec["latent_hw"]
    frame_tokens = (h // DIT_CONFIG["patch_size"][1]) * (w // DIT_CONFIG["patch_size"][2])
    causal_model.attention = sdpa
    wan_model.flash_attention = sdpa

    def tiny_from_pretrained(cls, path: str, **kwargs: Any) -> Any:  # noqa: ANN001 - a classmethod stand-in
        model = cls(**DIT_CONFIG, **kwargs)
        for block in model.blocks:
            attn = block.self_attn
            attn.frame_length = frame_tokens
            attn.block_length = OFFICIAL_FRAMES["block"] * frame_tokens
            attn.max_attention_size = OFFICIAL_FRAMES["max_attention"] * frame_tokens
        return model

    causal_model.CausalWanModel.from_pretrained = classmethod(tiny_from_pretrained)
    generator = WanDiffusionWrapper(timestep_shift=PIPELINE_ARGS["model_kwargs"]["timestep_shift"], is_causal=True)
    state = load_file(str(weights))
    generator.load_state_dict(state, strict=True)
    generator.eval()

    gen = torch.Generator().manual_seed(spec["seed"])
    prompt_embeds = torch.randn(1, DIT_CONFIG["text_len"], DIT_CONFIG["text_dim"], generator=gen)
    text_encoder = lambda text_prompts: {"prompt_embeds": prompt_embeds}  # noqa: E731 - the official call shape
    vae = SimpleNamespace(decode_to_pixel=lambda latent, use_cache=False: latent)
    args = SimpleNamespace(**PIPELINE_ARGS)
    pipe = CausalInferencePipeline(args, device="cpu", generator=generator, text_encoder=text_encoder, vae=vae)
    pipe.frame_seq_length = frame_tokens
    pipe.num_transformer_blocks = DIT_CONFIG["num_layers"]
    layers, heads = DIT_CONFIG["num_layers"], DIT_CONFIG["num_heads"]
    head_dim = DIT_CONFIG["dim"] // heads

    def kv_cache(batch_size: int, dtype: torch.dtype, device: Any) -> None:
        size = OFFICIAL_FRAMES["kv_cache"] * frame_tokens
        pipe.kv_cache_clean = official_kv_cache(layers, batch_size, size, heads, head_dim, dtype, device)

    def crossattn_cache(batch_size: int, dtype: torch.dtype, device: Any) -> None:
        pipe.crossattn_cache = official_crossattn_cache(layers, batch_size, DIT_CONFIG["text_len"], heads, head_dim,
                                                        dtype, device)

    pipe._initialize_kv_cache = kv_cache
    pipe._initialize_crossattn_cache = crossattn_cache

    calls: list[dict] = []
    official_forward = generator.forward

    def logged_forward(*a: Any, **kw: Any) -> Any:
        t = kw["timestep"]
        calls.append({"current_start_frame": kw["current_start"] // frame_tokens,
                      "num_frames": int(kw["noisy_image_or_video"].shape[1]),
                      "timestep": [round(float(x), 4) for x in t[0]],
                      "updating_cache": bool(kw.get("updating_cache", False)),
                      "renoise_before": len(randn.drawn)})
        return official_forward(*a, **kw)

    generator.forward = logged_forward
    num_frames = spec["num_blocks"] * PIPELINE_ARGS["num_frame_per_block"]
    noise = torch.randn(1, num_frames, DIT_CONFIG["in_dim"], h, w, generator=gen)
    randn = RecordedRandn(spec["seed"] + 1000)
    original_randn_like = torch.randn_like
    torch.randn_like = randn
    try:
        with torch.no_grad():
            _, output = pipe.inference_rolling_forcing(noise.clone(), text_prompts=["tiny"], return_latents=True)
    finally:
        torch.randn_like = original_randn_like
        sys.path.remove(str(official))
    meta = {
        "case": f"rolling_{name}", "official": "long_video/pipeline/rolling_forcing_inference.py "
        "CausalInferencePipeline.inference_rolling_forcing", "dit_config": DIT_CONFIG,
        "pipeline_args": PIPELINE_ARGS, "official_frames": OFFICIAL_FRAMES, "latent_hw": [h, w],
        "frame_seq_length": frame_tokens, "num_blocks": spec["num_blocks"], "num_frames": num_frames,
        "denoising_step_list": [float(x) for x in pipe.denoising_step_list],
        "calls": calls, "num_renoise": len(randn.drawn),
        "kv_final": [{"global_end_index": int(c["global_end_index"]), "local_end_index": int(c["local_end_index"])}
                     for c in pipe.kv_cache_clean],
        "stats": {"mean": float(output.mean()), "std": float(output.std()), "min": float(output.min()),
                  "max": float(output.max())},
        "torch": torch.__version__,
    }
    renoise = block_renoise(randn.drawn, spec["num_blocks"], len(pipe.denoising_step_list),
                            PIPELINE_ARGS["num_frame_per_block"])
    tensors = {"noise": noise, "prompt_embeds": prompt_embeds, "output": output.contiguous(),
               **{f"renoise.{b:03d}.{k}": r for b, draws in enumerate(renoise) for k, r in enumerate(draws)}}
    return meta, tensors


def main(argv: list[str] | None = None) -> int:
    return write_fixture_cases(__doc__, "the long_video folder of thu-ml/Causal-Forcing", "rolling", CASES, run_case,
                               lambda meta, tensors: (f"{len(meta['calls'])} calls, {meta['num_renoise']} re-noise draws, output "
                                  f"{list(tensors['output'].shape)}"), argv)


if __name__ == "__main__":
    sys.exit(main())
