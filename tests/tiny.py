"""Tiny random students for fast CPU tests."""

from __future__ import annotations

import torch

from causal_forcing_core.config import TINY, DiTConfig, sampler_preset
from causal_forcing_core.dit import CausalWanModel
from causal_forcing_core.stream import Prompt, Stream, start_stream


def tiny_model(config: DiTConfig = TINY, seed: int = 0) -> CausalWanModel:
    torch.manual_seed(seed)
    model = CausalWanModel(config)
    with torch.no_grad():  # make modulation and biases matter, as in trained weights
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.05)
    return model.eval().requires_grad_(False)


def tiny_prompt(seed: int, config: DiTConfig = TINY, length: int = 7) -> Prompt:
    g = torch.Generator().manual_seed(seed)
    return Prompt(torch.randn(1, length, config.text_dim, generator=g), label=f"prompt{seed}")


def tiny_stream(
    model: CausalWanModel, preset: str = "chunkwise-4step", *, seed: int = 7, prompt: Prompt | None = None,
    size: int = 64, **kwargs: object,
) -> Stream:
    return start_stream(
        model, sampler_preset(preset), height=size, width=size, prompt=prompt or tiny_prompt(1), seed=seed,
        **kwargs,  # type: ignore[arg-type]
    )
