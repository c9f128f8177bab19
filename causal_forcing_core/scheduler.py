"""Flow-matching scheduler of the Causal Forcing students (reference §2.1-2.2).

A 1000-entry table: unshifted sigmas ``linspace(1, 0, 1001)[:-1]`` shifted by ``s*sigma / (1 + (s-1)*sigma)``,
timesteps ``t = 1000 * sigma`` (float32, never rounded). ``add_noise`` and ``flow_to_x0`` look sigma up by the
nearest table timestep, so t = 0 maps to the smallest sigma (about 0.005 at shift 5), exactly as the reference.
``flow_to_x0`` works in float64 like the reference, except on devices without float64 (Apple MPS), where
:func:`exact_dtype` gives float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def exact_dtype(device: torch.device) -> torch.dtype:
    """The widest float ``device`` computes in: float64, or float32 on Apple's MPS (which has no float64)."""
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


class FlowMatchScheduler:
    """Shifted flow-matching table with nearest-timestep sigma lookup."""

    def __init__(self, shift: float = 5.0, num_train_timesteps: int = 1000) -> None:
        self.shift = float(shift)
        self.num_train_timesteps = num_train_timesteps
        sigmas = torch.linspace(1.0, 0.0, num_train_timesteps + 1)[:-1]
        self.sigmas = self.shift * sigmas / (1 + (self.shift - 1) * sigmas)  # float32 [N], index 0 = sigma 1
        self.timesteps = self.sigmas * num_train_timesteps  # float32 [N]

    def warp(self, steps: Sequence[int]) -> torch.Tensor:
        """Raw config steps (unshifted sigma x 1000) -> model timesteps float32, e.g. 750 -> 937.5 at shift 5."""
        table = torch.cat([self.timesteps, torch.zeros(1)])
        return table[[self.num_train_timesteps - int(s) for s in steps]]

    def sigma_of(self, timestep: torch.Tensor) -> torch.Tensor:
        """Nearest-table sigma for every entry of ``timestep`` (any shape), float32, same shape."""
        t = timestep.detach().to("cpu", torch.float32).reshape(-1)
        index = torch.argmin((self.timesteps.unsqueeze(0) - t.unsqueeze(1)).abs(), dim=1)
        return self.sigmas[index].reshape(timestep.shape)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """(1 - sigma) * x0 + sigma * noise, one sigma per leading entry: x0, noise [N, ...]; timestep [N]."""
        sigma = self.sigma_of(timestep).to(x0.device).view(-1, *([1] * (x0.dim() - 1)))
        return ((1 - sigma) * x0 + sigma * noise).type_as(noise)

    def flow_to_x0(self, x_t: torch.Tensor, flow: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """x0 = x_t - sigma * flow, in :func:`exact_dtype`, cast back: x_t, flow [N, ...]; timestep [N]."""
        wide = exact_dtype(x_t.device)
        sigma = self.sigma_of(timestep).to(x_t.device, wide).view(-1, *([1] * (x_t.dim() - 1)))
        return (x_t.to(wide) - sigma * flow.to(wide)).to(flow.dtype)

    def step(self, x_t: torch.Tensor, flow: torch.Tensor, timestep: float, next_timestep: float | None) -> torch.Tensor:
        """One Euler step of the probability-flow ODE from ``timestep`` to ``next_timestep`` (None = sigma 0)."""
        sigma = float(self.sigma_of(torch.tensor([timestep]))[0])
        sigma_next = 0.0 if next_timestep is None else float(self.sigma_of(torch.tensor([next_timestep]))[0])
        return x_t + flow * (sigma_next - sigma)

    def training_weight(self, timestep: torch.Tensor) -> torch.Tensor:
        """Bell-curve loss weight over the timestep value, normalised so the table averages to 1."""
        def bell(t: torch.Tensor) -> torch.Tensor:
            return torch.exp(-2 * ((t - self.num_train_timesteps / 2) / self.num_train_timesteps) ** 2)

        table = bell(self.timesteps)
        shifted = table - table.min()
        scale = self.num_train_timesteps / shifted.sum()
        index = torch.argmin((self.timesteps.unsqueeze(0) - timestep.detach().cpu().reshape(-1, 1)).abs(), dim=1)
        return (shifted[index] * scale).reshape(timestep.shape).to(timestep.device)
