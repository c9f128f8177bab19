"""Self-attention KV cache and cross-attention text cache of the causal DiT.

The self-attention cache is one preallocated buffer per K and V for all layers,
``[num_layers, B, capacity_frames * frame_tokens, heads, head_dim]``. Bookkeeping is in whole latent frames:

- ``global_end``: absolute frame index (in the whole video) where the last write ended; RoPE positions are
  absolute, so keys written after an eviction keep growing positions.
- ``local_end``: frames of valid data in the buffer (``<= capacity``); differs from ``global_end`` once frames
  have been evicted.

Global attention (``window_frames=None``) never evicts; the buffer grows when a block needs more room. A local
window of ``W`` frames with ``S`` sink frames keeps the first ``S`` frames ever written pinned and, when a new block
does not fit, shifts the oldest non-sink frames out (reference §1.7).

A block's life: :meth:`KVCache.open_block` reserves its slots (rolling or growing the buffer when needed), every
forward pass of the block (the denoising steps, then the clean cache-refresh pass) overwrites those slots through
:meth:`KVCache.write` and attends through :meth:`KVCache.keys_values`, and :meth:`KVCache.commit_block` makes it
part of the cache. The pointers move only at the commit, so a forward that raises leaves them where they were;
a roll or a re-cache overwrites data the pointers cannot bring back and counts in ``destructive_writes``, which
:meth:`KVCache.restore` reports.

:class:`AttentionCache` is what the DiT's self-attention needs from any cache, and :class:`BlockCache` what the
few-step sampler (:mod:`.sampling`) needs; the inference cache here and the training prefix cache
(:class:`.training.rollout.DetachedPrefixCache`) both implement them.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch

from .errors import CacheBudgetError, InvalidInputError, StreamStateError

if TYPE_CHECKING:
    from .prompt import Prompt

logger = logging.getLogger(__name__)


@runtime_checkable
class AttentionCache(Protocol):
    """Keys and values of earlier frames for the DiT's self-attention, per layer, around the open block."""

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store the open block's K (already rotated) and V [B, block_tokens, H, D] of ``layer``."""
        ...

    def keys_values(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V [B, attend_tokens, H, D] the open block's queries attend to (earlier frames + the block)."""
        ...


@runtime_checkable
class BlockCache(AttentionCache, Protocol):
    """An :class:`AttentionCache` that the sampler fills block by block."""

    def open_block(self, start_frame: int, num_frames: int) -> None:
        """Begin the block of ``num_frames`` frames at absolute ``start_frame`` (the frame after the cache's end)."""
        ...

    def commit_block(self) -> None:
        """End the open block: its last written K/V become part of the cache."""
        ...


class Recache(str, Enum):
    """Which cached frames a prompt switch re-encodes under the new prompt (LongLive re-cache, reference §6); the
    value is what options and schedules write."""

    #: only the text K/V change; the cached frames keep the K/V of the prompt they were made with
    OFF = "off"
    #: re-encode the recent (non-sink) frames; the sink keeps the video's first frames
    RECENT = "recent"
    #: re-encode the last window of frames; its oldest frames become the sink
    WINDOW = "window"

    def __str__(self) -> str:
        return self.value

    def __bool__(self) -> bool:  # ``recache and ...`` reads as "a re-cache was asked for"
        return self is not Recache.OFF

    @classmethod
    def of(cls, value: "bool | str | Recache | None") -> "Recache":
        """``True`` (and None, for a re-cache that was asked for) is :attr:`RECENT`, ``False`` :attr:`OFF`; a
        name is looked up, with an :class:`InvalidInputError` listing the choices when it is unknown."""
        if value is None or value is True:
            return cls.RECENT
        if value is False:
            return cls.OFF
        try:
            return cls(value)
        except ValueError:
            raise InvalidInputError(
                f"Unknown re-cache mode {value!r}; use one of {', '.join(m.value for m in cls)}."
            ) from None


@dataclass(frozen=True)
class WritePlan:
    """Where the open block writes its K/V and which slots its queries attend to (all in frames)."""

    slot_start: int
    slot_end: int
    attend_end: int
    #: absolute frame index right after the block (``global_end`` once committed)
    global_end: int


@dataclass(frozen=True)
class CacheMark:
    """The cache's bookkeeping at one moment (:meth:`KVCache.mark`), to go back to with :meth:`KVCache.restore`."""

    global_end: int
    local_end: int
    destructive_writes: int


@dataclass
class TextKV:
    """Cross-attention K/V of one prompt for every layer: k (RMS-normed) and v [num_layers, B, text_len, H, D]."""

    k: torch.Tensor
    v: torch.Tensor

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes


class TextKVCache:
    """The cross-attention K/V of the last few prompts used, computed once per prompt (least recently used out).

    ``embed`` turns prompt embeddings [batch, L, text_dim] into a :class:`TextKV` (the DiT's ``embed_text``).
    """

    def __init__(self, embed: Callable[[torch.Tensor], TextKV], batch: int, size: int = 8) -> None:
        self.embed, self.batch, self.size = embed, batch, size
        self._entries: OrderedDict[Prompt, TextKV] = OrderedDict()

    def get(self, prompt: Prompt) -> TextKV:
        """The K/V of ``prompt`` (its embeddings broadcast to the batch), from the cache when present."""
        if prompt in self._entries:
            self._entries.move_to_end(prompt)
            return self._entries[prompt]
        embeds = prompt.embeds
        if embeds.shape[0] != self.batch:
            embeds = embeds.expand(self.batch, -1, -1)
        kv = self._entries[prompt] = self.embed(embeds)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return kv

    def copy(self) -> "TextKVCache":
        """A cache of its own holding the same entries (the K/V tensors are shared; they are never written)."""
        other = TextKVCache(self.embed, self.batch, self.size)
        other._entries = OrderedDict(self._entries)
        return other


def shift_out(k: torch.Tensor, v: torch.Tensor, keep: int, evicted: int, count: int, frame_tokens: int) -> None:
    """Evict ``evicted`` frames after the first ``keep`` (the sink or anchor) of K/V buffers
    [layers, B, frames * frame_tokens, H, D], moving the ``count`` frames after them down to close the gap."""
    if count <= 0:
        return
    t = frame_tokens
    for buf in (k, v):
        buf[:, :, keep * t : (keep + count) * t] = buf[:, :, (keep + evicted) * t : (keep + evicted + count) * t].clone()


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


class FrameBuffers:
    """What every self-attention cache of a stream shares: K/V buffers ``k``/``v`` [num_layers, B, frames *
    frame_tokens, H, D] and frame bookkeeping (``global_end``, ``local_end``, ``destructive_writes``), with the
    mark / restore / reset / clone a stream's storage keeps them in line with. Subclasses say how an open pass is
    dropped (:meth:`_close_pass`)."""

    k: torch.Tensor
    v: torch.Tensor
    frame_tokens: int
    global_end: int
    local_end: int
    destructive_writes: int

    def _close_pass(self) -> None:
        """Forget a pass in progress."""
        raise NotImplementedError

    @property
    def capacity_frames(self) -> int:
        return self.k.shape[2] // self.frame_tokens

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes

    def mark(self) -> CacheMark:
        """The bookkeeping now, for :meth:`restore`."""
        return CacheMark(self.global_end, self.local_end, self.destructive_writes)

    def restore(self, mark: CacheMark) -> bool:
        """Close any open pass and go back to ``mark``. Returns False (and changes nothing else) when a
        destructive write happened since: the buffer no longer holds the marked state and must be replayed."""
        self._close_pass()
        if self.destructive_writes != mark.destructive_writes:
            return False
        self.global_end, self.local_end = mark.global_end, mark.local_end
        return True

    def reset(self) -> None:
        """Empty the cache (buffers are reused, not zeroed)."""
        self.global_end = self.local_end = 0
        self.destructive_writes += 1
        self._close_pass()

    def clone(self) -> "FrameBuffers":
        """An independent copy (a forked stream's own cache)."""
        other = object.__new__(type(self))
        other.__dict__.update(self.__dict__)
        other.k = self.k.clone()
        other.v = self.v.clone()
        return other

    def valid(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The valid prefix [B, local_end * frame_tokens, H, D] of one layer's K and V."""
        end = self.local_end * self.frame_tokens
        return self.k[layer, :, :end], self.v[layer, :, :end]


class KVCache(FrameBuffers):
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
        # Not zero-filled: a slot is always written before any query attends to it.
        self.k = torch.empty(shape, dtype=dtype, device=device)
        self.v = torch.empty(shape, dtype=dtype, device=device)
        self.global_end = 0
        self.local_end = 0
        #: incremented whenever data the pointers cannot restore is overwritten (eviction, re-cache)
        self.destructive_writes = 0
        #: the block being written (between open_block/open_recache and commit_block), None otherwise
        self.open_plan: WritePlan | None = None

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
    def dtype(self) -> torch.dtype:
        return self.k.dtype

    @property
    def device(self) -> torch.device:
        return self.k.device

    # ----------------------------------------------------------------------------------------------- writes
    def open_block(self, start_frame: int, num_frames: int) -> None:
        """Reserve slots for a new block of ``num_frames`` frames at absolute ``start_frame`` (= ``global_end``).

        Mutates the buffer when the block does not fit: a global cache grows (the pointers stay valid), a window
        rolls its oldest non-sink frames out (destructive). The pointers themselves move at :meth:`commit_block`.
        """
        if start_frame != self.global_end:
            raise StreamStateError(
                f"KV cache holds frames up to {self.global_end}; cannot write a block starting at frame "
                f"{start_frame}. Rewind the cache first."
            )
        if num_frames < 1:
            raise StreamStateError(f"A cache block needs at least one frame, got {num_frames}.")
        if self.local_end + num_frames > self.capacity_frames:
            if self.window_frames is None:
                self._grow(self.local_end + num_frames)
            else:
                self._roll(self.local_end + num_frames - self.capacity_frames)
        end = self.local_end + num_frames
        self.open_plan = WritePlan(self.local_end, end, end, start_frame + num_frames)

    def open_recache(self, mode: Recache | None = None) -> tuple[int, int] | None:
        """Open a re-encode of cached frames under a new prompt (LongLive re-cache, reference §6), in ``mode``
        (default :attr:`Recache.RECENT`):

        - ``RECENT``: every cached frame that is not a sink frame, slots ``[sink, local_end)``; the sink keeps the
          video's first frames (LongLive's ``global_sink: true``);
        - ``WINDOW``: the last ``local_end`` frames of the video, into slots ``[0, local_end)``, so the sink slots
          take the oldest re-encoded frames and the first frames of the video leave the cache (LongLive's
          ``global_sink: false``, how it trains).

        Queries attend to ``[0, local_end)``. Destructive (old K/V are overwritten); the pointers do not move.
        Returns (absolute index of the first re-encoded frame, number of frames), or None (nothing opened) when no
        frame is to be re-encoded."""
        first = min(self.sink_frames, self.local_end) if Recache.of(mode) is Recache.RECENT else 0
        if self.local_end <= first:
            return None
        self.destructive_writes += 1
        self.open_plan = WritePlan(first, self.local_end, self.local_end, self.global_end)
        count = self.local_end - first
        return self.global_end - count, count

    def commit_block(self) -> None:
        """Make the open block part of the cache (its last written K/V) and close it."""
        plan = self._plan()
        self.local_end, self.global_end = plan.attend_end, plan.global_end
        self.open_plan = None

    def _plan(self) -> WritePlan:
        if self.open_plan is None:
            raise StreamStateError("No cache block is open; call open_block() (or open_recache()) first.")
        return self.open_plan

    def _roll(self, evicted: int) -> None:
        shift_out(self.k, self.v, self.sink_frames, evicted, self.local_end - evicted - self.sink_frames,
                  self.frame_tokens)
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
            new = torch.empty(shape, dtype=old.dtype, device=old.device)
            new[:, :, :used] = old[:, :, :used]
            setattr(self, name, new)

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store one layer's new K (already rotated) and V [B, block_tokens, H, D] into the open block's slots."""
        plan, t = self._plan(), self.frame_tokens
        self.k[layer, :, plan.slot_start * t : plan.slot_end * t] = k
        self.v[layer, :, plan.slot_start * t : plan.slot_end * t] = v

    def keys_values(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V [B, attend_tokens, H, D] the open block's queries attend to."""
        end = self._plan().attend_end * self.frame_tokens
        return self.k[layer, :, :end], self.v[layer, :, :end]

    # ----------------------------------------------------------------------------------------------- state
    def _close_pass(self) -> None:
        self.open_plan = None

    def rewind(self, num_frames: int) -> None:
        """Forget frames >= ``num_frames`` (only valid while no destructive write happened after them)."""
        if not 0 <= num_frames <= self.global_end:
            raise StreamStateError(f"Cannot rewind a cache holding {self.global_end} frames to {num_frames}.")
        drop = self.global_end - num_frames
        if drop > self.local_end:
            raise StreamStateError(f"Frames before {num_frames} were evicted; the stream must be replayed.")
        self.local_end -= drop
        self.global_end = num_frames
        self.open_plan = None

