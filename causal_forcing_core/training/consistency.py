"""Stage 2b: causal consistency distillation, Causal Forcing++ (reference §8.3).

The frozen AR teacher, teacher-forced on the clean ground truth, takes one Euler step with CFG
(``uncond + 3 (cond - uncond)``) between adjacent times of a ``num_steps`` shifted grid; the student's x0 at the
earlier (noisier) time is regressed onto the EMA student's x0 at the later one. No ODE data is stored.
"""

from __future__ import annotations

import torch

from ..dit import CausalWanModel
from ..scheduler import FlowMatchScheduler
from .rollout import cfg_flow, dit_flow_teacher_forcing, euler_timesteps, sigma_from_timestep


def _x0(model: CausalWanModel, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor, text: torch.Tensor,
        frames_per_block: int) -> torch.Tensor:
    flow = dit_flow_teacher_forcing(model, x_t, t, x0, text, frames_per_block)
    sigma = sigma_from_timestep(t).to(x_t).view(*t.shape, 1, 1, 1)
    return x_t - sigma * flow


def consistency_loss(
    student: CausalWanModel,
    ema: CausalWanModel,
    teacher: CausalWanModel,
    x0: torch.Tensor,
    text: torch.Tensor,
    uncond: torch.Tensor,
    *,
    frames_per_block: int,
    num_steps: int = 48,
    guidance: float = 3.0,
    scheduler: FlowMatchScheduler,
    generator: torch.Generator,
) -> torch.Tensor:
    """x0 [B, F, C, h, w] clean latents; text/uncond [B, L, D]. n is uniform in [0, num_steps - 2], one per sample."""
    b, f = x0.shape[:2]
    times = euler_timesteps(num_steps, scheduler)
    n = torch.randint(0, num_steps - 1, (b,), generator=generator)
    t_n = times[n].view(b, 1).expand(b, f)
    t_next = times[n + 1].view(b, 1).expand(b, f)
    noise = torch.randn(x0.shape, generator=generator).to(x0)
    sigma_n = sigma_from_timestep(t_n).to(x0).view(b, f, 1, 1, 1)
    x_n = (1 - sigma_n) * x0 + sigma_n * noise
    with torch.no_grad():
        flow = dit_flow_teacher_forcing(teacher, torch.cat([x_n, x_n]), torch.cat([t_n, t_n]), torch.cat([x0, x0]),
                                        torch.cat([text, uncond]), frames_per_block)
        dsigma = (sigma_from_timestep(t_next) - sigma_from_timestep(t_n)).to(x0).view(b, f, 1, 1, 1)
        x_next = x_n + cfg_flow(flow[:b], flow[b:], guidance) * dsigma
        target = _x0(ema, x_next, t_next, x0, text, frames_per_block)
    pred = _x0(student, x_n, t_n, x0, text, frames_per_block)
    return (pred.float() - target.float()).pow(2).mean()
