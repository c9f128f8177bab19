"""Where snapshots keep their tensors: in CPU memory, so hours of video do not pile up on the compute device."""

from __future__ import annotations

import torch


def to_host(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` as a snapshot keeps it: in CPU memory and owning only its own elements (a slice of a bigger
    tensor is copied, so a chunk's latents do not keep a whole window alive).

    Pageable memory, not pinned: page-locked memory cannot be swapped out, hours of latents would lock gigabytes,
    and the only copies back to the device are replays, which are rare and one block at a time."""
    host = tensor.detach().to("cpu")
    if host.untyped_storage().nbytes() > host.nbytes or not host.is_contiguous():
        host = host.clone(memory_format=torch.contiguous_format)
    return host
