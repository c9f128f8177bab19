"""Building blocks of the Wan 2.1 video VAE (reference §4.2), with an explicit causal time cache.

Every causal 3D convolution pads time on the left only. When video runs through in chunks, a :class:`TimeCache`
carries, for every cached convolution in call order, the last ``CACHE_FRAMES`` frames of its input, which stand in
for the zero padding on the next chunk: chunked processing then equals processing the whole clip.
Parameter names match the reference ``Wan2.1_VAE.pth``. Tensors are [B, C, T, H, W].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CACHE_FRAMES = 2


class TimeCache:
    """Per-convolution memory of a chunked pass; ``start_pass`` before each chunk rewinds the cursor."""

    def __init__(self) -> None:
        self.slots: list[object] = []
        self.cursor = 0

    def start_pass(self) -> None:
        self.cursor = 0

    def take(self) -> object:
        """The memory of the next convolution (None the first time), advancing the cursor."""
        if self.cursor == len(self.slots):
            self.slots.append(None)
        value = self.slots[self.cursor]
        self.cursor += 1
        return value

    def put(self, value: object) -> None:
        self.slots[self.cursor - 1] = value


class CausalConv3d(nn.Conv3d):
    """Conv3d padding time on the left (2 x the symmetric padding) and space symmetrically."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        pt, ph, pw = self.padding  # type: ignore[misc]
        self._pad = (pw, pw, ph, ph, 2 * pt, 0)
        self.padding = (0, 0, 0)

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        pad = list(self._pad)
        if memory is not None and pad[4] > 0:
            x = torch.cat([memory.to(x.device, x.dtype), x], dim=2)
            pad[4] -= memory.shape[2]
        return super().forward(F.pad(x, pad))


def cached_conv(conv: CausalConv3d, x: torch.Tensor, cache: TimeCache | None) -> torch.Tensor:
    """Run ``conv`` with its memory from ``cache`` and store the last frames of ``x`` for the next chunk."""
    if cache is None:
        return conv(x)
    memory = cache.take()
    keep = x[:, :, -CACHE_FRAMES:].clone()
    if keep.shape[2] < CACHE_FRAMES and memory is not None:
        keep = torch.cat([memory[:, :, -1:].to(keep.device), keep], dim=2)
    out = conv(x, memory)
    cache.put(keep)
    return out


class RMSNorm(nn.Module):
    """L2-normalise over channels, times sqrt(C) and a learned gamma ([C,1,1,1] for video, [C,1,1] for images)."""

    def __init__(self, dim: int, images: bool = False) -> None:
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim, *((1, 1) if images else (1, 1, 1))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) * self.scale * self.gamma


class Upsample(nn.Upsample):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type_as(x)


def _per_frame(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a 2D module to every frame of [B, C, T, H, W]."""
    b, _, t = x.shape[:3]
    y = module(x.transpose(1, 2).flatten(0, 1))
    return y.unflatten(0, (b, t)).transpose(1, 2)


class Resample(nn.Module):
    """Spatial x2 up/down sampling, optionally with a causal temporal x2 (``*3d`` modes)."""

    def __init__(self, dim: int, mode: str) -> None:
        super().__init__()
        self.mode = mode
        if mode.startswith("upsample"):
            self.resample = nn.Sequential(Upsample(scale_factor=(2.0, 2.0), mode="nearest-exact"),
                                          nn.Conv2d(dim, dim // 2, 3, padding=1))
        else:
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=(2, 2)))
        if mode == "upsample3d":
            self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        elif mode == "downsample3d":
            self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1), padding=(0, 0, 0))

    def forward(self, x: torch.Tensor, cache: TimeCache | None = None) -> torch.Tensor:
        if self.mode == "upsample3d" and cache is not None:
            x = self._time_upsample(x, cache)
        x = _per_frame(self.resample, x)
        if self.mode == "downsample3d" and cache is not None:
            memory = cache.take()
            if memory is None:  # the first frame of a clip is not downsampled in time
                cache.put(x.clone())
            else:
                keep = x[:, :, -1:].clone()
                x = self.time_conv(torch.cat([memory[:, :, -1:], x], dim=2))
                cache.put(keep)
        return x

    def _time_upsample(self, x: torch.Tensor, cache: TimeCache) -> torch.Tensor:
        memory = cache.take()
        if memory is None:  # first latent frame: one output frame, time conv skipped; zeros from then on
            cache.put("first")
            return x
        keep = x[:, :, -CACHE_FRAMES:].clone()
        if keep.shape[2] < CACHE_FRAMES:
            prev = torch.zeros_like(keep) if isinstance(memory, str) else memory[:, :, -1:].to(keep.device)
            keep = torch.cat([prev, keep], dim=2)
        y = self.time_conv(x, None if isinstance(memory, str) else memory)
        cache.put(keep)
        b, c, t, h, w = x.shape
        y = y.reshape(b, 2, c, t, h, w)
        return torch.stack((y[:, 0], y[:, 1]), dim=3).reshape(b, c, t * 2, h, w)


class ResidualBlock(nn.Module):
    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            RMSNorm(in_dim), nn.SiLU(), CausalConv3d(in_dim, out_dim, 3, padding=1),
            RMSNorm(out_dim), nn.SiLU(), nn.Dropout(0.0), CausalConv3d(out_dim, out_dim, 3, padding=1),
        )
        self.shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: torch.Tensor, cache: TimeCache | None = None) -> torch.Tensor:
        h = self.shortcut(x)
        for layer in self.residual:
            x = cached_conv(layer, x, cache) if isinstance(layer, CausalConv3d) else layer(x)
        return x + h


class AttentionBlock(nn.Module):
    """Single-head spatial self-attention, per frame."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = RMSNorm(dim, images=True)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, cache: TimeCache | None = None) -> torch.Tensor:
        b, c, t, h, w = x.shape
        frames = self.norm(x.transpose(1, 2).flatten(0, 1))  # [B*T, C, H, W]
        qkv = self.to_qkv(frames).reshape(b * t, 1, c * 3, h * w).permute(0, 1, 3, 2).contiguous()
        q, k, v = qkv.chunk(3, dim=-1)
        out = F.scaled_dot_product_attention(q, k, v).squeeze(1).permute(0, 2, 1).reshape(b * t, c, h, w)
        return x + self.proj(out).unflatten(0, (b, t)).transpose(1, 2)


def run_cached(blocks: nn.Sequential, x: torch.Tensor, cache: TimeCache | None) -> torch.Tensor:
    """Run a sequence of blocks, giving the cache to those that use one and convolutions their memory."""
    for layer in blocks:
        if isinstance(layer, CausalConv3d):
            x = cached_conv(layer, x, cache)
        elif isinstance(layer, (ResidualBlock, Resample, AttentionBlock)):
            x = layer(x, cache)
        else:
            x = layer(x)
    return x


class Encoder3d(nn.Module):
    def __init__(self, dim: int, z_dim: int, dim_mult: tuple[int, ...], num_res_blocks: int,
                 attn_scales: tuple[float, ...], temporal_downsample: tuple[bool, ...]) -> None:
        super().__init__()
        dims = [dim * u for u in (1, *dim_mult)]
        scale = 1.0
        self.conv1 = CausalConv3d(3, dims[0], 3, padding=1)
        blocks: list[nn.Module] = []
        out_dim = dims[0]
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            for _ in range(num_res_blocks):
                blocks.append(ResidualBlock(in_dim, out_dim))
                if scale in attn_scales:
                    blocks.append(AttentionBlock(out_dim))
                in_dim = out_dim
            if i != len(dim_mult) - 1:
                blocks.append(Resample(out_dim, "downsample3d" if temporal_downsample[i] else "downsample2d"))
                scale /= 2.0
        self.downsamples = nn.Sequential(*blocks)
        self.middle = nn.Sequential(ResidualBlock(out_dim, out_dim), AttentionBlock(out_dim), ResidualBlock(out_dim, out_dim))
        self.head = nn.Sequential(RMSNorm(out_dim), nn.SiLU(), CausalConv3d(out_dim, z_dim, 3, padding=1))

    def forward(self, x: torch.Tensor, cache: TimeCache | None = None) -> torch.Tensor:
        x = cached_conv(self.conv1, x, cache)
        for part in (self.downsamples, self.middle, self.head):
            x = run_cached(part, x, cache)
        return x


class Decoder3d(nn.Module):
    def __init__(self, dim: int, z_dim: int, dim_mult: tuple[int, ...], num_res_blocks: int,
                 attn_scales: tuple[float, ...], temporal_upsample: tuple[bool, ...]) -> None:
        super().__init__()
        dims = [dim * u for u in (dim_mult[-1], *dim_mult[::-1])]
        scale = 1.0 / 2 ** (len(dim_mult) - 2)
        self.conv1 = CausalConv3d(z_dim, dims[0], 3, padding=1)
        self.middle = nn.Sequential(ResidualBlock(dims[0], dims[0]), AttentionBlock(dims[0]), ResidualBlock(dims[0], dims[0]))
        blocks: list[nn.Module] = []
        out_dim = dims[0]
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            if i in (1, 2, 3):  # the previous upsample halved the channels
                in_dim = in_dim // 2
            for _ in range(num_res_blocks + 1):
                blocks.append(ResidualBlock(in_dim, out_dim))
                if scale in attn_scales:
                    blocks.append(AttentionBlock(out_dim))
                in_dim = out_dim
            if i != len(dim_mult) - 1:
                blocks.append(Resample(out_dim, "upsample3d" if temporal_upsample[i] else "upsample2d"))
                scale *= 2.0
        self.upsamples = nn.Sequential(*blocks)
        self.head = nn.Sequential(RMSNorm(out_dim), nn.SiLU(), CausalConv3d(out_dim, 3, 3, padding=1))

    def forward(self, x: torch.Tensor, cache: TimeCache | None = None) -> torch.Tensor:
        x = cached_conv(self.conv1, x, cache)
        for part in (self.middle, self.upsamples, self.head):
            x = run_cached(part, x, cache)
        return x
