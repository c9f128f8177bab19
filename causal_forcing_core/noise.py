"""Where the noise of every chunk comes from.

The stream's rule: all noise of chunk k (its initial noise and the fresh noise of every re-noising step) is drawn
from one generator seeded by (seed, k), on the CPU in float32. The same seed therefore gives the same video
whether the chunks are made in one call or many, on any device.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Protocol

import torch


class NoiseSource(Protocol):
    def chunk_noise(
        self, chunk_index: int, shape: Sequence[int], num_renoise: int
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Initial noise ``shape`` = [B, n, C, h, w] and ``num_renoise`` tensors [B*n, C, h, w] for chunk k."""
        ...


def chunk_seed(seed: int, chunk_index: int) -> int:
    """A 63-bit generator seed for chunk ``chunk_index`` of a stream seeded with ``seed`` (platform independent)."""
    digest = hashlib.sha256(f"causal-forcing:{int(seed)}:{int(chunk_index)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class SeededNoise:
    """The default source: a CPU generator seeded by (seed, chunk index)."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def chunk_noise(
        self, chunk_index: int, shape: Sequence[int], num_renoise: int
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        gen = torch.Generator(device="cpu").manual_seed(chunk_seed(self.seed, chunk_index))
        b, n, *rest = shape
        first = torch.randn(tuple(shape), generator=gen, dtype=torch.float32)
        renoise = [torch.randn((b * n, *rest), generator=gen, dtype=torch.float32) for _ in range(num_renoise)]
        return first, renoise


class RecordedNoise:
    """Noise given up front: ``noise`` [B, F, C, h, w] for all generated frames and a queue of re-noise tensors
    consumed in call order (how the parity fixtures record the reference run)."""

    def __init__(self, noise: torch.Tensor, renoise: torch.Tensor | Sequence[torch.Tensor]) -> None:
        self.noise = noise
        self.queue = list(renoise)
        self._frame = 0

    def chunk_noise(
        self, chunk_index: int, shape: Sequence[int], num_renoise: int
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        n = shape[1]
        first = self.noise[:, self._frame : self._frame + n]
        self._frame += n
        taken, self.queue = self.queue[:num_renoise], self.queue[num_renoise:]
        return first, taken
