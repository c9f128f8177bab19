"""The causal Wan DiT of the Causal Forcing student (reference §1).

Parameter names equal Wan's, so bidirectional Wan2.1 weights and every released student load unchanged.
Differences from the bidirectional model: timesteps are per latent frame ([B, F]), every frame's tokens use their
own frame's modulation, and self-attention either runs against an :class:`.kv_cache.AttentionCache` (the
inference KV cache, or the training rollouts' prefix cache) or under a block-causal / teacher-forcing mask
(training).

Shapes: x [B, C_in, F, H, W] latents (channels first, as the DiT works); tokens [B, F*T, dim] with
T = (H/ph)*(W/pw) tokens per latent frame in row-major (f, h, w) order.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .attention import BlockLayout, attention, block_causal_layout, teacher_forcing_layout
from .config import DiTConfig
from .kv_cache import AttentionCache, TextKV
from .rope import RopeTable, RotaryTables, apply_rope
from .scheduler import exact_dtype


# --------------------------------------------------------------------------------------------------- layers
class Linear(nn.Linear):
    """nn.Linear whose weights may be stored in another dtype (e.g. float8) and are cast at compute."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight.to(x.dtype), bias)


class Conv3d(nn.Conv3d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return self._conv_forward(x, self.weight.to(x.dtype), bias)


class RMSNorm(nn.Module):
    """RMS norm over the last dim, computed in float32, then scaled by a learned weight."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        normed = xf * torch.rsqrt(xf.square().mean(dim=-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight.to(x.dtype)


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 (affine optional)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).type_as(x)


def sinusoidal_embedding(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """[N] -> [N, dim] float64 embedding, cosines first (Wan convention); computed where ``positions`` are, or on
    the CPU for a device without float64 (MPS), so a GPU forward never waits for a copy to the host."""
    half = dim // 2
    device = positions.device if exact_dtype(positions.device) == torch.float64 else torch.device("cpu")
    pos = positions.detach().to(device, torch.float64)
    exponent = torch.arange(half, dtype=torch.float64, device=device).div(half)
    angles = torch.outer(pos, torch.pow(10000, -exponent))
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, frames: int) -> torch.Tensor:
    """x [B, F*T, D] * (1 + scale) + shift with per-frame [B, F, 1, D] float32 modulation."""
    y = x.float().unflatten(1, (frames, -1)) * (1 + scale)
    y += shift  # in place: the product is a fresh tensor that autograd does not need
    return y.flatten(1, 2).to(x.dtype)


def gated_residual(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor, frames: int) -> torch.Tensor:
    """x + y * gate with per-frame [B, F, 1, D] gates, accumulated in float32."""
    out = y.float().unflatten(1, (frames, -1)) * gate
    out += x.float().unflatten(1, (frames, -1))  # in place on the fresh product; x + p == p + x exactly
    return out.flatten(1, 2).to(x.dtype)


class Modulated(nn.Module):
    """A module with a learned modulation table ``modulation`` [1, n, dim]. The table is read through
    :meth:`modulation_table`, from this module or, for borrowed layers (:mod:`.dit_borrow`), from the module that
    owns the weights; that owner is looked up at every call, so a weight its owner replaces is never stale."""

    #: the module whose ``modulation`` is used instead of this one's (set by :func:`.dit_borrow.borrow_layers`)
    modulation_owner: nn.Module | None = None

    def modulation_table(self, device: torch.device) -> torch.Tensor:
        """The modulation [1, n, dim] as float32 on ``device`` (the owner may keep it elsewhere, e.g. offloaded)."""
        owner = self if self.modulation_owner is None else self.modulation_owner
        return owner.modulation.to(device=device, dtype=torch.float32)


# --------------------------------------------------------------------------------------------------- blocks
class SelfAttention(nn.Module):
    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        self.num_heads, self.head_dim = cfg.num_heads, cfg.head_dim
        self.q, self.k, self.v, self.o = (Linear(cfg.dim, cfg.dim) for _ in range(4))
        self.norm_q = RMSNorm(cfg.dim, cfg.eps) if cfg.qk_norm else nn.Identity()
        self.norm_k = RMSNorm(cfg.dim, cfg.eps) if cfg.qk_norm else nn.Identity()

    def keys_values(self, x: torch.Tensor, freqs: RopeTable) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, L, dim] -> rotated K and V [B, L, H, D]."""
        b, length, _ = x.shape
        k = self.norm_k(self.k(x)).view(b, length, self.num_heads, self.head_dim)
        v = self.v(x).view(b, length, self.num_heads, self.head_dim)
        return apply_rope(k, freqs), v

    def forward(
        self,
        x: torch.Tensor,
        freqs: RopeTable,
        *,
        cache: AttentionCache | None = None,
        layer: int = 0,
        mask: torch.Tensor | BlockLayout | None = None,
    ) -> torch.Tensor:
        """x [B, L, dim] -> [B, L, dim]. With a cache, the new K/V are written to it before attending to it."""
        b, length, _ = x.shape
        q = apply_rope(self.norm_q(self.q(x)).view(b, length, self.num_heads, self.head_dim), freqs)
        k, v = self.keys_values(x, freqs)
        if cache is not None:
            cache.write(layer, k, v)
            k, v = cache.keys_values(layer)
        return self.o(attention(q, k, v, mask))


class CrossAttention(nn.Module):
    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        self.num_heads, self.head_dim = cfg.num_heads, cfg.head_dim
        self.q, self.k, self.v, self.o = (Linear(cfg.dim, cfg.dim) for _ in range(4))
        self.norm_q = RMSNorm(cfg.dim, cfg.eps) if cfg.qk_norm else nn.Identity()
        self.norm_k = RMSNorm(cfg.dim, cfg.eps) if cfg.qk_norm else nn.Identity()

    def text_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected text tokens [B, L, dim] -> (k, v) [B, L, H, D]; computed once per prompt."""
        b, length, _ = context.shape
        k = self.norm_k(self.k(context)).view(b, length, self.num_heads, self.head_dim)
        v = self.v(context).view(b, length, self.num_heads, self.head_dim)
        return k, v

    def forward(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, length, _ = x.shape
        q = self.norm_q(self.q(x)).view(b, length, self.num_heads, self.head_dim)
        return self.o(attention(q, k, v))


class CausalWanBlock(Modulated):
    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        self.norm1 = LayerNorm(cfg.dim, cfg.eps, elementwise_affine=False)
        self.self_attn = SelfAttention(cfg)
        self.norm3 = LayerNorm(cfg.dim, cfg.eps, elementwise_affine=True) if cfg.cross_attn_norm else nn.Identity()
        self.cross_attn = CrossAttention(cfg)
        self.norm2 = LayerNorm(cfg.dim, cfg.eps, elementwise_affine=False)
        self.ffn = nn.Sequential(Linear(cfg.dim, cfg.ffn_dim), nn.GELU(approximate="tanh"), Linear(cfg.ffn_dim, cfg.dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, cfg.dim) / cfg.dim**0.5)

    def _modulation(self, e0: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """e0 [B, F, 6, dim] -> shift/scale/gate of self-attention, then of the FFN: 6 x [B, F, 1, dim] float32."""
        return (self.modulation_table(e0.device).unsqueeze(1) + e0).chunk(6, dim=2)

    def write_keys_values(
        self, x: torch.Tensor, e0: torch.Tensor, freqs: RopeTable, cache: AttentionCache, layer: int
    ) -> None:
        """Only what the cache needs of this block: its self-attention K/V of x [B, F*T, dim], written to
        ``cache`` (the rest of the block would be computed and thrown away)."""
        shift_sa, scale_sa = self._modulation(e0)[:2]
        k, v = self.self_attn.keys_values(modulate(self.norm1(x), shift_sa, scale_sa, e0.shape[1]), freqs)
        cache.write(layer, k, v)

    def forward(
        self,
        x: torch.Tensor,
        e0: torch.Tensor,
        freqs: RopeTable,
        text_k: torch.Tensor,
        text_v: torch.Tensor,
        **attn_kwargs: object,
    ) -> torch.Tensor:
        """x [B, F*T, dim]; e0 [B, F, 6, dim] float32 per-frame modulation."""
        frames = e0.shape[1]
        shift_sa, scale_sa, gate_sa, shift_ff, scale_ff, gate_ff = self._modulation(e0)
        y = self.self_attn(modulate(self.norm1(x), shift_sa, scale_sa, frames), freqs, **attn_kwargs)
        x = gated_residual(x, y, gate_sa, frames)
        x = x + self.cross_attn(self.norm3(x), text_k, text_v)
        y = self.ffn(modulate(self.norm2(x), shift_ff, scale_ff, frames))
        return gated_residual(x, y, gate_ff, frames)


class Head(Modulated):
    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        self.norm = LayerNorm(cfg.dim, cfg.eps, elementwise_affine=False)
        self.head = Linear(cfg.dim, cfg.out_dim * math.prod(cfg.patch_size))
        self.modulation = nn.Parameter(torch.randn(1, 2, cfg.dim) / cfg.dim**0.5)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """x [B, F*T, dim], e [B, F, dim] (time embedding, float32) -> [B, F*T, out_dim*prod(patch)]."""
        frames = e.shape[1]
        shift, scale = (self.modulation_table(e.device).unsqueeze(1) + e.unsqueeze(2)).chunk(2, dim=2)
        return self.head(modulate(self.norm(x), shift, scale, frames))


# --------------------------------------------------------------------------------------------------- model
class CausalWanModel(nn.Module):
    """Causal Wan DiT with per-frame timesteps, KV-cache inference and masked training forwards."""

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        cfg = self.config = config
        #: bumped whenever the weights change in place (a LoRA merged or unmerged, :mod:`.lora`): streams check it
        self.weights_version = 0
        self.compute_dtype: torch.dtype = torch.float32
        #: dtype of the RoPE rotation: None = float32 (or float64 when computing in it); torch.float64 reproduces
        #: the reference's complex128 rotation bit for bit
        self.rope_dtype: torch.dtype | None = None
        #: the compute device when the weights may rest elsewhere (borrowed, partially loaded layers); None = where
        #: the patch embedding is
        self.run_device: torch.device | None = None
        #: dtype fed to the patch embedding; None = ``compute_dtype`` (ComfyUI's Wan computes it in float32)
        self.patch_dtype: torch.dtype | None = None
        self.rotary = RotaryTables(cfg.head_dim)
        self.patch_embedding = Conv3d(cfg.in_dim, cfg.dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.text_embedding = nn.Sequential(Linear(cfg.text_dim, cfg.dim), nn.GELU(approximate="tanh"), Linear(cfg.dim, cfg.dim))
        self.time_embedding = nn.Sequential(Linear(cfg.freq_dim, cfg.dim), nn.SiLU(), Linear(cfg.dim, cfg.dim))
        self.time_projection = nn.Sequential(nn.SiLU(), Linear(cfg.dim, cfg.dim * 6))
        self.blocks = nn.ModuleList(CausalWanBlock(cfg) for _ in range(cfg.num_layers))
        self.head = Head(cfg)

    @property
    def device(self) -> torch.device:
        return self.run_device if self.run_device is not None else self.patch_embedding.weight.device

    # ------------------------------------------------------------------------------------------- pieces
    def embed_text(self, context: torch.Tensor) -> TextKV:
        """Prompt embeddings [B, L<=text_len, text_dim] -> cross-attention K/V of every layer.

        Rows beyond L are zero-padded to ``text_len`` and, like the reference, every row (padding included) is
        projected and attended.
        """
        cfg = self.config
        b, length, width = context.shape
        ctx = context.to(self.device, self.compute_dtype)
        if length < cfg.text_len:
            ctx = torch.cat([ctx, ctx.new_zeros(b, cfg.text_len - length, width)], dim=1)
        ctx = self.text_embedding(ctx)
        pairs = [blk.cross_attn.text_kv(ctx) for blk in self.blocks]
        return TextKV(torch.stack([k for k, _ in pairs]), torch.stack([v for _, v in pairs]))

    def _time(self, timestep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """timestep [B, F] -> e [B, F, dim] and e0 [B, F, 6, dim], both float32."""
        b, f = timestep.shape
        sin = sinusoidal_embedding(self.config.freq_dim, timestep.flatten()).to(self.device, self.compute_dtype)
        e = self.time_embedding(sin)
        e0 = self.time_projection(e)
        return e.float().view(b, f, -1), e0.float().view(b, f, 6, -1)

    def _patchify(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """[B, C, F, H, W] -> tokens [B, F*T, dim] and the token grid (F, H/ph, W/pw)."""
        tokens = self.patch_embedding(x.to(self.device, self.patch_dtype or self.compute_dtype)).to(self.compute_dtype)
        grid = tuple(tokens.shape[2:])
        return tokens.flatten(2).transpose(1, 2), grid  # type: ignore[return-value]

    def _unpatchify(self, out: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """[B, F*T, pt*ph*pw*C] -> [B, C, F*pt, H, W]."""
        f, h, w = grid
        pt, ph, pw = self.config.patch_size
        b = out.shape[0]
        out = out.view(b, f, h, w, pt, ph, pw, -1)
        out = torch.einsum("bfhwpqrc->bcfphqwr", out)
        return out.reshape(b, -1, f * pt, h * ph, w * pw)

    def rope(self, start_frame: int, grid: tuple[int, int, int]) -> RopeTable:
        """The rotations of a token grid ``(frames, height, width)`` whose first frame is ``start_frame``, in the
        model's RoPE precision, from the model's table cache."""
        dtype = self.rope_dtype or torch.promote_types(self.compute_dtype, torch.float32)
        return self.rotary.get(start_frame, grid, self.device, dtype)

    def _text(self, text: TextKV | torch.Tensor) -> TextKV:
        return text if isinstance(text, TextKV) else self.embed_text(text)

    # ------------------------------------------------------------------------------------------- forwards
    def forward(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor,
        text: TextKV | torch.Tensor,
        *,
        cache: AttentionCache | None = None,
        start_frame: int = 0,
        mask: torch.Tensor | BlockLayout | None = None,
    ) -> torch.Tensor:
        """Flow prediction [B, C_out, F, H, W] for latents x [B, C_in, F, H, W] at per-frame timestep [B, F].

        With a ``cache`` (its block opened, see :class:`.kv_cache.BlockCache`) the new K/V are written to it and
        queries attend to every cached frame plus this block (bidirectional inside the block). Without a cache,
        attention is full unless ``mask`` restricts it: a :class:`.attention.BlockLayout` (training's block masks,
        e.g. :func:`.attention.block_causal_layout`) or a bool [L, L] (True = may attend). ``start_frame`` is the
        absolute latent-frame index of x's first frame (RoPE position).
        """
        tokens, grid = self._patchify(x)
        e, e0 = self._time(timestep)
        freqs = self.rope(start_frame, grid)
        text = self._text(text)
        for i, block in enumerate(self.blocks):
            tokens = block(tokens, e0, freqs, text.k[i], text.v[i], cache=cache, layer=i, mask=mask)
        return self._unpatchify(self.head(tokens, e), grid)

    def write_cache(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor,
        text: TextKV | torch.Tensor,
        cache: AttentionCache,
        *,
        start_frame: int = 0,
    ) -> None:
        """Write the self-attention K/V of latents x [B, C_in, F, H, W] at timestep [B, F] into ``cache`` (the
        cache-refresh pass): the same K/V as :meth:`forward` writes, without the last block's attention,
        cross-attention, FFN and the head, whose output nobody reads."""
        tokens, grid = self._patchify(x)
        _, e0 = self._time(timestep)
        freqs = self.rope(start_frame, grid)
        text = self._text(text)
        *body, last = self.blocks
        for i, block in enumerate(body):
            tokens = block(tokens, e0, freqs, text.k[i], text.v[i], cache=cache, layer=i)
        last.write_keys_values(tokens, e0, freqs, cache, len(body))

    def forward_teacher_forcing(
        self,
        noisy_x: torch.Tensor,
        timestep: torch.Tensor,
        clean_x: torch.Tensor,
        text: TextKV | torch.Tensor,
        frames_per_block: int,
        clean_timestep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Teacher-forcing forward over [clean | noisy] (reference §1.6); returns the flow of the noisy half.

        noisy_x, clean_x [B, C, F, H, W]; timestep [B, F] for the noisy frames; clean frames use
        ``clean_timestep`` (zeros by default). Both halves get the same RoPE positions 0..F-1.
        """
        clean_tokens, grid = self._patchify(clean_x)
        noisy_tokens, _ = self._patchify(noisy_x)
        frames = grid[0]
        if clean_timestep is None:
            clean_timestep = torch.zeros_like(timestep)
        e, e0 = self._time(timestep)
        _, e0_clean = self._time(clean_timestep)
        half = self.rope(0, grid)
        freqs = half.cat(half)
        tokens = torch.cat([clean_tokens, noisy_tokens], dim=1)
        e0_all = torch.cat([e0_clean, e0], dim=1)
        mask = teacher_forcing_layout(frames, frames_per_block, grid[1] * grid[2])
        text = self._text(text)
        for i, block in enumerate(self.blocks):
            tokens = block(tokens, e0_all, freqs, text.k[i], text.v[i], mask=mask)
        return self._unpatchify(self.head(tokens[:, clean_tokens.shape[1] :], e), grid)


# --------------------------------------------------------------------------------------------------- masks
def block_causal_mask(
    frames: int, frames_per_block: int, frame_tokens: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Bool [F*T, F*T]: a token sees every token of its own and earlier blocks (diffusion forcing); dense, for
    checks and small cases (pass :func:`.attention.block_causal_layout` to the model instead)."""
    return block_causal_layout(frames, frames_per_block, frame_tokens).dense(device)


def teacher_forcing_mask(
    frames: int, frames_per_block: int, frame_tokens: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Bool [2F*T, 2F*T] over [clean | noisy]: clean block-causal; noisy block b sees clean blocks < b and itself
    (dense form of :func:`.attention.teacher_forcing_layout`)."""
    return teacher_forcing_layout(frames, frames_per_block, frame_tokens).dense(device)
