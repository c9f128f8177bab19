"""Autoregressive rollouts for training: the student's few-step sampler (the stream's own,
:func:`..sampling.sample_block`) with gradients where DMD wants them, and the AR diffusion teacher's many-step
Euler sampler with CFG.

Both run block by block like inference: each block attends to the K/V of every earlier block's clean latents plus
its own tokens. The earlier K/V live in a :class:`DetachedPrefixCache`, which never writes in place, so a forward
pass that needs gradients keeps them for its own block while the past stays detached (reference §8.4: gradients
flow only through each block's exit step, never through the cache).

Latents here are [B, F, C, h, w] (frames before channels), as in the stream; :func:`dit_flow` permutes for the DiT.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..config import SamplerConfig
from ..dit import CausalWanModel
from ..errors import StreamStateError
from ..kv_cache import TextKV
from ..noise import NoiseSource
from ..sampling import cache_block, dit_flow, sample_block
from ..scheduler import FlowMatchScheduler

#: sigma of the nearest table entry to t = 0 at shift 5 (~0.005): the reference's "clean" training context
TRAIN_CONTEXT_TIMESTEP = 0.0


def dit_flow_teacher_forcing(
    model: CausalWanModel, noisy: torch.Tensor, timestep: torch.Tensor, clean: torch.Tensor,
    text: TextKV | torch.Tensor, frames_per_block: int,
) -> torch.Tensor:
    """Teacher-forced flow [B, F, C, h, w] of ``noisy`` given the clean context ``clean`` (both [B, F, C, h, w])."""
    flow = model.forward_teacher_forcing(
        noisy.permute(0, 2, 1, 3, 4), timestep, clean.permute(0, 2, 1, 3, 4), text, frames_per_block
    )
    return flow.permute(0, 2, 1, 3, 4)


class DetachedPrefixCache:
    """The training rollouts' :class:`..kv_cache.BlockCache`: the open block's K/V stay in the autograd graph
    when computed with grad, earlier blocks are kept detached, and nothing is written in place.

    ``write`` keeps the open block's K/V; ``keys_values`` returns [detached past | open block];
    :meth:`commit_block` appends the open block (detached) to the past, which is what the cache-refresh pass does
    in inference.
    """

    def __init__(self, num_layers: int) -> None:
        self.past: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * num_layers
        self.current: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * num_layers
        self.frames = 0
        self._open: tuple[int, int] | None = None

    def open_block(self, start_frame: int, num_frames: int) -> None:
        if start_frame != self.frames:
            raise StreamStateError(
                f"The prefix cache holds frames up to {self.frames}; a block cannot start at frame {start_frame}."
            )
        self._open = (start_frame, num_frames)
        self.current = [None] * len(self.past)

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        self.current[layer] = (k, v)

    def keys_values(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.current[layer]  # type: ignore[misc]
        past = self.past[layer]
        if past is None:
            return k, v
        return torch.cat([past[0], k], dim=1), torch.cat([past[1], v], dim=1)

    def commit_block(self) -> None:
        if self._open is None or any(cur is None for cur in self.current):
            raise StreamStateError("commit_block() before every layer of the open block was written")
        for i, cur in enumerate(self.current):
            k, v = cur[0].detach(), cur[1].detach()  # type: ignore[index]
            past = self.past[i]
            self.past[i] = (k, v) if past is None else (torch.cat([past[0], k], 1), torch.cat([past[1], v], 1))
            self.current[i] = None
        self.frames += self._open[1]
        self._open = None


def _blocks(num_frames: int, frames_per_block: int) -> list[tuple[int, int]]:
    return [(s, min(s + frames_per_block, num_frames)) for s in range(0, num_frames, frames_per_block)]


def student_rollout(
    model: CausalWanModel,
    text: TextKV,
    sampler: SamplerConfig,
    noise: NoiseSource,
    *,
    batch: int,
    num_frames: int,
    latent_size: tuple[int, int],
    scheduler: FlowMatchScheduler,
    exit_steps: Sequence[int] | None = None,
    grad: bool = False,
    context_noise: torch.Generator | None = None,
) -> torch.Tensor:
    """Generate [B, num_frames, C, h, w] with the stream's few-step sampler, block by block.

    ``exit_steps[b]``: index of the step at which block b stops (its x0 there is the block's output); None = run
    every step, as inference does. With ``grad``, only each block's exit step is computed with gradients.
    ``context_noise``: when given, the clean latents are re-noised to t = 0 (sigma ~0.005) with this generator
    before they are cached, as the reference does in training; None caches them exactly, as inference does.
    With ``exit_steps=None``, ``grad=False`` and no context noise this is the stream's result exactly (same
    noise from ``noise``, same sampler).
    """
    cache = DetachedPrefixCache(model.config.num_layers)
    outputs = []
    for b, (s, e) in enumerate(_blocks(num_frames, sampler.frames_per_block)):
        outputs.append(sample_block(
            model, cache, text, sampler, scheduler, noise, chunk_index=b, start_frame=s,
            shape=(batch, e - s, model.config.in_dim, *latent_size),
            exit_step=None if exit_steps is None else exit_steps[b], grad=grad, context_noise=context_noise,
        ))
    return torch.cat(outputs, dim=1)


def euler_timesteps(num_steps: int, scheduler: FlowMatchScheduler) -> torch.Tensor:
    """num_steps + 1 model timesteps from 1000 to 0: unshifted sigmas linspace(1, 0), shifted (float32).

    With 48 steps, indices 0/12/24/36 are t = 1000 / 937.5 / 833.3 / 625, the warped 4-step list.
    """
    u = torch.linspace(1.0, 0.0, num_steps + 1)
    s = scheduler.shift
    return 1000.0 * s * u / (1 + (s - 1) * u)


def sigma_from_timestep(t: torch.Tensor | float) -> torch.Tensor:
    """Exact sigma of a model timestep (t / 1000), for ODE integration between arbitrary times."""
    return torch.as_tensor(t, dtype=torch.float32) / 1000.0


GuidedFlow = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cfg_flow(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance in the ``uncond + scale * (cond - uncond)`` convention."""
    return uncond + scale * (cond - uncond)


@torch.no_grad()
def teacher_rollout(
    model: CausalWanModel,
    text: TextKV,
    uncond: TextKV,
    *,
    noise: torch.Tensor,
    frames_per_block: int,
    num_steps: int,
    guidance: float,
    scheduler: FlowMatchScheduler,
    switch: tuple[TextKV, int, bool] | None = None,
) -> torch.Tensor:
    """Sample the AR diffusion teacher: per block, ``num_steps`` Euler steps of the PF-ODE with CFG
    (``uncond + guidance * (cond - uncond)``), then cache the clean block. noise [B, F, C, h, w] -> latents.

    ``switch`` = (new text, first block, recache): change the prompt from that block on; with recache the cached
    blocks are re-encoded under the new prompt first (LongLive), as the stream does.
    """
    b = noise.shape[0]

    def paired(cond: TextKV) -> TextKV:
        return TextKV(torch.cat([cond.k, uncond.k], dim=1), torch.cat([cond.v, uncond.v], dim=1))

    both = paired(text)
    cache = DetachedPrefixCache(model.config.num_layers)
    times = euler_timesteps(num_steps, scheduler)
    outputs: list[torch.Tensor] = []
    blocks = _blocks(noise.shape[1], frames_per_block)
    for index, (s, e) in enumerate(blocks):
        if switch is not None and index == switch[1]:
            both = paired(switch[0])
            if switch[2]:
                cache = DetachedPrefixCache(model.config.num_layers)
                for (ps, _), clean in zip(blocks, outputs):
                    cache_block(model, cache, torch.cat([clean, clean]), 0.0, both, ps)
        x = noise[:, s:e].to(model.device)
        cache.open_block(s, e - s)
        for i in range(num_steps):
            timestep = torch.full((2 * b, e - s), float(times[i]))
            flow = dit_flow(model, torch.cat([x, x]), timestep, both, cache=cache, start_frame=s)
            v = cfg_flow(flow[:b], flow[b:], guidance)
            x = x + v * (sigma_from_timestep(times[i + 1]) - sigma_from_timestep(times[i]))
        outputs.append(x)
        cache_block(model, cache, torch.cat([x, x]), 0.0, both, s, opened=True)
    return torch.cat(outputs, dim=1)
