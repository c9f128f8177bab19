"""Toy-world data for training: the tiny Wan VAE trained on toy clips, and the latent dataset the DiT stages read.

Pixel video is [B, 3, T, H, W] in [-1, 1] for the VAE; latents are normalised [N, F, C, h, w] (frames before
channels), as the streams produce them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from ..text_encoder import TextEncoder
from ..toy.world import BACKGROUND, sample_clip
from ..vae import WAN21_LATENT_MEAN, WAN21_LATENT_STD, WanVAE
from ..weights import read_weights

logger = logging.getLogger(__name__)


def toy_video_batch(seeds: list[int], num_frames: int, size: int) -> torch.Tensor:
    """Clips ``sample_clip(seed)`` -> pixel video [B, 3, T, H, W] in [-1, 1]."""
    frames = [sample_clip(s, num_frames=num_frames, height=size, width=size).frames for s in seeds]
    return torch.stack(frames).permute(0, 4, 1, 2, 3) * 2 - 1


def latent_warmup_target(video: torch.Tensor) -> torch.Tensor:
    """What the first 3 latent channels are pulled towards early in training: the frame minus the background,
    averaged over each latent cell (8x8 pixels; frame 0 alone, then groups of 4 frames). [B, 3, T', H/8, W/8]."""
    background = torch.tensor(BACKGROUND, dtype=video.dtype).view(1, 3, 1, 1, 1) / 127.5 - 1
    x = video - background
    groups = [x[:, :, :1]] + [x[:, :, i : i + 4].mean(dim=2, keepdim=True) for i in range(1, x.shape[2], 4)]
    return 4 * F.avg_pool3d(torch.cat(groups, dim=2), (1, 8, 8))


def vae_loss(
    vae: WanVAE, video: torch.Tensor, *, object_weight: float, warmup: bool
) -> tuple[torch.Tensor, dict[str, float]]:
    """Reconstruction MSE with the object's pixels weighted ``1 + object_weight`` (the shape covers ~8% of a frame,
    and a small autoencoder otherwise settles on drawing the background only), trained as a plain autoencoder
    (z = posterior mean, as decoding uses it). With ``warmup`` the first three latent channels are also pulled
    towards the cell-averaged frame (:func:`latent_warmup_target`): a curriculum that opens the path from the latent
    to the decoder, after which the autoencoder is free. video [B, 3, T, H, W] in [-1, 1].
    """
    mu, _ = vae.encode_posterior(video)
    recon = vae.decode_raw(mu)
    background = torch.tensor(BACKGROUND, dtype=video.dtype).view(1, 3, 1, 1, 1) / 127.5 - 1
    on_object = ((video - background).abs().amax(dim=1, keepdim=True) > 0.1).float()
    err = (recon - video).pow(2)
    loss = (err * (1 + object_weight * on_object)).mean()
    parts = {"mse": float(err.mean().detach()),
             "object_mse": float((err.mean(1, keepdim=True) * on_object).sum().detach() / on_object.sum().clamp_min(1))}
    if warmup:
        guide = (mu[:, :3] - latent_warmup_target(video)).pow(2).mean()
        loss = loss + 10 * guide
        parts["warmup"] = float(guide.detach())
    return loss, parts


@torch.no_grad()
def fold_latent_statistics(vae: WanVAE, video: torch.Tensor) -> dict[str, list[float]]:
    """Rescale the VAE's latent projections so its raw latents have Wan 2.1's per-channel mean and std.

    The released normalisation (``(mu - mean) / std`` with Wan's constants) then maps the toy latents to zero mean
    and unit variance, and the VAE file stays an ordinary Wan 2.1 VAE. The encoder's ``conv1`` output is affinely
    transformed (mu' = a mu + b, logvar' = logvar + 2 log a) and ``conv2`` (before the decoder) undoes it.
    Returns the measured statistics. video [B, 3, T, H, W] in [-1, 1].
    """
    mu, _ = vae.encode_posterior(video)
    mean, std = mu.mean(dim=(0, 2, 3, 4)), mu.std(dim=(0, 2, 3, 4)).clamp_min(1e-4)
    target_mean, target_std = torch.tensor(WAN21_LATENT_MEAN), torch.tensor(WAN21_LATENT_STD)
    a = target_std / std
    b = target_mean - a * mean
    z = a.numel()
    w1, b1 = vae.conv1.weight, vae.conv1.bias
    w1[:z] *= a.view(-1, 1, 1, 1, 1)
    b1[:z] = b1[:z] * a + b
    b1[z:] += 2 * torch.log(a)
    w2, b2 = vae.conv2.weight, vae.conv2.bias
    b2 -= (w2[:, :, 0, 0, 0] @ (b / a))
    w2 /= a.view(1, -1, 1, 1, 1)
    return {"mean": mean.tolist(), "std": std.tolist()}


@dataclass
class LatentDataset:
    """Clean latents [N, F, C, h, w], their captions and prompt embeddings [N, L, D], and the empty prompt's [1, L, D]."""

    latents: torch.Tensor
    captions: list[str]
    embeds: torch.Tensor
    uncond: torch.Tensor

    def __len__(self) -> int:
        return self.latents.shape[0]

    def batch(self, size: int, generator: torch.Generator, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """A random batch on ``device``: latents [B, F, C, h, w] (float32) and prompt embeddings [B, L, D]."""
        index = torch.randint(0, len(self), (size,), generator=generator)
        return self.latents[index].to(device, torch.float32), self.embeds[index].to(device)

    def uncond_batch(self, size: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """The empty prompt's embeddings repeated: [B, L, D]."""
        return self.uncond.to(device).expand(size, -1, -1)

    def save(self, path: Path) -> None:
        save_file({"latents": self.latents.contiguous(), "embeds": self.embeds.contiguous(), "uncond": self.uncond},
                  str(path), metadata={"captions": "\n".join(self.captions)})

    @classmethod
    def load(cls, path: Path) -> LatentDataset:
        data = read_weights(path, what="latent dataset", advice="delete it to rebuild it")
        t, captions = data.tensors, data.metadata.get("captions", "").split("\n")
        return cls(t["latents"], captions, t["embeds"], t["uncond"])


@torch.no_grad()
def build_latent_dataset(
    vae: WanVAE, text_encoder: TextEncoder, *, seeds: range, num_frames: int, size: int, batch: int = 16,
) -> LatentDataset:
    """Render and encode toy clips ``sample_clip(seed)`` for every seed; captions encoded once each."""
    latents, captions = [], []
    seeds = list(seeds)
    for i in range(0, len(seeds), batch):
        part = seeds[i : i + batch]
        latents.append(vae.encode(toy_video_batch(part, num_frames, size)))
        captions.extend(sample_clip(s, num_frames=1, height=size, width=size).captions[0][1].text for s in part)
    unique = sorted(set(captions))
    table = dict(zip(unique, text_encoder.encode(unique)))
    embeds = torch.stack([table[c] for c in captions])
    uncond = text_encoder.encode([""])
    logger.info("Encoded %d toy clips (%d distinct captions) to latents %s", len(seeds), len(unique),
                list(torch.cat(latents).shape))
    return LatentDataset(torch.cat(latents), captions, embeds, uncond)
