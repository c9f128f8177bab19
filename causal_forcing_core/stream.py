"""The student core: a stream of committed latent chunks, the prompts they were made with, and a KV cache.

A :class:`Stream` is an immutable snapshot. Its truth is its history of events (context frames, generated chunks,
prompt re-caches), each holding the latents it committed and the prompt it used; the KV cache is a derived
accelerator kept in a :class:`.stream_storage.StreamStorage` that snapshots of one lineage share (events:
:mod:`.stream_events`; committed latents live in CPU memory, only the cache's window on the device):

- appending from the newest snapshot writes into the cache in place;
- appending from an older snapshot rewinds the shared cache (K/V of frames < n depend only on frames < n), or,
  when the cache no longer holds that state (another branch rolled it, a window evicted it, a re-cache rewrote
  it), replays the committed latents into it (one clean pass per block: the same K/V as the original run);
- noise for chunk k comes from (seed, k) (:mod:`.noise`), so splitting the work over calls changes nothing.

With a Rolling Forcing sampler (``rolling-4step``, :mod:`.rolling`, :mod:`.rolling_storage`) the cache is a
:class:`.rolling.RollingCache` and chunk events also hold the window's *front*, the blocks still being denoised,
so any snapshot goes on exactly where it stopped; :meth:`Stream.finish` drains the window as the official
long-video pipeline ends a video.

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
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from .config import SamplerConfig
from .dit import CausalWanModel
from .errors import InvalidInputError, StreamStateError
from .geometry import WAN21
from .host_memory import to_host
from .kv_cache import KVCache, Recache, validate_window
from .noise import NoiseSource, SeededNoise
from .prompt import Prompt, check_prompt_embeds
from .rolling import check_rolling_settings, rolling_cache_frames
from .rolling_storage import RollingStreamStorage
from .sampling import StepCallback
from .stream_events import (
    ChunkEvent,
    ContextEvent,
    Event,
    RecacheEvent,
    StreamSettings,
    committed_frames,
    frames_of,
)
from .stream_storage import StreamStorage

__all__ = [
    "ChunkEvent", "ContextEvent", "Event", "Prompt", "RecacheEvent", "StepCallback", "Stream", "StreamSettings",
    "StreamStorage", "cache_frames_for", "committed_frames", "latent_size_for", "start_stream",
]

logger = logging.getLogger(__name__)


def cache_frames_for(sampler: SamplerConfig, window_frames: int | None, video_frames: int) -> int:
    """Latent frames a stream's self-attention cache holds: Rolling Forcing's own (:func:`.rolling.rolling_cache_frames`),
    else the local window, else the whole video (``video_frames``)."""
    if sampler.rolling:
        return rolling_cache_frames(sampler.frames_per_block)
    return window_frames or video_frames


def latent_size_for(height: int, width: int, model: CausalWanModel) -> tuple[int, int]:
    """Pixel size -> latent size, rejecting sizes the VAE and the DiT patching cannot produce."""
    return WAN21.latent_size(height, width, model.config.patch_size[1:])


def new_storage(model: CausalWanModel, settings: StreamSettings, **sizing: int | None) -> StreamStorage:
    """The storage a stream of ``settings`` needs: Rolling Forcing's for a rolling sampler, else the plain one
    (``sizing``: ``capacity_frames`` and ``memory_budget_bytes`` of its cache)."""
    kind = RollingStreamStorage if settings.sampler.rolling else StreamStorage
    return kind(model, settings, **sizing)


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
        return sum(frames_of(e) for e in self.history)

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
    def newest_latents(self) -> torch.Tensor | None:
        """The latents [B, n, C, h, w] of the newest committed event (None before any): what a live decoder needs
        after each chunk, without joining the whole video."""
        return next((e.latents for e in reversed(self.history) if not isinstance(e, RecacheEvent)), None)

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

    def finish(self, noise: NoiseSource | None = None) -> "Stream":
        """Rolling Forcing: finish the blocks still in the window the way the official long-video pipeline ends a
        video (window steps that take no new block): ``num_steps - 1`` more chunks. The result cannot be continued
        (its last chunks saw no successors); rewind it to go on. ``noise``: as for :meth:`generate` (used only to
        recompute a released window, :mod:`.rolling_storage`)."""
        storage = self.storage
        if not isinstance(storage, RollingStreamStorage):
            raise InvalidInputError(f"finish() drains a Rolling Forcing window; {self.settings.sampler.name} has none.")
        noise = noise or SeededNoise(self.settings.seed)
        stream = self
        with storage.lock:
            front = storage.front_after(stream.history, noise)  # a finished stream has nothing left to drain
            while front:
                stream = replace(stream, history=storage.append_drained(stream.history, stream.prompt, noise))
                front = storage.front_after(stream.history, noise, draining=True)
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
            if frames + frames_of(event) > num_frames or (frames == num_frames and frames_of(event) == 0):
                break
            kept.append(event)
            frames += frames_of(event)
        if frames != num_frames:
            bounds = [0]
            for e in self.history:
                if frames_of(e):
                    bounds.append(bounds[-1] + frames_of(e))
            raise StreamStateError(
                f"Cannot rewind to frame {num_frames}: it is not a chunk boundary of this stream "
                f"(boundaries: {', '.join(map(str, bounds))})."
            )
        prompt = next((e.prompt for e in reversed(kept)), self.history[0].prompt if self.history else self.prompt)
        return replace(self, history=tuple(kept), prompt=prompt)

    def fork(self) -> "Stream":
        """The same snapshot on a storage of its own (a copy of the cache when it is in sync), so two branches
        can be extended alternately without replays."""
        return replace(self, storage=self.storage.fork())

    def replayed(self) -> "Stream":
        """This snapshot on a fresh storage whose cache is rebuilt from the committed latents alone."""
        fresh = self.storage.fresh()
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
        history = (ContextEvent(to_host(context.to(model.compute_dtype)), prompt),)
    storage = new_storage(model, settings, capacity_frames=capacity_frames, memory_budget_bytes=memory_budget_bytes)
    return Stream(storage, history, prompt)
