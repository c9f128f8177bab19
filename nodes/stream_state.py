"""Generating from a ``CF_STREAM`` snapshot (:class:`.payloads.StreamHandle`) under ComfyUI's caching.

The truth of a stream is its committed latent chunks and the prompt of each (see ``causal_forcing_core.stream``);
the KV cache is a derived accelerator shared by the snapshots of one lineage. So ComfyUI may cache, re-run, bypass
or branch any node: generating from an older snapshot rewinds or replays the cache, and an interrupted run leaves
every earlier snapshot valid.
"""

from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass

import torch

from ..causal_forcing_core.errors import InvalidInputError
from ..causal_forcing_core.prompt import Prompt
from ..causal_forcing_core.stream import Stream, cache_frames_for
from .live_preview import ChunkReporter
from .payloads import StreamHandle

logger = logging.getLogger(__name__)


def generate(
    handle: StreamHandle, segments: list[tuple[int, Prompt | None]], recache: bool, node_id: str | None
) -> tuple[StreamHandle, ChunkReporter]:
    """Generate each segment's chunks under its prompt (None: keep the current one), with one progress bar and
    a preview per chunk; returns the new handle and the reporter.

    When the run is interrupted after some chunks, the snapshot reached is kept for ``node_id``: queueing the
    same request again (same input snapshot, prompts, lengths and re-cache) resumes from there, giving the same
    video as an uninterrupted run (chunk k's noise depends only on (seed, k)).
    """
    total = sum(n for n, _ in segments)
    if total < 1 or any(n < 1 for n, _ in segments):
        raise InvalidInputError(f"Generate at least one chunk (got {[n for n, _ in segments]}).")
    handle.check_length(total)
    request = _Request(handle.stream, tuple(segments), recache)
    stream = _resumes.take(node_id, request) or handle.stream
    done = stream.num_chunks - handle.stream.num_chunks
    if done:
        logger.info("Node %s resumes its interrupted run at chunk %d of %d", node_id, done + 1, total)
    settings = stream.settings
    frames_held = cache_frames_for(settings.sampler, settings.window_frames, handle.model.max_frames)
    handle.model.prepare(handle.model.cache_bytes(settings.latent_height, settings.latent_width, frames_held))
    reporter = ChunkReporter(handle.model, stream, total - done, node_id)
    reached = [stream]

    def on_chunk(snapshot: Stream) -> None:
        reached[0] = snapshot
        reporter.on_chunk(snapshot)

    offset = 0
    try:
        for num_chunks, prompt in segments:
            skip = min(max(done - offset, 0), num_chunks)  # chunks of this segment made before an interruption
            offset += num_chunks
            if skip == num_chunks:
                continue
            if skip or (prompt is not None and same_prompt(prompt, stream.prompt)):
                prompt = None  # already switched (or no switch at all)
            stream = stream.generate(
                num_chunks - skip, prompt=prompt, recache=recache and stream.num_frames > 0,
                on_step=reporter.on_step, on_chunk=on_chunk,
            )
    except BaseException:
        if reached[0].num_chunks > handle.stream.num_chunks:
            _resumes.keep(node_id, request, reached[0])
        raise
    return handle.with_stream(stream), reporter


@dataclass(frozen=True, eq=False)
class _Request:
    """What a Generate node was asked to do: equal requests continue each other's interrupted runs."""

    start: Stream
    segments: tuple[tuple[int, Prompt | None], ...]
    recache: bool

    def same_as(self, other: "_Request") -> bool:
        if other.start is not self.start or other.recache != self.recache or len(other.segments) != len(self.segments):
            return False
        for (n_a, p_a), (n_b, p_b) in zip(self.segments, other.segments):
            if n_a != n_b or (p_a is None) != (p_b is None) or (p_a is not None and not same_prompt(p_a, p_b)):
                return False
        return True


class _Resumes:
    """The snapshot each node reached when its last run was interrupted (one per node id).

    An entry lives only as long as ComfyUI keeps the snapshot its request started from: once that is dropped (an
    upstream node changed, the graph was cleared) nobody can ask for the same request again, and the entry, which
    holds the stream's KV cache, goes too.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: dict[str, tuple[weakref.ref, _Request, Stream]] = {}

    def keep(self, node_id: str | None, request: _Request, reached: Stream) -> None:
        if node_id is None:
            return
        ref = weakref.ref(request.start, self._forget)
        light = _Request(reached, request.segments, request.recache)  # holds no strong reference to the start
        with self._lock:
            self._kept[node_id] = (ref, light, reached)

    def _forget(self, ref: weakref.ref) -> None:
        with self._lock:
            for node_id in [k for k, (r, _, _) in self._kept.items() if r is ref]:
                del self._kept[node_id]

    def take(self, node_id: str | None, request: _Request) -> Stream | None:
        """The kept snapshot when ``request`` equals the interrupted one; either way the node's entry is dropped."""
        if node_id is None:
            return None
        with self._lock:
            kept = self._kept.pop(node_id, None)
        if kept is None or kept[0]() is not request.start:
            return None
        ref, light, reached = kept
        return reached if _Request(request.start, light.segments, light.recache).same_as(request) else None

    def __len__(self) -> int:
        return len(self._kept)


_resumes = _Resumes()


def same_prompt(a: Prompt, b: Prompt) -> bool:
    """Same embeddings (a re-run of CLIPTextEncode gives a new tensor with the same values: not a switch)."""
    return a is b or (a.embeds.shape == b.embeds.shape and torch.equal(a.embeds, b.embeds.to(a.embeds.device)))
