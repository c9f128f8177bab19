"""The one few-step sampler of Causal Forcing students, block by block over a cache of earlier blocks.

Every caller uses :func:`sample_block`: the stream (and through it the live loop, the nodes and the command line)
with the inference :class:`.kv_cache.KVCache`, and the training rollouts (:mod:`.training.rollout`) with their
detached prefix cache, gradients at an exit step and re-noised context. One block:

1. draw its noise from the noise source (chunk ``k`` -> generator ``(seed, k)``);
2. for each timestep of the chunk's schedule: predict the flow, take x0 = x_t - sigma * flow, and re-noise x0 to
   the next timestep with fresh noise (the Self Forcing / Causal Forcing few-step sampler, reference §2.3);
3. the cache-refresh pass: the clean x0 (at the sampler's context timestep) goes through the DiT once more, so the
   cache holds clean K/V for the blocks that follow; then the block is committed to the cache.

Latents here are [B, F, C, h, w] (frames before channels), as in the stream; :func:`dit_flow` permutes for the DiT.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .config import SamplerConfig
from .dit import CausalWanModel
from .kv_cache import AttentionCache, BlockCache, TextKV
from .noise import NoiseSource
from .scheduler import FlowMatchScheduler

#: on_step(step, steps, x0): after each denoising step, with that step's x0 prediction [B, n, C, h, w]
StepCallback = Callable[[int, int, torch.Tensor], None]


def dit_flow(
    model: CausalWanModel,
    x: torch.Tensor,
    timestep: torch.Tensor,
    text: TextKV | torch.Tensor,
    *,
    cache: AttentionCache | None = None,
    start_frame: int = 0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Flow [B, F, C, h, w] of latents x [B, F, C, h, w] at per-frame timestep [B, F]."""
    flow = model(x.permute(0, 2, 1, 3, 4), timestep, text, cache=cache, start_frame=start_frame, mask=mask)
    return flow.permute(0, 2, 1, 3, 4)


def chunk_timesteps(sampler: SamplerConfig, scheduler: FlowMatchScheduler, chunk_index: int) -> torch.Tensor:
    """The model timesteps (float32) of chunk ``chunk_index``: its raw steps, warped through the shifted
    schedule when the sampler says so (750 -> 937.5 at shift 5)."""
    steps = sampler.steps_for_chunk(chunk_index)
    if sampler.warp:
        return scheduler.warp(steps)
    return torch.tensor([float(s) for s in steps])


def cache_block(
    model: CausalWanModel,
    cache: BlockCache,
    latents: torch.Tensor,
    timestep: float,
    text: TextKV,
    start_frame: int,
    *,
    opened: bool = False,
) -> None:
    """Write the K/V of clean ``latents`` [B, n, C, h, w] at ``timestep`` as the block at ``start_frame`` and
    commit it (``opened``: the block is already open, as after its denoising steps)."""
    b, n = latents.shape[:2]
    if not opened:
        cache.open_block(start_frame, n)
    t = torch.full((b, n), float(timestep), dtype=torch.float32)
    model.write_cache(latents.permute(0, 2, 1, 3, 4), t, text, cache, start_frame=start_frame)
    cache.commit_block()


def sample_block(
    model: CausalWanModel,
    cache: BlockCache,
    text: TextKV,
    sampler: SamplerConfig,
    scheduler: FlowMatchScheduler,
    noise: NoiseSource,
    *,
    chunk_index: int,
    start_frame: int,
    shape: Sequence[int],
    exit_step: int | None = None,
    grad: bool = False,
    on_step: StepCallback | None = None,
    context_noise: torch.Generator | None = None,
) -> torch.Tensor:
    """Denoise the block of ``shape`` = [B, n, C, h, w] at absolute frame ``start_frame`` (chunk
    ``chunk_index`` of the stream: its noise and its step list), commit its clean K/V to ``cache`` and return
    its x0 [B, n, C, h, w].

    ``exit_step``: the step whose x0 is the block's output (None = the last; later steps are not run, their
    noise is still drawn). ``grad``: compute that exit step with gradients (the past stays detached).
    ``on_step(step, steps, x0)`` runs after each step and may raise to interrupt (the block is then not
    committed). ``context_noise``: re-noise the clean x0 to t = 0 (sigma ~0.005) with this generator before it is
    cached, as the reference does in training; None caches x0 exactly, as inference does.
    """
    timesteps = chunk_timesteps(sampler, scheduler, chunk_index)
    last = len(timesteps) - 1 if exit_step is None else min(int(exit_step), len(timesteps) - 1)
    b, n = shape[0], shape[1]
    x, renoise = noise.chunk_noise(chunk_index, shape, len(timesteps) - 1)
    x = x.to(model.device, model.compute_dtype)
    cache.open_block(start_frame, n)
    for i in range(last + 1):
        t = float(timesteps[i])
        with torch.set_grad_enabled(grad and i == last):
            flow = dit_flow(model, x, torch.full((b, n), t, dtype=torch.float32), text, cache=cache, start_frame=start_frame)
            x0 = scheduler.flow_to_x0(x.flatten(0, 1), flow.flatten(0, 1), torch.full((b * n,), t, dtype=torch.float32)).view_as(x)
        if i < last:
            next_t = torch.full((b * n,), float(timesteps[i + 1]), dtype=torch.float32)
            x = scheduler.add_noise(x0.detach().flatten(0, 1), renoise[i].to(x0.device, x0.dtype), next_t).view_as(x)
        if on_step is not None:
            on_step(i + 1, len(timesteps), x0)
    clean = x0.detach()
    if context_noise is not None:
        eps = torch.randn(clean.shape, generator=context_noise).to(clean)
        clean = scheduler.add_noise(clean.flatten(0, 1), eps.flatten(0, 1), torch.zeros(b * n)).view_as(clean)
    with torch.no_grad():
        cache_block(model, cache, clean, sampler.context_noise, text, start_frame, opened=True)
    return x0
