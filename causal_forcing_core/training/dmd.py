"""Stage 3: asymmetric DMD with self-rollout (reference §8.4).

The causal generator rolls out a whole video with its own few-step sampler (Self Forcing); a frozen bidirectional
teacher gives the real score with CFG (``cond + g (cond - uncond)``, g = 3 -> effective weight 4); a trainable
bidirectional critic gives the fake score. The generator is pushed along (fake - real), normalised per sample; the
critic learns the generator's current distribution with the flow-matching loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..config import SamplerConfig
from ..dit import CausalWanModel
from ..sampling import dit_flow
from ..scheduler import FlowMatchScheduler, exact_dtype
from .rollout import student_rollout


class GeneratorNoise:
    """Training noise for rollouts: every chunk's noise from one torch generator (a :class:`..noise.NoiseSource`)."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def chunk_noise(
        self, chunk_index: int, shape: Sequence[int], num_renoise: int
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Initial noise ``shape`` = [B, n, C, h, w] and ``num_renoise`` tensors [B*n, C, h, w]."""
        b, n, *rest = shape
        first = torch.randn(tuple(shape), generator=self.generator)
        return first, [torch.randn((b * n, *rest), generator=self.generator) for _ in range(num_renoise)]


@dataclass(frozen=True)
class DMDSettings:
    real_guidance: float = 3.0
    min_timestep: float = 20.0
    max_timestep: float = 980.0
    shift: float = 5.0


def sample_exit_steps(sampler: SamplerConfig, num_blocks: int, generator: torch.Generator) -> list[int]:
    """One exit step shared by all blocks; block 0 draws its own when it has a first-chunk schedule."""
    shared = int(torch.randint(0, sampler.num_steps, (1,), generator=generator))
    exits = [shared] * num_blocks
    if sampler.first_chunk_steps:
        exits[0] = int(torch.randint(0, len(sampler.first_chunk_steps), (1,), generator=generator))
    return exits


def sample_dmd_timesteps(batch: int, settings: DMDSettings, generator: torch.Generator) -> torch.Tensor:
    """One timestep per video: uniform u, shifted (t = 1000 s u / (1 + (s-1) u)), clamped. -> [B] float32."""
    u = torch.rand(batch, generator=generator)
    t = 1000.0 * settings.shift * u / (1 + (settings.shift - 1) * u)
    return t.clamp(settings.min_timestep, settings.max_timestep)


def rollout(
    generator_model: CausalWanModel, text: torch.Tensor, sampler: SamplerConfig, *, num_frames: int,
    latent_size: tuple[int, int], scheduler: FlowMatchScheduler, rng: torch.Generator, grad: bool,
) -> torch.Tensor:
    """Self-rollout [B, F, C, h, w] with a random exit step; gradients (if ``grad``) through each exit step only."""
    blocks = -(-num_frames // sampler.frames_per_block)
    exits = sample_exit_steps(sampler, blocks, rng)
    return student_rollout(
        generator_model, generator_model.embed_text(text), sampler, GeneratorNoise(rng), batch=text.shape[0],
        num_frames=num_frames, latent_size=latent_size, scheduler=scheduler, exit_steps=exits, grad=grad,
        context_noise=rng,
    )


def _noised(x: torch.Tensor, t: torch.Tensor, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    noise = torch.randn(x.shape, generator=rng).to(x)
    sigma = (t / 1000.0).to(x).view(-1, 1, 1, 1, 1)
    return (1 - sigma) * x + sigma * noise, noise


def _x0(model: CausalWanModel, x_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    f = x_t.shape[1]
    t_frames = t.view(-1, 1).expand(-1, f)
    flow = dit_flow(model, x_t, t_frames, text)
    return x_t - (t / 1000.0).to(x_t).view(-1, 1, 1, 1, 1) * flow


def dmd_generator_loss(
    x: torch.Tensor, real: CausalWanModel, critic: CausalWanModel, text: torch.Tensor, uncond: torch.Tensor,
    settings: DMDSettings, rng: torch.Generator,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Distribution-matching loss of a rollout x [B, F, C, h, w] (with grad): 0.5 * ||x - sg(x - grad)||^2 in float64,
    grad = (fake_x0 - real_x0) / mean|x - real_x0|."""
    b = x.shape[0]
    t = sample_dmd_timesteps(b, settings, rng)
    with torch.no_grad():
        x_t, _ = _noised(x.detach(), t, rng)
        both = _x0(real, torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([text, uncond]))
        cond, unc = both[:b], both[b:]
        real_x0 = cond + settings.real_guidance * (cond - unc)
        fake_x0 = _x0(critic, x_t, t, text)
        normaliser = (x.detach() - real_x0).abs().mean(dim=(1, 2, 3, 4), keepdim=True)
        grad = torch.nan_to_num((fake_x0 - real_x0) / normaliser)
    wide = exact_dtype(x.device)
    target = (x.detach() - grad).to(wide)
    loss = 0.5 * (x.to(wide) - target).pow(2).mean()
    return loss.float(), {"dmd_grad_norm": float(grad.norm() / grad.numel() ** 0.5), "dmd_t": float(t.mean())}


def critic_loss(
    x: torch.Tensor, critic: CausalWanModel, text: torch.Tensor, settings: DMDSettings, rng: torch.Generator,
) -> torch.Tensor:
    """Flow-matching MSE of the critic on a detached rollout x [B, F, C, h, w] (``denoising_loss_type: flow``)."""
    b, f = x.shape[:2]
    t = sample_dmd_timesteps(b, settings, rng)
    x_t, noise = _noised(x.detach(), t, rng)
    flow = dit_flow(critic, x_t, t.view(-1, 1).expand(b, f), text)
    return (flow.float() - (noise - x.detach()).float()).pow(2).mean()
