"""Stage 2a: causal ODE distillation (reference §8.2), and the bidirectional-teacher variant it is compared with.

ODE pairs: from pure noise, integrate the teacher's PF-ODE with CFG (``uncond + 6 (cond - uncond)``) in
``num_steps`` Euler steps and keep the states at the warped 4-step times plus the endpoint. With the AR teacher every
call is teacher-forced on the ground-truth clean video, so all frames denoise in parallel, each conditioned on the
clean past: the map from (noisy frame, clean history) to the endpoint is a function, which a causal student can learn.
The bidirectional teacher denoises all frames jointly instead (Self Forcing's ODE data).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..dit import CausalWanModel
from ..sampling import dit_flow
from ..scheduler import FlowMatchScheduler
from .rollout import cfg_flow, dit_flow_teacher_forcing, euler_timesteps, sigma_from_timestep

#: trajectory indices kept from a 48-step integration: t = 1000, 937.5, 833.3, 625 (the warped 4-step list)
KEEP_INDICES = (0, 12, 24, 36)


@dataclass
class ODEPairs:
    """States [N, K, F, C, h, w] at ``timesteps`` [K], endpoints [N, F, C, h, w] and the clean context the student
    is teacher-forced on (the ground truth for the AR teacher, the teacher's own endpoint for the bidirectional one)."""

    states: torch.Tensor
    timesteps: torch.Tensor
    endpoints: torch.Tensor
    context: torch.Tensor


@torch.no_grad()
def integrate_teacher(
    teacher: CausalWanModel,
    x0: torch.Tensor,
    text: torch.Tensor,
    uncond: torch.Tensor,
    *,
    causal: bool,
    frames_per_block: int,
    num_steps: int = 48,
    guidance: float = 6.0,
    keep: Sequence[int] = KEEP_INDICES,
    scheduler: FlowMatchScheduler,
    generator: torch.Generator,
) -> ODEPairs:
    """ODE pairs for a batch of clean latents x0 [B, F, C, h, w] and prompt embeddings text/uncond [B, L, D].

    ``causal``: AR teacher, teacher-forced on x0 (Causal Forcing); otherwise a bidirectional teacher.
    """
    b, f = x0.shape[:2]
    times = euler_timesteps(num_steps, scheduler)
    x = torch.randn(x0.shape, generator=generator).to(x0)
    both_text = torch.cat([text, uncond])
    clean = torch.cat([x0, x0])
    kept = []
    for i in range(num_steps):
        if i in keep:
            kept.append(x.clone())
        t = torch.full((2 * b, f), float(times[i]))
        if causal:
            flow = dit_flow_teacher_forcing(teacher, torch.cat([x, x]), t, clean, both_text, frames_per_block)
        else:
            flow = dit_flow(teacher, torch.cat([x, x]), t, both_text)
        x = x + cfg_flow(flow[:b], flow[b:], guidance) * (sigma_from_timestep(times[i + 1]) - sigma_from_timestep(times[i]))
    return ODEPairs(torch.stack(kept, dim=1), times[list(keep)], x, x0 if causal else x)


def ode_regression_loss(
    student: CausalWanModel,
    states: torch.Tensor,
    timesteps: torch.Tensor,
    endpoints: torch.Tensor,
    context: torch.Tensor,
    text: torch.Tensor,
    *,
    frames_per_block: int,
    scheduler: FlowMatchScheduler,
    generator: torch.Generator,
) -> torch.Tensor:
    """One index k per sample (the same for all its frames): the student, teacher-forced on ``context``, maps
    states[:, k] at timesteps[k] to x0, regressed onto the endpoint. states [B, K, F, C, h, w]."""
    b, k_count, f = states.shape[:3]
    k = torch.randint(0, k_count, (b,), generator=generator)
    x_t = states[torch.arange(b), k]
    t = timesteps[k].view(b, 1).expand(b, f)
    flow = dit_flow_teacher_forcing(student, x_t, t, context, text, frames_per_block)
    x0 = scheduler.flow_to_x0(x_t.flatten(0, 1), flow.flatten(0, 1), t.flatten()).view_as(x_t)
    return (x0.float() - endpoints.float()).pow(2).mean()
