"""Self-attention KV cache and cross-attention text cache of the causal DiT.

The self-attention cache is one preallocated buffer per K and V for all layers,
``[num_layers, B, capacity_frames * frame_tokens, heads, head_dim]``. Bookkeeping is in whole latent frames:

- ``global_end``: absolute frame index (in the whole video) where the last write ended; RoPE positions are
  absolute, so keys written after an eviction keep growing positions.
- ``local_end``: frames of valid data in the buffer (``<= capacity``); differs from ``global_end`` once frames
  have been evicted.

Global attention (``window_frames=None``) never evicts; the buffer grows when a write needs more room. A local
window of ``W`` frames with ``S`` sink frames keeps the first ``S`` frames ever written pinned and, on the first
write of a new block that does not fit, shifts the oldest non-sink frames out (reference §1.7). Repeated writes of
the same block (later denoising steps, the clean cache-refresh pass) overwrite the same slots.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from .errors import CacheBudgetError, InvalidInputError, StreamStateError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WritePlan:
    """Where one forward writes its new K/V and which slots its queries attend to (all in frames)."""

    slot_start: int
    slot_end: int
    attend_end: int


@dataclass
class TextKV:
    """Cross-attention K/V of one prompt for every layer: k (RMS-normed) and v [num_layers, B, text_len, H, D]."""

    k: torch.Tensor
    v: torch.Tensor

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes


def validate_window(window_frames: int | None, sink_frames: int, frames_per_block: int) -> None:
    """Reject windows that cannot hold the sink plus one block."""
    if window_frames is None:
        if sink_frames:
            raise InvalidInputError(
                f"sink_frames={sink_frames} only makes sense with a local window; set window_frames or sink 0."
            )
        return
    if window_frames < frames_per_block:
        raise InvalidInputError(
            f"window_frames={window_frames} is smaller than one chunk ({frames_per_block} latent frames); "
            f"use at least {frames_per_block}, or 0 for attention over the whole video."
        )
    if sink_frames < 0 or sink_frames >= window_frames:
        raise InvalidInputError(
            f"sink_frames={sink_frames} must be >= 0 and smaller than window_frames={window_frames}."
        )
    if window_frames - sink_frames < frames_per_block:
        raise InvalidInputError(
            f"window_frames={window_frames} minus sink_frames={sink_frames} leaves less than one chunk "
            f"({frames_per_block} frames) for recent frames; use window_frames >= {sink_frames + frames_per_block}."
        )


class KVCache:
    """Preallocated K/V buffers of every self-attention layer, with frame-level bookkeeping."""

    def __init__(
        self,
        *,
        num_layers: int,
        batch: int,
        num_heads: int,
        head_dim: int,
        frame_tokens: int,
        capacity_frames: int,
        window_frames: int | None = None,
        sink_frames: int = 0,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        memory_budget_bytes: int | None = None,
    ) -> None:
        if window_frames is not None:
            capacity_frames = window_frames
        if capacity_frames < 1:
            raise InvalidInputError(f"KV cache capacity must be at least one frame, got {capacity_frames}.")
        self.num_layers, self.batch, self.num_heads, self.head_dim = num_layers, batch, num_heads, head_dim
        self.frame_tokens = frame_tokens
        self.window_frames = window_frames
        self.sink_frames = sink_frames
        self.memory_budget_bytes = memory_budget_bytes
        self._check_budget(capacity_frames, dtype)
        shape = (num_layers, batch, capacity_frames * frame_tokens, num_heads, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.global_end = 0
        self.local_end = 0
        #: incremented whenever data the pointers cannot restore is overwritten (eviction, re-cache)
        self.destructive_writes = 0

    # ----------------------------------------------------------------------------------------------- sizes
    @staticmethod
    def estimate_bytes(
        *, num_layers: int, batch: int, num_heads: int, head_dim: int, frame_tokens: int, capacity_frames: int,
        dtype: torch.dtype,
    ) -> int:
        """Bytes the K and V buffers of this shape take, before allocating them."""
        elem = torch.empty((), dtype=dtype).element_size()
        return 2 * num_layers * batch * capacity_frames * frame_tokens * num_heads * head_dim * elem

    def _bytes_for(self, capacity_frames: int, dtype: torch.dtype) -> int:
        return self.estimate_bytes(
            num_layers=self.num_layers, batch=self.batch, num_heads=self.num_heads, head_dim=self.head_dim,
            frame_tokens=self.frame_tokens, capacity_frames=capacity_frames, dtype=dtype,
        )

    def _check_budget(self, capacity_frames: int, dtype: torch.dtype) -> None:
        need = self._bytes_for(capacity_frames, dtype)
        if self.memory_budget_bytes is not None and need > self.memory_budget_bytes:
            raise CacheBudgetError(
                f"The KV cache for {capacity_frames} latent frames needs {need / 2**30:.3f} GiB "
                f"({need} bytes) but the memory budget is {self.memory_budget_bytes / 2**30:.3f} GiB. "
                "Use a local window (window_frames + sink_frames), fewer frames, a smaller size or batch, "
                "or raise the budget."
            )

    @property
    def capacity_frames(self) -> int:
        return self.k.shape[2] // self.frame_tokens

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes

    @property
    def dtype(self) -> torch.dtype:
        return self.k.dtype

    @property
    def device(self) -> torch.device:
        return self.k.device

    # ----------------------------------------------------------------------------------------------- writes
    def plan_block(self, start_frame: int, num_frames: int) -> WritePlan:
        """Reserve slots for a block of ``num_frames`` frames starting at absolute ``start_frame``.

        ``start_frame`` must be ``global_end`` (a new block) or the start of the last written block of the same
        size (a rewrite: next denoising step or the cache-refresh pass). Rolls or grows the buffer when needed.
        """
        end = start_frame + num_frames
        new_block = end > self.global_end
        if new_block and start_frame != self.global_end:
            raise StreamStateError(
                f"KV cache holds frames up to {self.global_end}; cannot write a block starting at frame "
                f"{start_frame}. Rewind the cache first."
            )
        if not new_block and end != self.global_end:
            raise StreamStateError(
                f"Only the last written block can be rewritten (cache ends at frame {self.global_end}, "
                f"block [{start_frame}, {end}) does not)."
            )
        added = end - self.global_end
        if new_block and self.local_end + added > self.capacity_frames:
            if self.window_frames is None:
                self._grow(self.local_end + added)
            else:
                self._roll(self.local_end + added - self.capacity_frames)
        self.local_end += added
        self.global_end = end
        return WritePlan(self.local_end - num_frames, self.local_end, self.local_end)

    def plan_recache(self) -> tuple[WritePlan, int]:
        """Plan a re-encode of every cached frame that is not a sink frame (LongLive re-cache).

        Returns the plan (slots ``[sink, local_end)``, attending to ``[0, local_end)``) and the absolute frame
        index of the first re-encoded frame. Pointers do not move.
        """
        sink = min(self.sink_frames, self.local_end)
        first_frame = self.global_end - (self.local_end - sink)
        self.destructive_writes += 1
        return WritePlan(sink, self.local_end, self.local_end), first_frame

    def _roll(self, evicted: int) -> None:
        sink = self.sink_frames
        rolled = self.local_end - evicted - sink
        t = self.frame_tokens
        if rolled > 0:
            for buf in (self.k, self.v):
                buf[:, :, sink * t : (sink + rolled) * t] = buf[
                    :, :, (sink + evicted) * t : (sink + evicted + rolled) * t
                ].clone()
        self.local_end -= evicted
        self.destructive_writes += 1

    def _grow(self, needed_frames: int) -> None:
        new_cap = max(needed_frames, math.ceil(self.capacity_frames * 1.5))
        try:
            self._check_budget(new_cap, self.dtype)
        except CacheBudgetError:
            new_cap = needed_frames
            self._check_budget(new_cap, self.dtype)
        logger.info("Growing KV cache from %d to %d latent frames", self.capacity_frames, new_cap)
        shape = list(self.k.shape)
        shape[2] = new_cap * self.frame_tokens
        used = self.local_end * self.frame_tokens
        for name in ("k", "v"):
            old = getattr(self, name)
            new = torch.zeros(shape, dtype=old.dtype, device=old.device)
            new[:, :, :used] = old[:, :, :used]
            setattr(self, name, new)

    def write(self, layer: int, plan: WritePlan, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store one layer's new K (already rotated) and V [B, n_tokens, H, D] into the planned slots."""
        t = self.frame_tokens
        self.k[layer, :, plan.slot_start * t : plan.slot_end * t] = k
        self.v[layer, :, plan.slot_start * t : plan.slot_end * t] = v

    def keys_values(self, layer: int, plan: WritePlan) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V [B, attend_tokens, H, D] the planned block's queries attend to."""
        end = plan.attend_end * self.frame_tokens
        return self.k[layer, :, :end], self.v[layer, :, :end]

    # ----------------------------------------------------------------------------------------------- state
    def rewind(self, num_frames: int) -> None:
        """Forget frames >= ``num_frames`` (only valid while no destructive write happened after them)."""
        if not 0 <= num_frames <= self.global_end:
            raise StreamStateError(f"Cannot rewind a cache holding {self.global_end} frames to {num_frames}.")
        drop = self.global_end - num_frames
        if drop > self.local_end:
            raise StreamStateError(f"Frames before {num_frames} were evicted; the stream must be replayed.")
        self.local_end -= drop
        self.global_end = num_frames

    def reset(self) -> None:
        """Empty the cache (buffers are reused, not zeroed)."""
        self.global_end = self.local_end = 0
        self.destructive_writes += 1

    def clone(self) -> "KVCache":
        other = object.__new__(KVCache)
        other.__dict__.update(self.__dict__)
        other.k = self.k.clone()
        other.v = self.v.clone()
        return other

    def valid(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The valid prefix [B, local_end * frame_tokens, H, D] of one layer's K and V."""
        end = self.local_end * self.frame_tokens
        return self.k[layer, :, :end], self.v[layer, :, :end]

    def describe(self) -> dict[str, object]:
        return {
            "global_end": self.global_end,
            "local_end": self.local_end,
            "capacity_frames": self.capacity_frames,
            "window_frames": self.window_frames,
            "sink_frames": self.sink_frames,
            "nbytes": self.nbytes,
        }
