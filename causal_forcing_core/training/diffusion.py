"""Diffusion losses: stage 1 (teacher-forcing AR diffusion, reference §8.1) and the bidirectional teacher.

Latents are [B, F, C, h, w]; text is a :class:`..kv_cache.TextKV` (or raw embeddings [B, L, D]).
"""

from __future__ import annotations

import torch

from ..dit import CausalWanModel
from ..kv_cache import TextKV
from ..sampling import dit_flow
from ..scheduler import FlowMatchScheduler
from .rollout import dit_flow_teacher_forcing


def sample_table_timesteps(
    scheduler: FlowMatchScheduler, shape: tuple[int, ...], generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform indices into the shifted 1000-entry table -> (timesteps, sigmas), both float32 ``shape``."""
    index = torch.randint(0, scheduler.num_train_timesteps, shape, generator=generator)
    return scheduler.timesteps[index], scheduler.sigmas[index]


def _weighted_flow_mse(flow: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per-frame MSE [B, F] weighted by ``weight`` [B, F], averaged."""
    per_frame = (flow.float() - target.float()).pow(2).mean(dim=(2, 3, 4))
    return (per_frame * weight).mean()


def teacher_forcing_loss(
    model: CausalWanModel,
    x0: torch.Tensor,
    text: TextKV | torch.Tensor,
    *,
    frames_per_block: int,
    scheduler: FlowMatchScheduler,
    generator: torch.Generator,
) -> torch.Tensor:
    """Stage 1: one timestep per block (constant inside it), noisy frames denoised under the teacher-forcing mask
    with the clean ground truth as context; loss = per-frame MSE(v, eps - x0) weighted by the bell curve.

    x0 [B, F, C, h, w] clean latents.
    """
    b, f = x0.shape[:2]
    blocks = -(-f // frames_per_block)
    t_block, s_block = sample_table_timesteps(scheduler, (b, blocks), generator)
    t = t_block.repeat_interleave(frames_per_block, dim=1)[:, :f]
    sigma = s_block.repeat_interleave(frames_per_block, dim=1)[:, :f].to(x0)
    noise = torch.randn(x0.shape, generator=generator).to(x0)
    s = sigma.view(b, f, 1, 1, 1)
    noisy = (1 - s) * x0 + s * noise
    flow = dit_flow_teacher_forcing(model, noisy, t, x0, text, frames_per_block)
    return _weighted_flow_mse(flow, noise - x0, scheduler.training_weight(t).to(x0))


def bidirectional_loss(
    model: CausalWanModel,
    x0: torch.Tensor,
    text: TextKV | torch.Tensor,
    *,
    scheduler: FlowMatchScheduler,
    generator: torch.Generator,
) -> torch.Tensor:
    """Wan's own objective: one timestep per video, full attention over all frames, weighted flow MSE.

    Trains the bidirectional teacher (the DMD real score) and, from there, the critic's initialisation.
    """
    b, f = x0.shape[:2]
    t, sigma = sample_table_timesteps(scheduler, (b,), generator)
    noise = torch.randn(x0.shape, generator=generator).to(x0)
    s = sigma.to(x0).view(b, 1, 1, 1, 1)
    noisy = (1 - s) * x0 + s * noise
    t_frames = t.view(b, 1).expand(b, f)
    flow = dit_flow(model, noisy, t_frames, text)
    return _weighted_flow_mse(flow, noise - x0, scheduler.training_weight(t_frames).to(x0))
