"""Rolling Forcing inside a stream: the storage of a ``rolling-4step`` lineage (:mod:`.rolling` has the sampler).

Generation is pipelined: making chunk ``k`` runs the window step that finishes it, and the blocks still in the
window (the *front*, :class:`.rolling.InFlight`) travel with chunk ``k``'s event, so a snapshot goes on exactly
where it stopped. A front holds about six chunks' worth of tensors (three blocks and their re-noise), so a lineage
keeps it only for its newest :data:`FRONTS_KEPT_NEWEST` chunks (the span of the rolling cache, where a rewind costs
nothing) and for every :data:`FRONT_EVERY`-th chunk; the others are released as the lineage grows. A snapshot whose
front was released is continued by recomputing its front from the nearest kept one: the same window steps with
the same noise and prompts, so the same front (at most ``FRONT_EVERY - 1`` window steps, plus a cache replay when
the cache has moved on). Fronts then cost at most ``6 / FRONT_EVERY`` of the committed latents.

Noise for a recomputation comes from the source the continuing call uses (the stream's seed by default): a
stream made with a custom noise source is continued past a released front with that same source.
"""

from __future__ import annotations

import logging

import torch

from .dit import CausalWanModel
from .errors import StreamStateError
from .host_memory import to_host
from .noise import NoiseSource
from .prompt import Prompt
from .rolling import InFlight, RollingCache, RollingSampler
from .sampling import StepCallback
from .stream_events import ChunkEvent, Event, StreamSettings
from .stream_storage import StreamStorage

logger = logging.getLogger(__name__)

#: newest chunks of a lineage whose rolling window is always kept (the rolling cache's span: 24 frames, 8 blocks)
FRONTS_KEPT_NEWEST = 8
#: every FRONT_EVERY-th chunk keeps its window for good (a released one is recomputed from there)
FRONT_EVERY = 8


def _stored(front: tuple[InFlight, ...]) -> tuple[InFlight, ...]:
    """A front as an event keeps it: every tensor on the CPU (:func:`.host_memory.to_host`)."""
    return tuple(InFlight(f.block, to_host(f.x), f.step, tuple(to_host(r) for r in f.renoise)) for f in front)


class RollingStreamStorage(StreamStorage):
    """A :class:`.stream_storage.StreamStorage` whose cache is a :class:`.rolling.RollingCache` and whose chunks
    come from a :class:`.rolling.RollingSampler` (window, sink, capacity and budget do not apply)."""

    def __init__(self, model: CausalWanModel, settings: StreamSettings, **sizing: int | None) -> None:
        super().__init__(model, settings, **sizing)
        self.rolling = RollingSampler(model, self.cache, settings.sampler, self.scheduler)

    def _new_cache(self, capacity_frames: int | None, memory_budget_bytes: int | None) -> RollingCache:  # type: ignore[override]
        """Rolling Forcing's own clean cache (:func:`.rolling.rolling_cache_frames`; the sizing does not apply)."""
        s = self.settings
        frame_tokens = self.model.config.tokens_per_frame(s.latent_height, s.latent_width)
        return RollingCache(self.model, s.batch, frame_tokens, s.sampler.frames_per_block)

    def fork(self) -> "RollingStreamStorage":
        other = super().fork()
        other.rolling = RollingSampler(self.model, other.cache, self.settings.sampler, self.scheduler)
        return other

    # ------------------------------------------------------------------------------------------- fronts
    def front_after(
        self, history: tuple[Event, ...], noise: NoiseSource, *, draining: bool = False
    ) -> tuple[InFlight, ...]:
        """The rolling window after ``history`` (empty before the first chunk), recomputed when it was released.
        A stream that was finished has none to take new blocks from (``draining``: the blocks left to finish)."""
        last = _last_chunk(history)
        if last is None:
            return ()
        event = history[last]
        if event.drained and not draining:
            raise StreamStateError("This rolling stream was finished (its last chunks drained the window); rewind it "
                                   "to an earlier chunk to go on.")
        if event.front is None:
            event.keep_front(self._recompute_front(history[: last + 1], noise))
        return event.front

    def _recompute_front(self, history: tuple[Event, ...], noise: NoiseSource) -> tuple[InFlight, ...]:
        """The released front of ``history``'s last chunk: the window steps after the nearest kept front again."""
        base = len(history) - 1
        while base >= 0 and not (isinstance(history[base], ChunkEvent) and history[base].front is not None):
            base -= 1
        front = history[base].front if base >= 0 else ()
        logger.info("Recomputing the rolling window after chunk %d from %s", history[-1].index,
                    f"chunk {history[base].index}" if base >= 0 else "the start")
        self.sync(history[: base + 1])
        for p in range(base + 1, len(history)):
            event = history[p]

            def write(event: ChunkEvent = event) -> Event:
                nonlocal front
                text = self.text.get(event.prompt)
                if event.drained:
                    _, front = self.rolling.drain_step(text, front)
                else:
                    _, front = self.rolling.advance(text, noise, front, chunk_index=event.index,
                                                    shape=self.chunk_shape)
                return event

            self._extend(history[:p], write)
        return _stored(front)

    def _release_old_fronts(self, history: tuple[Event, ...]) -> None:
        """Release the front of the chunk that just left the newest :data:`FRONTS_KEPT_NEWEST` (unless it is one
        every :data:`FRONT_EVERY`)."""
        if len(history) > FRONTS_KEPT_NEWEST:
            old = history[-1 - FRONTS_KEPT_NEWEST]
            if isinstance(old, ChunkEvent) and old.index % FRONT_EVERY and old.front is not None:
                old.release_front()

    # ------------------------------------------------------------------------------------------- chunks
    @torch.no_grad()
    def append_chunk(
        self, history: tuple[Event, ...], prompt: Prompt, noise: NoiseSource, on_step: StepCallback | None
    ) -> tuple[Event, ...]:
        """The chunk after ``history``: the window steps that finish it (one, or four to fill the window)."""
        front = self.front_after(history, noise)
        self.sync(history)
        index = sum(isinstance(e, ChunkEvent) for e in history)

        def write() -> Event:
            x0, ahead = self.rolling.advance(self.text.get(prompt), noise, front, chunk_index=index,
                                             shape=self.chunk_shape, on_window=on_step)
            return ChunkEvent(index, to_host(x0), prompt, front=_stored(ahead))

        extended = self._extend(history, write)
        self._release_old_fronts(extended)
        return extended

    @torch.no_grad()
    def append_drained(self, history: tuple[Event, ...], prompt: Prompt, noise: NoiseSource) -> tuple[Event, ...]:
        """Finish the oldest block of the window after ``history`` with a window step that takes no new block;
        ``history`` + that chunk (``drained``)."""
        front = self.front_after(history, noise, draining=True)
        if not front:
            raise StreamStateError("The rolling window is empty: nothing is left to finish.")
        self.sync(history)
        index = sum(isinstance(e, ChunkEvent) for e in history)

        def write() -> Event:
            x0, ahead = self.rolling.drain_step(self.text.get(prompt), front)
            return ChunkEvent(index, to_host(x0), prompt, front=_stored(ahead), drained=True)

        extended = self._extend(history, write)
        self._release_old_fronts(extended)
        return extended


def _last_chunk(history: tuple[Event, ...]) -> int | None:
    """Position of the last chunk event of ``history`` (None before the first)."""
    return next((p for p in range(len(history) - 1, -1, -1) if isinstance(history[p], ChunkEvent)), None)
