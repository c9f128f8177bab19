"""Convert release ``.pt`` students to safetensors that remember what they are.

The output has bare Wan keys and JSON metadata: ``dit_config``, ``variant`` (a sampler preset name),
``frames_per_block``, ``denoising_steps``, ``first_chunk_steps`` and ``source`` (the original file name), so
loaders pick the right sampler without being told.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import save_file

from .checkpoints import check_keys, config_for, read_release_pt
from .config import sampler_preset

logger = logging.getLogger(__name__)


def convert_release_to_safetensors(
    src: str | Path,
    dst: str | Path,
    *,
    variant: str,
    prefer_ema: bool | None = None,
    dtype: torch.dtype | None = None,
    num_heads: int | None = None,
) -> Path:
    """Write ``src`` (a release .pt) as safetensors at ``dst``; returns ``dst``. ``dtype`` casts float tensors."""
    sampler = sampler_preset(variant)
    raw = read_release_pt(Path(src), prefer_ema)
    config = config_for(raw, num_heads)
    check_keys(raw.state_dict, config)
    tensors = {
        k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
        for k, v in raw.state_dict.items()
    }
    metadata = {
        "format": "causal-forcing-dit",
        "dit_config": json.dumps(config.to_dict()),
        "variant": sampler.name,
        "frames_per_block": str(sampler.frames_per_block),
        "denoising_steps": json.dumps(list(sampler.denoising_steps)),
        "first_chunk_steps": json.dumps(list(sampler.first_chunk_steps) if sampler.first_chunk_steps else None),
        "source": Path(src).name,
        "source_key": raw.metadata.get("release_key", ""),
    }
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dst), metadata=metadata)
    logger.info("Wrote %s (%d tensors, variant %s)", dst, len(tensors), sampler.name)
    return dst
