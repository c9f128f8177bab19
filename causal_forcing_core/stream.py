"""The student core: a stream of committed latent chunks, the prompts they were made with, and a KV cache.

A :class:`Stream` is an immutable snapshot. Its truth is its history of events (context frames, generated chunks,
prompt re-caches), each holding the latents it committed and the prompt it used; the KV cache is a derived
accelerator kept in a :class:`StreamStorage` that snapshots of one lineage share:

- appending from the newest snapshot writes into the cache in place;
- appending from an older snapshot rewinds the shared cache (K/V of frames < n depend only on frames < n), or,
  when the cache no longer holds that state (another branch rolled it, a window evicted it, a re-cache rewrote
  it), replays the committed latents into it (one clean pass per block: the same K/V as the original run);
- noise for chunk k comes from (seed, k) (:mod:`.noise`), so splitting the work over calls changes nothing.

With a Rolling Forcing sampler (``rolling-4step``, :mod:`.rolling`) the cache is a :class:`.rolling.RollingCache`
and every chunk event also holds the window's *front*, the blocks still being denoised, so any snapshot goes on
exactly where it stopped; :meth:`Stream.finish` drains the window as the official long-video pipeline ends a video.

Latent layout is the reference's [B, F, C, h, w] (frames before channels); the DiT sees [B, C, F, h, w].

Typical use::

    stream = start_stream(model, sampler_preset("chunkwise-4step"), height=480, width=832,
                          prompt=Prompt(embeds), seed=42)
    stream = stream.generate(7)                       # 21 latent frames
    later = stream.generate(2, prompt=Prompt(other), recache=True)
    video_latents = later.latents                     # [1, 27, 16, 60, 104]
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from .config import SamplerConfig
from .dit import CausalWanModel
from .errors import InvalidInputError, StreamStateError
from .geometry import WAN21
from .kv_cache import KVCache, Recache, TextKVCache, validate_window
from .noise import NoiseSource, SeededNoise
from .prompt import Prompt, check_prompt_embeds
from .rolling import InFlight, RollingCache, RollingSampler, check_rolling_settings, rolling_cache_frames
from .sampling import StepCallback, cache_block, sample_block
from .scheduler import FlowMatchScheduler

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class ContextEvent:
    """Clean frames given to the stream (an I2V image latent, or video to extend), cached at t = 0."""

    latents: torch.Tensor  # [B, n, C, h, w]
    prompt: Prompt


@dataclass(frozen=True, eq=False)
class ChunkEvent:
    """A generated chunk: its index among generated chunks (the noise seed) and its committed x0. Rolling Forcing
    also keeps the window after it (``front``), and marks the chunks :meth:`Stream.finish` drained (``drained``:
    nothing can follow them)."""

    index: int
    latents: torch.Tensor  # [B, n, C, h, w]
    prompt: Prompt
    front: tuple[InFlight, ...] = ()
    drained: bool = False


@dataclass(frozen=True, eq=False)
class RecacheEvent:
    """A prompt switch that re-encodes cached frames under ``prompt`` (LongLive, reference §6): the recent ones
    (``Recache.RECENT``) or the whole last window, whose oldest frames become the sink (``Recache.WINDOW``)."""

    prompt: Prompt
    mode: Recache = Recache.RECENT


Event = ContextEvent | ChunkEvent | RecacheEvent


def _frames(event: Event) -> int:
    return 0 if isinstance(event, RecacheEvent) else event.latents.shape[1]


def committed_frames(history: tuple[Event, ...], start: int, end: int) -> torch.Tensor:
    """Committed latent frames ``start`` to ``end`` (exclusive) of ``history`` as [B, end - start, C, h, w], joining
    only the events that overlap them (a re-cache late in a long stream must not copy the whole video)."""
    parts: list[torch.Tensor] = []
    offset = sum(_frames(e) for e in history)
    for event in reversed(history):
        n = _frames(event)
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


def cache_frames_for(sampler: SamplerConfig, window_frames: int | None, video_frames: int) -> int:
    """Latent frames a stream's self-attention cache holds: Rolling Forcing's own (:func:`.rolling.rolling_cache_frames`),
    else the local window, else the whole video (``video_frames``)."""
    if sampler.rolling:
        return rolling_cache_frames(sampler.frames_per_block)
    return window_frames or video_frames


def latent_size_for(height: int, width: int, model: CausalWanModel) -> tuple[int, int]:
    """Pixel size -> latent size, rejecting sizes the VAE and the DiT patching cannot produce."""
    return WAN21.latent_size(height, width, model.config.patch_size[1:])


class StreamStorage:
    """Mutable state shared by the snapshots of one lineage: the KV cache and the history it reflects.

    It keeps the cache in line with a history: :meth:`sync` extends, rewinds or replays it, and
    :meth:`append_chunk` generates the next chunk into it (with :func:`.sampling.sample_block`). Whatever raises
    in between, ``history`` stays a true description of the cache, or ``None`` (unknown: the next sync replays).
    """

    def __init__(
        self,
        model: CausalWanModel,
        settings: StreamSettings,
        *,
        capacity_frames: int | None = None,
        memory_budget_bytes: int | None = None,
    ) -> None:
        self.model = model
        self.settings = settings
        self.scheduler = FlowMatchScheduler(settings.sampler.shift)
        cfg = model.config
        frame_tokens = cfg.tokens_per_frame(settings.latent_height, settings.latent_width)
        self.rolling: RollingSampler | None = None
        if settings.sampler.rolling:
            self.cache = RollingCache(model, settings.batch, frame_tokens, settings.sampler.frames_per_block)
            self.rolling = RollingSampler(model, self.cache, settings.sampler, self.scheduler)
            self._init_shared_state()
            return
        self.cache = KVCache(
            num_layers=cfg.num_layers,
            batch=settings.batch,
            num_heads=cfg.num_heads,
            head_dim=cfg.head_dim,
            frame_tokens=cfg.tokens_per_frame(settings.latent_height, settings.latent_width),
            capacity_frames=capacity_frames or WAN21.trained_latent_frames,
            window_frames=settings.window_frames,
            sink_frames=settings.sink_frames,
            dtype=model.compute_dtype,
            device=model.device,
            memory_budget_bytes=memory_budget_bytes,
        )
        self._init_shared_state()

    def _init_shared_state(self) -> None:
        """The text K/V cache and the history bookkeeping every kind of stream storage has."""
        self.text = TextKVCache(self.model.embed_text, self.settings.batch)
        #: the history the cache currently reflects; None = unknown (a failed destructive write)
        self.history: tuple[Event, ...] | None = ()
        #: the cache can be rewound to event boundaries >= floor only (evictions and re-caches lose older state)
        self.floor = 0
        self.lock = threading.RLock()

    # ------------------------------------------------------------------------------------------- cache writes
    def _cache_clean(self, latents: torch.Tensor, t: float, prompt: Prompt) -> None:
        """Write clean K/V of ``latents`` [B, n, C, h, w] as the next block(s) of frames_per_block frames."""
        step = self.settings.sampler.frames_per_block
        for s in range(0, latents.shape[1], step):
            cache_block(self.model, self.cache, latents[:, s : s + step], t, self.text.get(prompt),
                        self.cache.global_end)

    def _recache(self, prompt: Prompt, mode: Recache, history: tuple[Event, ...]) -> None:
        opened = self.cache.open_recache(mode)
        if opened is None:
            return
        first, count = opened
        frames = committed_frames(history, first, first + count)
        cache_block(self.model, self.cache, frames, self.settings.sampler.context_noise, self.text.get(prompt),
                    first, opened=True)

    def _extend(self, history: tuple[Event, ...], write: Callable[[], Event]) -> tuple[Event, ...]:
        """Run ``write``, which brings the cache from ``history`` (the one it reflects) one event further and
        returns that event; record and return the extended history. If ``write`` raises, the cache goes back
        to ``history``, or is marked unknown (replayed by the next sync) when a destructive write cannot be
        undone."""
        mark = self.cache.mark()
        try:
            event = write()
        except BaseException:
            if not self.cache.restore(mark):
                self.history = None
            raise
        self.history = history + (event,)
        if self.cache.destructive_writes != mark.destructive_writes:
            self.floor = len(self.history)
        return self.history

    def _apply(self, event: Event, history_before: tuple[Event, ...]) -> None:
        """Bring the cache from ``history_before`` to ``history_before + (event,)`` without generating."""

        def write() -> Event:
            if isinstance(event, ContextEvent):
                self._cache_clean(event.latents, 0.0, event.prompt)
            elif isinstance(event, ChunkEvent):
                self._cache_clean(event.latents, self.settings.sampler.context_noise, event.prompt)
            else:
                self._recache(event.prompt, event.mode, history_before)
            return event

        self._extend(history_before, write)

    # ------------------------------------------------------------------------------------------- sync
    @torch.no_grad()
    def sync(self, target: tuple[Event, ...]) -> None:
        """Make the cache reflect ``target``: extend, rewind, or replay from scratch."""
        current = self.history
        if current is target:
            return
        if current is not None:
            common = 0
            for a, b in zip(current, target):
                if a is not b:
                    break
                common += 1
            if common < len(current) and common >= self.floor:
                self.cache.rewind(sum(_frames(e) for e in target[:common]))
                current = self.history = target[:common]
            if common == len(current):
                for event in target[common:]:
                    self._apply(event, self.history)
                return
        logger.info("Replaying %d committed events into the KV cache", len(target))
        self.cache.reset()
        self.history, self.floor = (), 0
        for event in target:
            self._apply(event, self.history)

    @torch.no_grad()
    def append_chunk(
        self, history: tuple[Event, ...], prompt: Prompt, noise: NoiseSource, on_step: StepCallback | None
    ) -> tuple[Event, ...]:
        """Generate the chunk after ``history`` under ``prompt`` and return ``history`` + that chunk."""
        self.sync(history)
        settings, cfg = self.settings, self.model.config
        index = sum(isinstance(e, ChunkEvent) for e in history)
        shape = (settings.batch, settings.sampler.frames_per_block, cfg.in_dim, settings.latent_height,
                 settings.latent_width)

        if self.rolling is not None:
            front = _rolling_front(history)

            def write() -> Event:
                x0, ahead = self.rolling.advance(self.text.get(prompt), noise, front, chunk_index=index, shape=shape,
                                                 on_window=on_step)
                return ChunkEvent(index, x0, prompt, front=tuple(f.stored() for f in ahead))

            return self._extend(history, write)

        def write() -> Event:
            x0 = sample_block(
                self.model, self.cache, self.text.get(prompt), settings.sampler, self.scheduler, noise,
                chunk_index=index, start_frame=self.cache.global_end, shape=shape, on_step=on_step,
            )
            return ChunkEvent(index, x0, prompt)

        return self._extend(history, write)

    @torch.no_grad()
    def append_drained(self, history: tuple[Event, ...], prompt: Prompt) -> tuple[Event, ...]:
        """Rolling Forcing: finish the oldest block of the window after ``history`` with a window step that takes
        no new block; ``history`` + that chunk (``drained``)."""
        self.sync(history)
        front = _rolling_front(history, draining=True)
        if not front:
            raise StreamStateError("The rolling window is empty: nothing is left to finish.")
        index = sum(isinstance(e, ChunkEvent) for e in history)

        def write() -> Event:
            x0, ahead = self.rolling.drain_step(self.text.get(prompt), front)
            return ChunkEvent(index, x0, prompt, front=tuple(f.stored() for f in ahead), drained=True)

        return self._extend(history, write)


def _rolling_front(history: tuple[Event, ...], *, draining: bool = False) -> tuple[InFlight, ...]:
    """The rolling window after ``history`` (empty before the first chunk); a stream that is being or was
    finished has none to take new blocks from (``draining``: the blocks left to finish)."""
    last = next((e for e in reversed(history) if isinstance(e, ChunkEvent)), None)
    if last is None:
        return ()
    if last.drained and not draining:
        raise StreamStateError("This rolling stream was finished (its last chunks drained the window); rewind it to "
                               "an earlier chunk to go on.")
    return last.front


@dataclass(frozen=True)
class Stream:
    """An immutable snapshot of a video stream. Every operation returns a new snapshot."""

    storage: StreamStorage = field(repr=False)
    history: tuple[Event, ...]
    prompt: Prompt

    # ------------------------------------------------------------------------------------------- facts
    @property
    def settings(self) -> StreamSettings:
        return self.storage.settings

    @property
    def num_frames(self) -> int:
        """Committed latent frames (context included)."""
        return sum(_frames(e) for e in self.history)

    @property
    def num_chunks(self) -> int:
        """Generated chunks (context frames not counted)."""
        return sum(isinstance(e, ChunkEvent) for e in self.history)

    @property
    def latents(self) -> torch.Tensor:
        """Every committed latent frame [B, F, C, h, w] (empty F = 0 before anything was committed)."""
        parts = [e.latents for e in self.history if not isinstance(e, RecacheEvent)]
        if not parts:
            s, cfg = self.settings, self.storage.model.config
            return torch.zeros(s.batch, 0, cfg.in_dim, s.latent_height, s.latent_width)
        return torch.cat(parts, dim=1)

    @property
    def kv_cache(self) -> KVCache:
        """The shared cache brought in line with this snapshot (for inspection; do not mutate)."""
        with self.storage.lock:
            self.storage.sync(self.history)
            return self.storage.cache

    # ------------------------------------------------------------------------------------------- operations
    def switch_prompt(self, prompt: Prompt, recache: bool | str | Recache = False) -> "Stream":
        """Use ``prompt`` from the next chunk on. ``recache`` (a :class:`.kv_cache.Recache`; True = the stream's
        ``settings.recache``) re-encodes cached frames at their original positions under the new prompt
        (LongLive): the non-sink ones, or with ``WINDOW`` the last window of frames, which then holds the sink too;
        without it only the text K/V change."""
        _check_prompt(prompt, self.storage.model, self.settings.batch)
        mode = self.settings.recache if recache is True else Recache.of(recache)
        if mode and self.settings.sampler.rolling:
            logger.info("Rolling Forcing switches prompts without re-cache: the window takes the new prompt in over "
                        "its %d chunks.", self.settings.sampler.num_steps)
            mode = Recache.OFF
        history = self.history
        if mode is not Recache.OFF and self.num_frames > 0:
            history = history + (RecacheEvent(prompt, mode),)
        return replace(self, history=history, prompt=prompt)

    def generate(
        self,
        num_chunks: int = 1,
        *,
        prompt: Prompt | None = None,
        recache: bool | str | Recache = False,
        noise: NoiseSource | None = None,
        on_step: StepCallback | None = None,
        on_chunk: Callable[["Stream"], None] | None = None,
    ) -> "Stream":
        """Generate ``num_chunks`` more chunks (optionally switching to ``prompt`` first) and return the snapshot.

        ``on_step(step, steps, x0)`` runs after every denoising step and may raise to interrupt; ``on_chunk`` gets
        each new snapshot. An interruption leaves this and every earlier snapshot valid.
        """
        if num_chunks < 0:
            raise InvalidInputError(f"num_chunks must be >= 0, got {num_chunks}.")
        stream = self if prompt is None or prompt is self.prompt else self.switch_prompt(prompt, recache)
        noise = noise or SeededNoise(self.settings.seed)
        storage = stream.storage
        with storage.lock:
            for _ in range(num_chunks):
                stream = replace(stream, history=storage.append_chunk(stream.history, stream.prompt, noise, on_step))
                if on_chunk is not None:
                    on_chunk(stream)
        return stream

    def finish(self) -> "Stream":
        """Rolling Forcing: finish the blocks still in the window the way the official long-video pipeline ends a
        video (window steps that take no new block): ``num_steps - 1`` more chunks. The result cannot be continued
        (its last chunks saw no successors); rewind it to go on."""
        if self.storage.rolling is None:
            raise InvalidInputError(f"finish() drains a Rolling Forcing window; {self.settings.sampler.name} has none.")
        stream, storage = self, self.storage
        with storage.lock:
            front = _rolling_front(stream.history)  # a finished stream has nothing left to drain
            while front:
                stream = replace(stream, history=storage.append_drained(stream.history, stream.prompt))
                front = stream.history[-1].front
        return stream

    def generate_frames(self, num_frames: int, **kwargs: object) -> "Stream":
        """Like :meth:`generate` but counted in latent frames, which must be a whole number of chunks."""
        n = self.settings.sampler.frames_per_block
        if num_frames % n:
            raise InvalidInputError(
                f"{num_frames} latent frames is not a whole number of chunks of {n} frames; "
                f"use {num_frames // n * n} or {(num_frames // n + 1) * n}."
            )
        return self.generate(num_frames // n, **kwargs)  # type: ignore[arg-type]

    def rewind(self, num_frames: int) -> "Stream":
        """The snapshot holding the first ``num_frames`` frames (a chunk boundary); later prompt re-caches at
        exactly that boundary are dropped too."""
        kept: list[Event] = []
        frames = 0
        for event in self.history:
            if frames + _frames(event) > num_frames or (frames == num_frames and _frames(event) == 0):
                break
            kept.append(event)
            frames += _frames(event)
        if frames != num_frames:
            bounds = [0]
            for e in self.history:
                if _frames(e):
                    bounds.append(bounds[-1] + _frames(e))
            raise StreamStateError(
                f"Cannot rewind to frame {num_frames}: it is not a chunk boundary of this stream "
                f"(boundaries: {', '.join(map(str, bounds))})."
            )
        prompt = next((e.prompt for e in reversed(kept)), self.history[0].prompt if self.history else self.prompt)
        return replace(self, history=tuple(kept), prompt=prompt)

    def fork(self) -> "Stream":
        """The same snapshot on a storage of its own (a copy of the cache when it is in sync), so two branches
        can be extended alternately without replays."""
        src = self.storage
        with src.lock:
            other = object.__new__(StreamStorage)
            other.__dict__.update(src.__dict__)
            other.lock = threading.RLock()
            other.text = src.text.copy()
            other.cache = src.cache.clone()
        return replace(self, storage=other)

    def replayed(self) -> "Stream":
        """This snapshot on a fresh storage whose cache is rebuilt from the committed latents alone."""
        src = self.storage
        fresh = StreamStorage(
            src.model, src.settings, capacity_frames=src.cache.capacity_frames,
            memory_budget_bytes=src.cache.memory_budget_bytes,
        )
        fresh.sync(self.history)
        return replace(self, storage=fresh)


def _check_prompt(prompt: Prompt, model: CausalWanModel, batch: int) -> None:
    check_prompt_embeds(prompt.embeds, model.config.text_dim, model.config.text_len, batch)


def start_stream(
    model: CausalWanModel,
    sampler: SamplerConfig,
    *,
    height: int,
    width: int,
    prompt: Prompt,
    seed: int = 0,
    batch: int = 1,
    window_frames: int | None = None,
    sink_frames: int = 0,
    context: torch.Tensor | None = None,
    capacity_frames: int | None = None,
    memory_budget_bytes: int | None = None,
    recache: bool | str | Recache = Recache.RECENT,
) -> Stream:
    """Open a stream for ``height`` x ``width`` pixel video.

    ``context`` [B, n, C, h, w]: clean latents to start from (one frame = image-to-video, frame-wise models only;
    more = video extension, a whole number of chunks). ``window_frames``/``sink_frames``: local attention with a
    rolling cache (None or 0 = attention over the whole video; the cache then grows, within
    ``memory_budget_bytes``). ``capacity_frames`` sizes the global cache up front. ``recache``: what a prompt
    switch with ``recache=True`` re-encodes (:class:`.kv_cache.Recache`: ``recent`` or ``window``). A Rolling
    Forcing sampler keeps its own cache of :func:`.rolling.rolling_cache_frames` frames: window, sink, capacity and
    budget do not apply to it.
    """
    if batch < 1:
        raise InvalidInputError(f"batch must be >= 1, got {batch}.")
    window = window_frames or None
    check_rolling_settings(sampler, window, sink_frames, context is not None)
    validate_window(window, sink_frames, sampler.frames_per_block)
    lat_h, lat_w = latent_size_for(height, width, model)
    _check_prompt(prompt, model, batch)
    mode = Recache.of(recache)
    if mode is Recache.OFF:
        raise InvalidInputError("A stream's re-cache mode is recent or window; turn re-caching off per switch.")
    settings = StreamSettings(sampler, batch, lat_h, lat_w, int(seed), window, sink_frames, mode)
    history: tuple[Event, ...] = ()
    if context is not None:
        expected = (batch, model.config.in_dim, lat_h, lat_w)
        if context.dim() != 5 or (context.shape[0], *context.shape[2:]) != expected:
            raise InvalidInputError(
                f"Context latents must be [B={batch}, frames, {model.config.in_dim}, {lat_h}, {lat_w}] for "
                f"{height}x{width}, got {list(context.shape)}."
            )
        n = sampler.frames_per_block
        if context.shape[1] == 1 and n > 1:
            raise InvalidInputError(
                f"Image-to-video needs a frame-wise model; the {sampler.name} sampler makes {n}-frame chunks. "
                "Load a frame-wise Causal Forcing checkpoint (framewise-4step/2step/1step)."
            )
        if context.shape[1] % n:
            raise InvalidInputError(
                f"{context.shape[1]} context frames is not a whole number of {n}-frame chunks; "
                f"trim to {context.shape[1] // n * n} frames."
            )
        history = (ContextEvent(context.to(model.device, model.compute_dtype), prompt),)
    storage = StreamStorage(model, settings, capacity_frames=capacity_frames, memory_budget_bytes=memory_budget_bytes)
    return Stream(storage, history, prompt)
