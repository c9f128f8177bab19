"""Wan 2.1 video VAE: encode, decode, streaming (chunk-by-chunk) decode and tiled decode (reference §4.2).

Latents here are *normalised*, ``(mu - mean) / std`` per channel, in the pipeline layout [B, T', 16, h, w] (frames
before channels) that the student generates. Pixels are [B, 3, T, H, W] in [-1, 1] going in and [B, T, 3, H, W]
in [-1, 1] coming out, as the reference wrapper does. Temporal: pixel frame 0 alone, then groups of 4, so
``T' = 1 + (T - 1) / 4``; spatial x8.

Loads the reference ``Wan2.1_VAE.pth`` (``torch.load(weights_only=True)`` only), ComfyUI's
``wan_2.1_vae.safetensors`` (the same key names) and our fixture files; keys are checked strictly.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .errors import CheckpointError, InvalidInputError
from .geometry import WAN21
from .vae_blocks import CausalConv3d, Decoder3d, Encoder3d, TimeCache
from .weights import check_tensor_values, key_problems, read_state_dict

logger = logging.getLogger(__name__)

#: key prefixes of the VAE inside ComfyUI all-in-one checkpoints and wrapped state dicts
_FILE_PREFIXES = ("first_stage_model.", "vae.")
#: per-channel statistics of Wan 2.1 latents (reference §4.2)
WAN21_LATENT_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                     0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
WAN21_LATENT_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)


@dataclass(frozen=True)
class VAEConfig:
    """Architecture of a Wan 2.1 style VAE (the released one is dim 96, z_dim 16)."""

    dim: int = 96
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_scales: tuple[float, ...] = ()
    temporal_downsample: tuple[bool, ...] = (False, True, True)

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor]) -> "VAEConfig":
        return cls(dim=int(sd["encoder.conv1.weight"].shape[0]), z_dim=int(sd["conv2.weight"].shape[0]))


class WanVAE(nn.Module):
    """The Wan 2.1 VAE with the normalisation of the pipeline wrapper."""

    def __init__(self, config: VAEConfig = VAEConfig(), mean: torch.Tensor | None = None,
                 std: torch.Tensor | None = None) -> None:
        super().__init__()
        c = self.config = config
        self.encoder = Encoder3d(c.dim, c.z_dim * 2, c.dim_mult, c.num_res_blocks, c.attn_scales, c.temporal_downsample)
        self.conv1 = CausalConv3d(c.z_dim * 2, c.z_dim * 2, 1)
        self.conv2 = CausalConv3d(c.z_dim, c.z_dim, 1)
        self.decoder = Decoder3d(c.dim, c.z_dim, c.dim_mult, c.num_res_blocks, c.attn_scales, c.temporal_downsample[::-1])
        if mean is None or std is None:
            if c.z_dim != len(WAN21_LATENT_MEAN):
                raise InvalidInputError(f"A z_dim {c.z_dim} VAE needs its own latent mean and std.")
            mean, std = torch.tensor(WAN21_LATENT_MEAN), torch.tensor(WAN21_LATENT_STD)
        self.register_buffer("latent_mean", mean.float().clone(), persistent=False)
        self.register_buffer("latent_std", std.float().clone(), persistent=False)

    @property
    def dtype(self) -> torch.dtype:
        return self.conv2.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.conv2.weight.device

    def _stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, -1, 1, 1, 1)
        return self.latent_mean.view(shape).to(self.dtype), (1.0 / self.latent_std).view(shape).to(self.dtype)

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """[B, 3, T=1+4k, H, W] in [-1, 1] -> normalised latents [B, 1+k, z, H/8, W/8]."""
        mu, _ = self.encode_posterior(video)
        mean, inv_std = self._stats()
        return ((mu - mean) * inv_std).permute(0, 2, 1, 3, 4)

    def encode_posterior(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Differentiable encoder pass: [B, 3, 1+4k, H, W] in [-1, 1] -> raw (unnormalised) posterior mean and
        log-variance, both [B, z, 1+k, H/8, W/8]. :meth:`encode` is this under no_grad, normalised."""
        b, c, t, h, w = video.shape
        check_pixel_size(h, w)
        if c != 3:
            raise InvalidInputError(f"The VAE encodes [B, 3, 1+4k, H, W] RGB video; got {c} channels.")
        WAN21.check_pixel_frames(t, "The video to encode")
        cache = TimeCache()
        x = video.to(self.device, self.dtype)
        outs = []
        stride = WAN21.temporal_stride
        for s, e in [(0, 1)] + [(1 + stride * i, 1 + stride * (i + 1)) for i in range((t - 1) // stride)]:
            cache.start_pass()
            outs.append(self.encoder(x[:, :, s:e], cache))
        mu, logvar = self.conv1(torch.cat(outs, dim=2)).chunk(2, dim=1)
        return mu, logvar

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        """Differentiable decoder pass: raw latents [B, z, T', h, w] -> video [B, 3, 1+4(T'-1), 8h, 8w], unclamped."""
        x = self.conv2(z.to(self.device, self.dtype))
        cache = TimeCache()
        outs = []
        for i in range(x.shape[2]):
            cache.start_pass()
            outs.append(self.decoder(x[:, :, i : i + 1], cache))
        return torch.cat(outs, dim=2)

    def stream_decoder(self) -> "StreamingDecoder":
        """A decoder that keeps the causal memory between calls (see :class:`StreamingDecoder`)."""
        return StreamingDecoder(self)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, *, tile_latent: int | None = None, overlap: int = 2) -> torch.Tensor:
        """Normalised latents [B, T', z, h, w] -> video [B, 1+4(T'-1), 3, 8h, 8w] in [-1, 1].

        ``tile_latent``: decode in spatial tiles of that many latent pixels (``overlap`` shared, blended
        linearly) to bound memory at large sizes.
        """
        if tile_latent:
            return decode_tiled(self, latents, tile_latent, overlap)
        return self.stream_decoder().decode(latents)


class StreamingDecoder:
    """Decode latents chunk by chunk with a persistent causal cache: the first latent frame gives 1 pixel frame,
    every later one 4, and the concatenated output equals :meth:`WanVAE.decode` of all latents."""

    def __init__(self, vae: WanVAE) -> None:
        self.vae = vae
        self.cache = TimeCache()
        self.latents_seen = 0

    def reset(self) -> None:
        self.cache = TimeCache()
        self.latents_seen = 0

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """[B, n, z, h, w] normalised -> [B, t, 3, 8h, 8w] in [-1, 1] (t = 4n, or 4n - 3 for the first chunk)."""
        if latents.dim() != 5 or latents.shape[2] != self.vae.config.z_dim:
            raise InvalidInputError(
                f"Latents must be [B, frames, {self.vae.config.z_dim}, h, w] (frames before channels), "
                f"got {list(latents.shape)}."
            )
        mean, inv_std = self.vae._stats()
        z = latents.to(self.vae.device, self.vae.dtype).permute(0, 2, 1, 3, 4) / inv_std + mean
        x = self.vae.conv2(z)
        outs = []
        for i in range(x.shape[2]):
            self.cache.start_pass()
            outs.append(self.vae.decoder(x[:, :, i : i + 1], self.cache))
        self.latents_seen += x.shape[2]
        return torch.cat(outs, dim=2).clamp(-1, 1).permute(0, 2, 1, 3, 4)


def decode_tiled(vae: WanVAE, latents: torch.Tensor, tile: int, overlap: int) -> torch.Tensor:
    """Spatially tiled decode with linear blending over ``overlap`` latent pixels."""
    if overlap >= tile:
        raise InvalidInputError(f"Tile overlap {overlap} must be smaller than the tile size {tile}.")
    b, t, _, h, w = latents.shape
    out = weight = None
    step = tile - overlap
    ys = sorted({min(y, max(h - tile, 0)) for y in range(0, max(h - overlap, 1), step)})
    xs = sorted({min(x, max(w - tile, 0)) for x in range(0, max(w - overlap, 1), step)})
    for y in ys:
        for x in xs:
            part = vae.stream_decoder().decode(latents[..., y : y + tile, x : x + tile]).float()
            mask = _blend_mask(part.shape[-2:], overlap * WAN21.spatial_stride, y > 0, x > 0,
                               y + tile < h, x + tile < w).to(part.device)
            if out is None:
                out = part.new_zeros(b, part.shape[1], 3, h * WAN21.spatial_stride, w * WAN21.spatial_stride)
                weight = part.new_zeros(h * WAN21.spatial_stride, w * WAN21.spatial_stride)
            ys_, xs_ = slice(y * WAN21.spatial_stride, y * WAN21.spatial_stride + part.shape[-2]), slice(
                x * WAN21.spatial_stride, x * WAN21.spatial_stride + part.shape[-1])
            out[..., ys_, xs_] += part * mask
            weight[ys_, xs_] += mask
    return (out / weight).to(vae.dtype)


def _blend_mask(size: torch.Size, ramp: int, top: bool, left: bool, bottom: bool, right: bool) -> torch.Tensor:
    hh, ww = size
    wy, wx = torch.ones(hh), torch.ones(ww)
    r = torch.linspace(0, 1, ramp + 2)[1:-1] if ramp else torch.ones(0)
    if ramp:
        if top:
            wy[:ramp] = r
        if bottom:
            wy[-ramp:] = r.flip(0)
        if left:
            wx[:ramp] = r
        if right:
            wx[-ramp:] = r.flip(0)
    return wy.view(-1, 1) * wx.view(1, -1)


def check_pixel_size(height: int, width: int) -> None:
    """Raise :class:`InvalidInputError` unless the VAE can code ``height`` x ``width`` pixels (multiples of 8)."""
    WAN21.check_size(height, width, WAN21.spatial_stride, what="The VAE's height and width")


# --------------------------------------------------------------------------------------------------- loading
def read_vae_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The reference-named tensors of a VAE file (``first_stage_model.`` / ``vae.`` prefixes removed); only safetensors
    and weights-only torch files are read (see :mod:`.weights`)."""
    return read_state_dict(path, prefix=_FILE_PREFIXES, what="VAE file")


def load_vae(path: str | Path, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> WanVAE:
    """Load a Wan 2.1 VAE (reference .pth, ComfyUI safetensors, fixture files) with a strict key check."""
    vae = vae_from_state_dict(read_vae_weights(path), Path(path).name, device=device, dtype=dtype)
    logger.info("Loaded Wan 2.1 VAE (dim %d) from %s", vae.config.dim, Path(path).name)
    return vae


def vae_from_state_dict(
    sd: Mapping[str, torch.Tensor], name: str = "state dict", *, device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> WanVAE:
    """Build a Wan 2.1 VAE on the tensors of ``sd`` (reference key names, e.g. ComfyUI's native Wan VAE
    ``first_stage_model.state_dict()``); keys are checked strictly, ``name`` is used in error messages.

    Tensors already on ``device`` in ``dtype`` are shared, not copied.
    """
    if "encoder.conv1.weight" not in sd or "conv2.weight" not in sd:
        found = ", ".join(sorted(sd)[:5]) or "no tensors"
        hint = " It looks like a DiT." if "patch_embedding.weight" in sd else ""
        raise CheckpointError(
            f"{name} is not a Wan 2.1 VAE: expected keys encoder.conv1.weight, conv1/conv2, decoder.*; "
            f"found {found}.{hint}"
        )
    config = VAEConfig.from_state_dict(sd)
    if config.z_dim != 16:
        raise CheckpointError(
            f"{name} has {config.z_dim} latent channels; Causal Forcing students use the Wan 2.1 VAE "
            "(16 channels). A 48-channel file is the Wan 2.2 VAE."
        )
    with torch.device("meta"):
        vae = WanVAE(config)
    problems = key_problems(sd, {k: tuple(v.shape) for k, v in vae.state_dict().items()})
    if problems:
        raise CheckpointError(
            f"VAE keys of {name} do not match the Wan 2.1 VAE (dim {config.dim}): {'; '.join(problems)}."
        )
    check_tensor_values(sd, what=f"VAE {name}")
    vae.load_state_dict(dict(sd), strict=True, assign=True)
    vae.latent_mean = torch.tensor(WAN21_LATENT_MEAN)
    vae.latent_std = torch.tensor(WAN21_LATENT_STD)
    vae = vae.to(device=device, dtype=dtype).eval().requires_grad_(False)
    vae.latent_mean, vae.latent_std = vae.latent_mean.float(), vae.latent_std.float()
    return vae
