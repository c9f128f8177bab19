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

Latents are [B, F, C, h, w]; :func:`rolling_sample` returns the whole video's x0, reproducing the official
``long_video`` pipeline (``inference_rolling_forcing``) to float32 rounding (``tests/test_rolling.py``).
"""

from __future__ import annotations

import torch

from .config import SamplerConfig
from .dit import CausalWanModel
from .errors import InvalidInputError
from .geometry import WAN21
from .kv_cache import TextKV
from .noise import NoiseSource
from .rope import apply_rope, rope_table
from .sampling import chunk_timesteps, dit_flow
from .scheduler import FlowMatchScheduler


class RollingCache:
    """The clean K/V cache of Rolling Forcing (an :class:`.kv_cache.AttentionCache`), bookkept in frames.

    ``global_end``: the absolute frame where the newest reserved block ends; ``local_end``: frames of valid data in
    the buffer. :meth:`open_window` starts a denoising pass over a window, :meth:`open_refresh` the clean pass of
    the window's oldest block; both reserve that block's slot first (shifting old blocks out when it does not fit).
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
        self.capacity_frames = capacity_frames or max_attention_frames + block_frames
        if self.capacity_frames < 2 * block_frames:
            raise InvalidInputError(f"A rolling cache of {self.capacity_frames} frames cannot hold the anchor and a "
                                    f"{block_frames}-frame block.")
        shape = (cfg.num_layers, batch, self.capacity_frames * frame_tokens, cfg.num_heads, cfg.head_dim)
        self.k = torch.zeros(shape, device=model.device, dtype=model.compute_dtype)
        self.v = torch.zeros_like(self.k)
        self.global_end = 0
        self.local_end = 0
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

    def _reserve(self, start_frame: int) -> None:
        n, end = self.block_frames, start_frame + self.block_frames
        new = end - self.global_end
        local_end = self.local_end + new
        if new > 0 and local_end > self.capacity_frames:  # shift the oldest non-anchor blocks out
            evicted = local_end - self.capacity_frames
            kept = self.local_end - evicted - n
            t = self.frame_tokens
            for buf in (self.k, self.v):
                buf[:, :, n * t : (n + kept) * t] = buf[:, :, (n + evicted) * t : (n + evicted + kept) * t].clone()
            local_end -= evicted
        if new > 0:
            self.global_end, self.local_end = end, local_end
        self._slot = local_end - n

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
        the frame part of the rotation changes, by ``start_frame``)."""
        anchor = self.k[layer, :, : self.block_frames * self.frame_tokens]
        dtype = self.model.rope_dtype or torch.promote_types(self.model.compute_dtype, torch.float32)
        shift = rope_table(self.model.config.head_dim, start_frame, (1, 1, 1), device=anchor.device, dtype=dtype)
        return apply_rope(anchor, shift)


def window_blocks(window: int, num_blocks: int, steps: int) -> range:
    """The blocks of window ``window``: ``max(0, window - steps + 1) .. min(num_blocks - 1, window)``."""
    return range(max(0, window - steps + 1), min(num_blocks - 1, window) + 1)


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
    """A whole video of ``num_blocks`` blocks of ``block_shape`` = [B, n, C, h, w] by Rolling Forcing (see the
    module docstring); returns its x0 [B, num_blocks * n, C, h, w]."""
    if sampler.first_chunk_steps:
        raise InvalidInputError(f"Rolling Forcing uses one step list for every block; {sampler.name} has its own "
                                "for the first chunk.")
    if num_blocks < 1:
        raise InvalidInputError(f"A rolling video needs at least one block, got {num_blocks}.")
    b, n, c, h, w = block_shape
    timesteps = chunk_timesteps(sampler, scheduler, 0)
    steps = len(timesteps)
    frame_tokens = model.config.tokens_per_frame(h, w)
    cache = RollingCache(model, b, frame_tokens, n, max_attention_frames=max_attention_frames,
                         capacity_frames=capacity_frames)
    out = torch.empty((b, num_blocks * n, c, h, w), device=model.device, dtype=model.compute_dtype)
    current: dict[int, torch.Tensor] = {}  # block -> its input at its next step
    renoise: dict[int, list[torch.Tensor]] = {}
    for window in range(num_blocks + steps - 1):
        blocks = window_blocks(window, num_blocks, steps)
        if window < num_blocks:  # the newest block enters as fresh noise
            first, renoise[window] = noise.chunk_noise(window, block_shape, steps - 1)
            current[window] = first.to(model.device, model.compute_dtype)
        x = torch.cat([current[k] for k in blocks], dim=1)
        t = torch.cat([timesteps[window - k].repeat(n) for k in blocks]).to(torch.float32).expand(b, -1)
        start = blocks[0] * n
        cache.open_window(start, x.shape[1])
        flow = dit_flow(model, x, t, text, cache=cache, start_frame=start)
        x0 = scheduler.flow_to_x0(x.flatten(0, 1), flow.flatten(0, 1), t.flatten()).view_as(x)
        for i, k in enumerate(blocks):
            step, x0_k = window - k, x0[:, i * n : (i + 1) * n]
            if step == steps - 1:
                out[:, k * n : (k + 1) * n] = x0_k
                del current[k], renoise[k]
            else:
                next_t = torch.full((b * n,), float(timesteps[step + 1]), dtype=torch.float32)
                eps = renoise[k][step].to(x0_k.device, x0_k.dtype)
                current[k] = scheduler.add_noise(x0_k.flatten(0, 1), eps, next_t).view_as(x0_k)
        cache.open_refresh(start)
        clean_t = torch.full((b, n), float(sampler.context_noise), dtype=torch.float32)
        model.write_cache(x0[:, :n].permute(0, 2, 1, 3, 4), clean_t, text, cache, start_frame=start)
    return out
