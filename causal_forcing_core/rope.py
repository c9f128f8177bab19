"""3D rotary position embedding of the Wan DiT, at absolute latent-frame offsets.

Each head's ``head_dim/2`` channel pairs are split into frame, height and width parts of ``c - 2*(c//3)``,
``c//3`` and ``c//3`` pairs (22/21/21 for head_dim 128). Every part has its own frequency ladder
``theta ** (-2i / d_part)``. Positions are not capped by a table size (the reference stops at 1024 frames; below
that, values are identical).

The angles are computed in float64 on the CPU (exact on every device, MPS included) and turned into a table of
unit complex numbers once per position range (:class:`RotaryTables`: every denoising step and the cache refresh
of a chunk share it). The rotation is one complex multiply in the table's precision: complex64 (float32) by
default, or complex128, which reproduces the reference's float64 rotation bit for bit.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch


def rope_split(head_dim: int) -> tuple[int, int, int]:
    """Channel pairs given to (frame, height, width) for one attention head."""
    c = head_dim // 2
    return c - 2 * (c // 3), c // 3, c // 3


def _inverse_frequencies(pairs: int, theta: float) -> torch.Tensor:
    real_dim = 2 * pairs
    exponent = torch.arange(0, real_dim, 2, dtype=torch.float64) / real_dim
    return 1.0 / torch.pow(torch.tensor(theta, dtype=torch.float64), exponent)


def rope_angles(head_dim: int, start_frame: int, grid: tuple[int, int, int], theta: float = 10000.0) -> torch.Tensor:
    """Rotation angles float64 ``[frames*height*width, 1, head_dim/2]`` (CPU) for a token grid ``(frames, height,
    width)`` whose first frame is ``start_frame``, in row-major (f, h, w) token order."""
    f, h, w = grid
    parts = rope_split(head_dim)
    positions = (
        torch.arange(start_frame, start_frame + f, dtype=torch.float64),
        torch.arange(h, dtype=torch.float64),
        torch.arange(w, dtype=torch.float64),
    )
    frame, row, col = (torch.outer(pos, _inverse_frequencies(n, theta)) for pos, n in zip(positions, parts))
    table = torch.cat(
        [
            frame.view(f, 1, 1, -1).expand(f, h, w, -1),
            row.view(1, h, 1, -1).expand(f, h, w, -1),
            col.view(1, 1, w, -1).expand(f, h, w, -1),
        ],
        dim=-1,
    )
    return table.reshape(f * h * w, 1, -1)


@dataclass(frozen=True)
class RopeTable:
    """Unit complex rotations ``[L, 1, head_dim/2]`` (complex64, or complex128 for the reference's precision)."""

    rotation: torch.Tensor

    @property
    def real_dtype(self) -> torch.dtype:
        """The float dtype the rotation runs in (float32 or float64)."""
        return self.rotation.real.dtype

    def cat(self, other: "RopeTable") -> "RopeTable":
        """The rotations of this grid's tokens followed by ``other``'s."""
        return RopeTable(torch.cat([self.rotation, other.rotation]))


def rope_table(
    head_dim: int,
    start_frame: int,
    grid: tuple[int, int, int],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    theta: float = 10000.0,
) -> RopeTable:
    """The :class:`RopeTable` of a token grid (see :func:`rope_angles`) on ``device``, rotating in ``dtype``
    (float32 or float64)."""
    angles = rope_angles(head_dim, start_frame, grid, theta)
    rotation = torch.polar(torch.ones_like(angles), angles)  # complex128, exact
    return RopeTable(rotation.to(device, torch.complex128 if dtype == torch.float64 else torch.complex64))


class RotaryTables:
    """The last few :class:`RopeTable` s of one model, keyed by (start frame, grid, device, dtype)."""

    def __init__(self, head_dim: int, theta: float = 10000.0, size: int = 8) -> None:
        self.head_dim, self.theta, self.size = head_dim, theta, size
        self._tables: OrderedDict[tuple, RopeTable] = OrderedDict()

    def get(
        self, start_frame: int, grid: tuple[int, int, int], device: torch.device, dtype: torch.dtype
    ) -> RopeTable:
        key = (int(start_frame), tuple(grid), torch.device(device), dtype)
        table = self._tables.get(key)
        if table is None:
            table = self._tables[key] = rope_table(
                self.head_dim, start_frame, grid, device=device, dtype=dtype, theta=self.theta
            )
            while len(self._tables) > self.size:
                self._tables.popitem(last=False)
        else:
            self._tables.move_to_end(key)
        return table


def apply_rope(x: torch.Tensor, table: RopeTable) -> torch.Tensor:
    """Rotate adjacent channel pairs of ``x`` [B, L, heads, head_dim] by ``table`` ([L, 1, head_dim/2]) as one
    complex multiply in the table's precision; returned in x's dtype."""
    pairs = torch.view_as_complex(x.to(table.real_dtype).unflatten(-1, (-1, 2)))
    return torch.view_as_real(pairs * table.rotation).flatten(-2).to(x.dtype)
