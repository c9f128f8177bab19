"""3D rotary position embedding of the Wan DiT, at absolute latent-frame offsets.

Each head's ``head_dim/2`` complex pairs are split into frame, height and width parts of
``c - 2*(c//3)``, ``c//3`` and ``c//3`` pairs (22/21/21 for head_dim 128). Every part has its own frequency
ladder ``theta ** (-2i / d_part)``. Angles are computed in float64 on the fly for exactly the positions needed, so
positions are not capped by a table size (the reference stops at 1024 frames; below that, values are identical).
"""

from __future__ import annotations

import torch


def rope_split(head_dim: int) -> tuple[int, int, int]:
    """Complex pairs given to (frame, height, width) for one attention head."""
    c = head_dim // 2
    return c - 2 * (c // 3), c // 3, c // 3


def _inverse_frequencies(pairs: int, theta: float, device: torch.device) -> torch.Tensor:
    real_dim = 2 * pairs
    exponent = torch.arange(0, real_dim, 2, dtype=torch.float64, device=device) / real_dim
    return 1.0 / torch.pow(torch.tensor(theta, dtype=torch.float64, device=device), exponent)


def rope_frequencies(
    head_dim: int,
    start_frame: int,
    grid: tuple[int, int, int],
    device: torch.device | str = "cpu",
    theta: float = 10000.0,
) -> torch.Tensor:
    """Complex rotations for a token grid of ``grid = (frames, height, width)`` starting at ``start_frame``.

    Returns complex128 ``[frames*height*width, 1, head_dim/2]`` in row-major (f, h, w) token order, ready to
    broadcast over heads.
    """
    f, h, w = grid
    device = torch.device(device)
    parts = rope_split(head_dim)
    positions = (
        torch.arange(start_frame, start_frame + f, dtype=torch.float64, device=device),
        torch.arange(h, dtype=torch.float64, device=device),
        torch.arange(w, dtype=torch.float64, device=device),
    )
    angles = [torch.outer(pos, _inverse_frequencies(n, theta, device)) for pos, n in zip(positions, parts)]
    rot = [torch.polar(torch.ones_like(a), a) for a in angles]
    table = torch.cat(
        [
            rot[0].view(f, 1, 1, -1).expand(f, h, w, -1),
            rot[1].view(1, h, 1, -1).expand(f, h, w, -1),
            rot[2].view(1, 1, w, -1).expand(f, h, w, -1),
        ],
        dim=-1,
    )
    return table.reshape(f * h * w, 1, -1)


def apply_rope(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent channel pairs of ``x`` [B, L, heads, head_dim] by ``freqs`` [L, 1, head_dim/2] (float64)."""
    b, length, heads, dim = x.shape
    pairs = torch.view_as_complex(x.to(torch.float64).reshape(b, length, heads, dim // 2, 2))
    return torch.view_as_real(pairs * freqs).flatten(3).to(x.dtype)
