"""Rolling Forcing: the long-video sampler of the ``longvideo`` student (reference §7).

Instead of denoising one block through all its steps and moving on, the sampler keeps a window of ``S`` blocks
(``S`` = the number of denoising steps, 4) at staggered noise levels and takes **one** DiT forward over the whole
window per step of the window: the newest block enters as fresh noise at the first timestep, every block moves one
timestep down per window step, and the oldest block leaves the window finished. Block ``b`` is therefore at its
step ``w - b`` in window ``w``, and window ``w`` holds blocks ``max(0, w - S + 1) .. min(num_blocks - 1, w)`` (the
first windows fill up, the last ones drain). Inside the window attention is full (no mask).

After every window step the oldest block's x0 goes through the DiT once more at the context timestep (0), and its
K/V are written to its slot of a clean cache (:class:`RollingCache`). A window attends to:

- the *anchor*: the first block of the video, kept in the cache's first slot and rotated so that it sits just
  before the working cache (the reference stores it un-rotated and rotates it on the fly; here it is stored at its
  own positions and turned by the frame offset, the same rotation);
- the *working cache*: the newest clean blocks before the window, as many as fit in ``max_attention_frames``
  (21, the length the students were trained on) after the anchor and the window itself;
- the window.

The cache-refresh pass of a block attends to the last ``max_attention_frames`` frames of the clean cache, itself
included. The cache holds ``capacity_frames`` (24) frames; when a new block does not fit, the oldest non-anchor
blocks are shifted out. One new block costs one forward over ``S * n`` frames plus one over ``n`` frames, instead of
``S + 1`` forwards over ``n`` frames.

Noise: block ``b`` draws its initial noise and its ``S - 1`` re-noise tensors from the noise source as chunk ``b``
(the same draws as the plain sampler), so a video is fixed by ``(seed, block)``.

In a stream (preset ``rolling-4step``) generation is *pipelined*: making chunk ``k`` runs the window that finishes
it (the first chunk fills the window first), and the blocks still in the window travel with the snapshot as its
*front* (:class:`InFlight`), so chunk ``k`` is the same however the work is split and wherever the stream stops.
The official pipeline ends a video of ``N`` blocks by draining the window (the last windows take no new block);
its first ``N - S + 1`` blocks are the pipelined ones, and :meth:`RollingSampler.drain` (:meth:`.stream.Stream.finish`
in a stream) finishes the rest the same way.

Latents are [B, F, C, h, w]; :func:`rolling_sample` (whole videos, drained) reproduces the official ``long_video``
pipeline (``inference_rolling_forcing``) to float32 rounding (``tests/test_rolling.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .config import SamplerConfig
from .dit import CausalWanModel
from .errors import InvalidInputError, StreamStateError
from .geometry import WAN21
from .kv_cache import FrameBuffers, TextKV, shift_out
from .noise import NoiseSource
from .rope import apply_rope
from .sampling import chunk_timesteps, dit_flow
from .scheduler import FlowMatchScheduler

#: on_window(done, total, x0): after each window step of a chunk, with the x0 of the window's oldest block
WindowCallback = Callable[[int, int, torch.Tensor], None]


def rolling_cache_frames(block_frames: int, max_attention_frames: int = WAN21.trained_latent_frames) -> int:
    """Latent frames a :class:`RollingCache` holds by default: the attention span plus one block (24 for 3-frame
    blocks, as the official pipeline allocates)."""
    return max_attention_frames + block_frames


class RollingCache(FrameBuffers):
    """The clean K/V cache of Rolling Forcing, bookkept in frames: an :class:`.kv_cache.AttentionCache` for the
    window passes, and the :class:`.kv_cache.BlockCache`, rewind and the mark / restore / reset / clone of
    :class:`.kv_cache.FrameBuffers` (shared with :class:`.kv_cache.KVCache`) that a stream's storage uses to keep it
    in line with a history.

    ``global_end``: the absolute frame where the newest reserved block ends; ``local_end``: frames of valid data in
    the buffer. :meth:`open_window` starts a denoising pass over a window, :meth:`open_refresh` (or
    :meth:`open_block`) the clean pass of the window's oldest block; both reserve that block's slot first,
    shifting old blocks out when it does not fit (destructive: counted in ``destructive_writes``).
    """

    def __init__(
        self,
        model: CausalWanModel,
        batch: int,
        frame_tokens: int,
        block_frames: int,
        *,
        max_attention_frames: int = WAN21.trained_latent_frames,
        capacity_frames: int | None = None,
    ) -> None:
        cfg = model.config
        self.model = model
        self.frame_tokens, self.block_frames = frame_tokens, block_frames
        self.max_attention_frames = max_attention_frames
        capacity = capacity_frames or rolling_cache_frames(block_frames, max_attention_frames)
        if capacity < 2 * block_frames:
            raise InvalidInputError(f"A rolling cache of {capacity} frames cannot hold the anchor and a "
                                    f"{block_frames}-frame block.")
        shape = (cfg.num_layers, batch, capacity * frame_tokens, cfg.num_heads, cfg.head_dim)
        self.k = torch.zeros(shape, device=model.device, dtype=model.compute_dtype)
        self.v = torch.zeros_like(self.k)
        self.global_end = 0
        self.local_end = 0
        self.destructive_writes = 0
        self._slot = 0  # first frame (in the buffer) of the reserved block's slot
        self._window: tuple[int, int] | None = None  # (start frame, frames) of the window pass; None: refresh pass
        self._new: tuple[torch.Tensor, torch.Tensor] | None = None

    # ------------------------------------------------------------------------------------------- passes
    def open_window(self, start_frame: int, num_frames: int) -> None:
        """A denoising pass over the ``num_frames`` window frames from ``start_frame`` (its first block's slot is
        reserved; the pass itself writes nothing the cache keeps)."""
        self._reserve(start_frame)
        self._window = (start_frame, num_frames)

    def open_refresh(self, start_frame: int) -> None:
        """The clean pass of the block at ``start_frame``: its K/V fill the block's slot."""
        self._reserve(start_frame)
        self._window = None

    def open_block(self, start_frame: int, num_frames: int) -> None:
        """:class:`.kv_cache.BlockCache`: the clean pass of the block at ``start_frame`` (how a stream replays a
        committed chunk into the cache)."""
        if num_frames != self.block_frames:
            raise StreamStateError(f"A rolling cache writes {self.block_frames}-frame blocks, not {num_frames}.")
        self.open_refresh(start_frame)

    def commit_block(self) -> None:
        """:class:`.kv_cache.BlockCache`: the pointers moved when the block's slot was reserved."""
        self._new = None

    def open_recache(self, mode: object = None) -> tuple[int, int] | None:
        raise InvalidInputError("Re-cache on a prompt switch is not available with Rolling Forcing yet; switch "
                                "without re-cache (the window carries the new prompt within 4 chunks).")

    def _reserve(self, start_frame: int) -> None:
        n, end = self.block_frames, start_frame + self.block_frames
        new = end - self.global_end
        local_end = self.local_end + new
        if new > 0 and local_end > self.capacity_frames:  # shift the oldest non-anchor blocks out
            evicted = local_end - self.capacity_frames
            shift_out(self.k, self.v, n, evicted, self.local_end - evicted - n, self.frame_tokens)
            local_end -= evicted
            self.destructive_writes += 1
        if new > 0:
            self.global_end, self.local_end = end, local_end
        self._slot = local_end - n

    # ------------------------------------------------------------------------------------------- state
    def _close_pass(self) -> None:
        self._new = None

    def rewind(self, num_frames: int) -> None:
        """Forget frames >= ``num_frames`` (only while no block was shifted out after them)."""
        drop = self.global_end - num_frames
        if not 0 <= num_frames <= self.global_end or drop > self.local_end:
            raise StreamStateError(f"Cannot rewind a rolling cache holding {self.global_end} frames to {num_frames}.")
        self.local_end -= drop
        self.global_end = num_frames

    # ------------------------------------------------------------------------------------------- AttentionCache
    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        self._new = (k, v)
        if self._window is None:  # the clean pass: the block's slot takes its K/V
            t = self.frame_tokens
            start, end = self._slot * t, (self._slot + self.block_frames) * t
            self.k[layer, :, start:end] = k
            self.v[layer, :, start:end] = v

    def keys_values(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        assert self._new is not None, "write() comes first"
        k_new, v_new = self._new
        if self._slot == 0:  # the anchor block's own passes: only themselves
            return k_new, v_new
        t, n = self.frame_tokens, self.block_frames
        if self._window is None:  # refresh: the newest max_attention frames of the cache, this block included
            start = max(0, self._slot + n - self.max_attention_frames)
            return self.k[layer, :, start * t : (self._slot + n) * t], self.v[layer, :, start * t : (self._slot + n) * t]
        window_start, window_frames = self._window
        working = max(n, self._slot - (self.max_attention_frames - window_frames - n))
        working_frames = self._slot - working
        anchor_k = self._anchor_at(layer, window_start - working_frames - n)
        keys = torch.cat([anchor_k, self.k[layer, :, working * t : self._slot * t], k_new], dim=1)
        values = torch.cat([self.v[layer, :, : n * t], self.v[layer, :, working * t : self._slot * t], v_new], dim=1)
        return keys, values

    def _anchor_at(self, layer: int, start_frame: int) -> torch.Tensor:
        """The anchor's keys [B, n*T, H, D] as if its first frame were ``start_frame`` (stored at frame 0: only
        the frame part of the rotation changes, by ``start_frame``: the rotation of a one-token grid there, which
        every layer of the pass takes from the model's table cache)."""
        anchor = self.k[layer, :, : self.block_frames * self.frame_tokens]
        return apply_rope(anchor, self.model.rope(start_frame, (1, 1, 1)))


@dataclass(frozen=True, eq=False)
class InFlight:
    """A block inside the rolling window between two window steps: its index, its input for its next step
    ``step`` (1 .. S-1) [B, n, C, h, w], and its re-noise tensors [B*n, C, h, w] for the steps still to come."""

    block: int
    x: torch.Tensor
    step: int
    renoise: tuple[torch.Tensor, ...]


def check_rolling_settings(
    sampler: SamplerConfig, window_frames: int | None, sink_frames: int, has_context: bool
) -> None:
    """Raise :class:`InvalidInputError` when a Rolling Forcing sampler is asked for a local window, a sink or a
    start image / video (it keeps its own window and starts from noise); nothing to check for other samplers."""
    if sampler.rolling and (window_frames or sink_frames or has_context):
        raise InvalidInputError(
            f"{sampler.name} keeps its own window ({sampler.num_steps} blocks, an anchor and "
            f"{WAN21.trained_latent_frames} frames of attention) and starts from noise: leave the window and sink "
            "at 0 and give no start image or video."
        )


def window_blocks(window: int, num_blocks: int, steps: int) -> range:
    """The blocks of window ``window`` of a drained video of ``num_blocks``: ``max(0, window - steps + 1) ..
    min(num_blocks - 1, window)``."""
    return range(max(0, window - steps + 1), min(num_blocks - 1, window) + 1)


class RollingSampler:
    """One model's Rolling Forcing steps over a :class:`RollingCache` (the stream and :func:`rolling_sample` use
    it): :meth:`advance` makes the next finished block of a pipelined video, :meth:`drain` finishes the blocks
    still in the window without taking new ones."""

    def __init__(
        self, model: CausalWanModel, cache: RollingCache, sampler: SamplerConfig, scheduler: FlowMatchScheduler,
    ) -> None:
        if not sampler.rolling:
            raise InvalidInputError(f"{sampler.name} is not a Rolling Forcing preset.")
        self.model, self.cache, self.sampler, self.scheduler = model, cache, sampler, scheduler
        self.timesteps = chunk_timesteps(sampler, scheduler, 0)

    @property
    def steps(self) -> int:
        return len(self.timesteps)

    def advance(
        self, text: TextKV, noise: NoiseSource, front: tuple[InFlight, ...], *, chunk_index: int,
        shape: tuple[int, ...], on_window: WindowCallback | None = None,
    ) -> tuple[torch.Tensor, tuple[InFlight, ...]]:
        """Chunk ``chunk_index``'s x0 [B, n, C, h, w] and the new front: window steps, each taking the next block
        in as fresh noise, until the oldest block in the window is finished (one step, or ``S`` to fill the window
        for chunk 0). ``front`` is the window after chunk ``chunk_index - 1``."""
        expected = tuple(range(chunk_index, chunk_index + len(front)))
        if tuple(f.block for f in front) != expected or (chunk_index > 0 and len(front) != self.steps - 1):
            raise StreamStateError(f"The rolling window {[f.block for f in front]} does not follow chunk "
                                   f"{chunk_index - 1}; regenerate from an earlier snapshot.")
        total = self.steps if chunk_index == 0 else 1
        for done in range(total):
            entering = chunk_index + len(front)
            first, renoise = noise.chunk_noise(entering, shape, self.steps - 1)
            window = (*front, InFlight(entering, first.to(self.model.device, self.model.compute_dtype), 0,
                                       tuple(renoise)))
            finished, front = self._window_step(text, window)
            if on_window is not None:
                on_window(done + 1, total, finished if finished is not None else front[0].x)
        assert finished is not None
        return finished, front

    def drain_step(self, text: TextKV, front: tuple[InFlight, ...]) -> tuple[torch.Tensor, tuple[InFlight, ...]]:
        """One window step over ``front`` that takes no new block (the official end of a video): the x0 of the
        block it finishes and the blocks left."""
        finished, front = self._window_step(text, front)
        if finished is None:
            raise StreamStateError("The oldest block of this rolling window is not at its last step.")
        return finished, front

    def drain(self, text: TextKV, front: tuple[InFlight, ...]) -> list[torch.Tensor]:
        """Finish every block of ``front`` (:meth:`drain_step` until none is left); their x0 in order."""
        out = []
        while front:
            finished, front = self.drain_step(text, front)
            out.append(finished)
        return out

    def _window_step(
        self, text: TextKV, window: tuple[InFlight, ...]
    ) -> tuple[torch.Tensor | None, tuple[InFlight, ...]]:
        """One forward over the window's blocks at their steps, then the oldest block's clean pass; the finished
        block's x0 (None when the oldest is not at its last step yet) and the blocks that stay."""
        model, scheduler, ts = self.model, self.scheduler, self.timesteps
        n = self.cache.block_frames
        x = torch.cat([f.x.to(model.device, model.compute_dtype) for f in window], dim=1)
        b = x.shape[0]
        t = torch.cat([ts[f.step].repeat(n) for f in window]).to(torch.float32).expand(b, -1)
        start = window[0].block * n
        self.cache.open_window(start, x.shape[1])
        flow = dit_flow(model, x, t, text, cache=self.cache, start_frame=start)
        x0 = scheduler.flow_to_x0(x.flatten(0, 1), flow.flatten(0, 1), t.flatten()).view_as(x)
        finished, stay = None, []
        for i, f in enumerate(window):
            x0_f = x0[:, i * n : (i + 1) * n]
            if f.step == self.steps - 1:
                finished = x0_f
                continue
            next_t = torch.full((b * n,), float(ts[f.step + 1]), dtype=torch.float32)
            eps = f.renoise[0].to(x0_f.device, x0_f.dtype)
            x_next = scheduler.add_noise(x0_f.flatten(0, 1), eps, next_t).view_as(x0_f)
            stay.append(InFlight(f.block, x_next, f.step + 1, f.renoise[1:]))
        self.cache.open_refresh(start)
        clean_t = torch.full((b, n), float(self.sampler.context_noise), dtype=torch.float32)
        model.write_cache(x0[:, :n].permute(0, 2, 1, 3, 4), clean_t, text, self.cache, start_frame=start)
        self.cache.commit_block()
        return finished, tuple(stay)


@torch.no_grad()
def rolling_sample(
    model: CausalWanModel,
    text: TextKV,
    sampler: SamplerConfig,
    scheduler: FlowMatchScheduler,
    noise: NoiseSource,
    *,
    num_blocks: int,
    block_shape: tuple[int, ...],
    max_attention_frames: int = WAN21.trained_latent_frames,
    capacity_frames: int | None = None,
) -> torch.Tensor:
    """A whole video of ``num_blocks`` (>= the number of steps) blocks of ``block_shape`` = [B, n, C, h, w], the
    official way: pipelined, then drained; returns its x0 [B, num_blocks * n, C, h, w]."""
    steps = sampler.num_steps
    if num_blocks < steps:
        raise InvalidInputError(f"A rolling video needs at least {steps} blocks (one window), got {num_blocks}.")
    b, n, c, h, w = block_shape
    cache = RollingCache(model, b, model.config.tokens_per_frame(h, w), n,
                         max_attention_frames=max_attention_frames, capacity_frames=capacity_frames)
    rolling = RollingSampler(model, cache, sampler, scheduler)
    front: tuple[InFlight, ...] = ()
    blocks = []
    for k in range(num_blocks - steps + 1):
        x0, front = rolling.advance(text, noise, front, chunk_index=k, shape=block_shape)
        blocks.append(x0)
    blocks += rolling.drain(text, front)
    return torch.cat(blocks, dim=1)
