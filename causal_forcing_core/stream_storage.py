"""The mutable state the snapshots of one stream lineage share: the KV cache and the history it reflects.

:class:`StreamStorage` keeps the cache in line with a history: :meth:`~StreamStorage.sync` extends, rewinds or
replays it, and :meth:`~StreamStorage.append_chunk` generates the next chunk into it (with
:func:`.sampling.sample_block`). Whatever raises in between, ``history`` stays a true description of the cache, or
``None`` (unknown: the next sync replays). Rolling Forcing's storage (:mod:`.rolling_storage`) is a subclass.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import torch

from .dit import CausalWanModel
from .errors import StreamStateError
from .geometry import WAN21
from .host_memory import to_host
from .kv_cache import KVCache, Recache, TextKVCache
from .noise import NoiseSource
from .prompt import Prompt
from .sampling import StepCallback, cache_block, sample_block
from .scheduler import FlowMatchScheduler
from .stream_events import ChunkEvent, ContextEvent, Event, StreamSettings, committed_frames, frames_of

logger = logging.getLogger(__name__)


class StreamStorage:
    """The KV cache of a lineage and the history it reflects (see the module docstring)."""

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
        self._sizing = {"capacity_frames": capacity_frames, "memory_budget_bytes": memory_budget_bytes}
        self.cache = self._new_cache(capacity_frames, memory_budget_bytes)
        #: the model weights the caches are computed with (:attr:`.dit.CausalWanModel.weights_version`)
        self.weights_version = model.weights_version
        self.text = TextKVCache(model.embed_text, settings.batch)
        #: the history the cache currently reflects; None = unknown (a failed destructive write)
        self.history: tuple[Event, ...] | None = ()
        #: the cache can be rewound to event boundaries >= floor only (evictions and re-caches lose older state)
        self.floor = 0
        self.lock = threading.RLock()

    def _new_cache(self, capacity_frames: int | None, memory_budget_bytes: int | None) -> KVCache:
        """An empty self-attention cache for this lineage (global, or a window with a sink)."""
        cfg, s = self.model.config, self.settings
        return KVCache(
            num_layers=cfg.num_layers,
            batch=s.batch,
            num_heads=cfg.num_heads,
            head_dim=cfg.head_dim,
            frame_tokens=cfg.tokens_per_frame(s.latent_height, s.latent_width),
            capacity_frames=capacity_frames or WAN21.trained_latent_frames,
            window_frames=s.window_frames,
            sink_frames=s.sink_frames,
            dtype=self.model.compute_dtype,
            device=self.model.device,
            memory_budget_bytes=memory_budget_bytes,
        )

    def fork(self) -> "StreamStorage":
        """A storage of its own with the same state (a copy of the cache and of the text K/V)."""
        with self.lock:
            other = object.__new__(type(self))
            other.__dict__.update(self.__dict__)
            other.lock = threading.RLock()
            other.text = self.text.copy()
            other.cache = self.cache.clone()
        return other

    def fresh(self) -> "StreamStorage":
        """An empty storage for the same model and settings (its cache is rebuilt by the next sync)."""
        return type(self)(self.model, self.settings, **self._sizing)

    @property
    def chunk_shape(self) -> tuple[int, int, int, int, int]:
        """The shape of one chunk's latents, [B, n, C, h, w]."""
        s = self.settings
        return (s.batch, s.sampler.frames_per_block, self.model.config.in_dim, s.latent_height, s.latent_width)

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
        if self.model.weights_version != self.weights_version:
            raise StreamStateError(
                "The model's weights changed since this stream started (a LoRA was merged or unmerged): its caches "
                "were computed with the old weights. Start a new stream (the same seed and prompts give the new "
                "model's video)."
            )
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
                self.cache.rewind(sum(frames_of(e) for e in target[:common]))
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
        index = sum(isinstance(e, ChunkEvent) for e in history)

        def write() -> Event:
            x0 = sample_block(
                self.model, self.cache, self.text.get(prompt), self.settings.sampler, self.scheduler, noise,
                chunk_index=index, start_frame=self.cache.global_end, shape=self.chunk_shape, on_step=on_step,
            )
            return ChunkEvent(index, to_host(x0), prompt)

        return self._extend(history, write)
