"""Conversions between the student's latent layout and ComfyUI's ``LATENT``.

The student works on *normalised* Wan 2.1 latents, ``(mu - mean) / std`` per channel, laid out [B, F, C, h, w]
(frames before channels, as the reference code). ComfyUI's ``LATENT["samples"]`` holds *raw* VAE latents laid out
[B, C, F, h, w], so its own ``VAEDecode`` works on them (``Wan21.process_out``).
"""

from __future__ import annotations

import torch

from .errors import InvalidInputError
from .vae import WAN21_LATENT_MEAN, WAN21_LATENT_STD


def _stats(like: torch.Tensor, channel_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    shape = [1] * like.dim()
    shape[channel_dim] = len(WAN21_LATENT_MEAN)
    mean = torch.tensor(WAN21_LATENT_MEAN, dtype=torch.float32, device=like.device).view(shape)
    std = torch.tensor(WAN21_LATENT_STD, dtype=torch.float32, device=like.device).view(shape)
    return mean, std


def to_raw_latents(latents: torch.Tensor) -> torch.Tensor:
    """Normalised student latents [B, F, 16, h, w] -> raw VAE latents [B, 16, F, h, w] (float32)."""
    if latents.dim() != 5 or latents.shape[2] != len(WAN21_LATENT_MEAN):
        raise InvalidInputError(f"Expected student latents [B, F, 16, h, w], got shape {list(latents.shape)}.")
    mean, std = _stats(latents, 2)
    return (latents.float() * std + mean).permute(0, 2, 1, 3, 4).contiguous()


def from_raw_latents(samples: torch.Tensor) -> torch.Tensor:
    """Raw VAE latents [B, 16, F, h, w] (a ComfyUI ``LATENT["samples"]``) -> normalised [B, F, 16, h, w] float32."""
    if samples.dim() != 5 or samples.shape[1] != len(WAN21_LATENT_MEAN):
        got = list(samples.shape)
        hint = " A 4-D latent is an image model's (SD/Flux), not Wan video." if samples.dim() == 4 else ""
        raise InvalidInputError(
            f"Expected a Wan 2.1 video LATENT [B, 16, frames, H/8, W/8], got shape {got}.{hint}"
        )
    mean, std = _stats(samples, 1)
    return ((samples.float() - mean) / std).permute(0, 2, 1, 3, 4).contiguous()
