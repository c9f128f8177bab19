"""Attention backend. SDPA first: it picks flash / memory-efficient kernels on GPU and runs everywhere."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Multi-head attention with scale ``1/sqrt(head_dim)``.

    q: [B, Lq, H, D]; k, v: [B, Lk, H, D]; mask: optional bool [Lq, Lk] (True = may attend).
    Returns [B, Lq, H*D] in q's dtype.
    """
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2).to(q.dtype), v.transpose(1, 2).to(q.dtype), attn_mask=mask
    )
    return out.transpose(1, 2).flatten(2)
