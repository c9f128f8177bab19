"""Attention backend. SDPA first: it picks flash / memory-efficient kernels on GPU and runs everywhere.

Training attends under block-structured masks (a token sees whole blocks of frames: block-causal for diffusion
forcing, [clean | noisy] for teacher forcing). A dense boolean mask of the real size is 65,520² ≈ 4.3 GB and keeps
SDPA off its fast kernels, so such masks are described by a :class:`BlockLayout` instead: for each block of
queries, the token ranges of keys it sees. :func:`attention` then runs one unmasked SDPA call per query block over
just those keys (the same result, O(L) extra memory, fast kernels on every device); :meth:`BlockLayout.dense`
gives the equivalent boolean mask for checks and small cases.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class QueryBlock:
    """Queries ``[start, end)`` attend to the keys of every range in ``keys`` (token indices, in order)."""

    start: int
    end: int
    keys: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class BlockLayout:
    """A block-structured attention mask over ``length`` query and key tokens, as ranges instead of a matrix."""

    length: int
    blocks: tuple[QueryBlock, ...]

    def dense(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """The same mask as bool [length, length] (True = may attend)."""
        allowed = torch.zeros(self.length, self.length, dtype=torch.bool, device=device)
        for block in self.blocks:
            for start, end in block.keys:
                allowed[block.start : block.end, start:end] = True
        return allowed


def _frame_blocks(frames: int, frames_per_block: int, frame_tokens: int) -> list[tuple[int, int]]:
    """Token ranges of the blocks of ``frames_per_block`` frames (the last may be shorter)."""
    return [
        (s * frame_tokens, min(s + frames_per_block, frames) * frame_tokens) for s in range(0, frames, frames_per_block)
    ]


def block_causal_layout(frames: int, frames_per_block: int, frame_tokens: int) -> BlockLayout:
    """Diffusion forcing over F*T tokens: a token sees every token of its own and earlier blocks."""
    return BlockLayout(
        frames * frame_tokens,
        tuple(QueryBlock(s, e, ((0, e),)) for s, e in _frame_blocks(frames, frames_per_block, frame_tokens)),
    )


def teacher_forcing_layout(frames: int, frames_per_block: int, frame_tokens: int) -> BlockLayout:
    """Teacher forcing over [clean | noisy], 2*F*T tokens: clean tokens are block-causal among themselves; a noisy
    block sees the clean blocks before it and itself."""
    half = frames * frame_tokens
    blocks = _frame_blocks(frames, frames_per_block, frame_tokens)
    clean = [QueryBlock(s, e, ((0, e),)) for s, e in blocks]
    noisy = [QueryBlock(half + s, half + e, ((0, s), (half + s, half + e)) if s else ((half, half + e),))
             for s, e in blocks]
    return BlockLayout(2 * half, tuple(clean + noisy))


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """[B, Lq, H, D] x [B, Lk, H, D] -> [B, Lq, H, D]."""
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2).to(q.dtype), v.transpose(1, 2).to(q.dtype), attn_mask=mask
    )
    return out.transpose(1, 2)


def _gather(x: torch.Tensor, ranges: tuple[tuple[int, int], ...]) -> torch.Tensor:
    parts = [x[:, s:e] for s, e in ranges if e > s]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | BlockLayout | None = None
) -> torch.Tensor:
    """Multi-head attention with scale ``1/sqrt(head_dim)``.

    q: [B, Lq, H, D]; k, v: [B, Lk, H, D]; mask: optional bool [Lq, Lk] (True = may attend), or a
    :class:`BlockLayout` (one SDPA call per query block). Returns [B, Lq, H*D] in q's dtype.
    """
    if not isinstance(mask, BlockLayout):
        return _sdpa(q, k, v, mask).flatten(2)
    out = q.new_empty(q.shape)
    for block in mask.blocks:
        out[:, block.start : block.end] = _sdpa(
            q[:, block.start : block.end], _gather(k, block.keys), _gather(v, block.keys), None
        )
    return out.flatten(2)
