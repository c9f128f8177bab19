"""What a stream's history is made of: the events a snapshot records, and where their tensors live.

A snapshot's truth is its history (:mod:`.stream`): clean context frames, generated chunks and prompt re-caches,
each with the latents it committed and the prompt it used. Committed latents are kept in CPU memory
(:func:`.host_memory.to_host`): hours of video must not pile up on the compute device, where only the KV cache's
window lives.

Latent layout is the reference's [B, F, C, h, w] (frames before channels).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import SamplerConfig
from .errors import StreamStateError
from .kv_cache import Recache
from .prompt import Prompt
from .rolling import InFlight


@dataclass(frozen=True, eq=False)
class ContextEvent:
    """Clean frames given to the stream (an I2V image latent, or video to extend), cached at t = 0."""

    latents: torch.Tensor  # [B, n, C, h, w], on the CPU
    prompt: Prompt


@dataclass(frozen=True, eq=False)
class ChunkEvent:
    """A generated chunk: its index among generated chunks (the noise seed) and its committed x0.

    Rolling Forcing also keeps the window after it (``front``: the blocks still being denoised, so the snapshot
    goes on exactly where it stopped) and marks the chunks :meth:`.stream.Stream.finish` drained (``drained``:
    nothing can follow them). The front is an accelerator, like the KV cache: a lineage keeps it for its newest
    chunks and every few chunks only (:mod:`.rolling_storage`), and ``front is None`` means it was released and is
    recomputed from the nearest kept one when a snapshot continues from here."""

    index: int
    latents: torch.Tensor  # [B, n, C, h, w], on the CPU
    prompt: Prompt
    front: tuple[InFlight, ...] | None = ()
    drained: bool = False

    def release_front(self) -> None:
        """Forget the window (the one part of an event that may change: memory, not meaning)."""
        object.__setattr__(self, "front", None)

    def keep_front(self, front: tuple[InFlight, ...]) -> None:
        """Keep a recomputed window again (the same one the chunk was made with)."""
        object.__setattr__(self, "front", front)


@dataclass(frozen=True, eq=False)
class RecacheEvent:
    """A prompt switch that re-encodes cached frames under ``prompt`` (LongLive, reference §6): the recent ones
    (``Recache.RECENT``) or the whole last window, whose oldest frames become the sink (``Recache.WINDOW``)."""

    prompt: Prompt
    mode: Recache = Recache.RECENT


Event = ContextEvent | ChunkEvent | RecacheEvent


def frames_of(event: Event) -> int:
    """Latent frames ``event`` commits (0 for a re-cache)."""
    return 0 if isinstance(event, RecacheEvent) else event.latents.shape[1]


def committed_frames(history: tuple[Event, ...], start: int, end: int) -> torch.Tensor:
    """Committed latent frames ``start`` to ``end`` (exclusive) of ``history`` as [B, end - start, C, h, w], joining
    only the events that overlap them (a re-cache late in a long stream must not copy the whole video)."""
    parts: list[torch.Tensor] = []
    offset = sum(frames_of(e) for e in history)
    for event in reversed(history):
        n = frames_of(event)
        offset -= n
        if n == 0 or offset >= end:
            continue
        if offset + n <= start:
            break
        parts.append(event.latents[:, max(start - offset, 0) : min(end - offset, n)])
    if not parts:
        raise StreamStateError(f"No committed frames between {start} and {end}.")
    return torch.cat(parts[::-1], dim=1) if len(parts) > 1 else parts[0]


@dataclass(frozen=True)
class StreamSettings:
    """What never changes over a stream's life."""

    sampler: SamplerConfig
    batch: int
    latent_height: int
    latent_width: int
    seed: int = 0
    window_frames: int | None = None
    sink_frames: int = 0
    #: what ``recache=True`` re-encodes on a prompt switch (:class:`.kv_cache.Recache`)
    recache: Recache = Recache.RECENT
