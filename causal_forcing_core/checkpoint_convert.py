"""Convert release ``.pt`` students to safetensors that remember what they are.

The output has bare Wan keys and JSON metadata: ``dit_config``, ``variant`` (a sampler preset name),
``frames_per_block``, ``denoising_steps``, ``first_chunk_steps`` and ``source`` (the original file name), so
loaders pick the right architecture and sampler without being told.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from .checkpoints import cast_state_dict, check_keys, config_for, read_checkpoint, resolve_weight_dtype
from .config import WAN_TEXT_LEN, DiTConfig, SamplerConfig, sampler_preset
from .errors import CheckpointError

logger = logging.getLogger(__name__)

FORMAT = "causal-forcing-dit"


def dit_metadata(config: DiTConfig, sampler: SamplerConfig | None = None, **extra: str) -> dict[str, str]:
    """Safetensors metadata of a DiT file: the architecture, and the sampler it was trained for when known, plus
    ``extra`` entries (``source``, ``source_key`` ...). :func:`.checkpoints.load_dit` reads all of it back."""
    metadata = {"format": FORMAT, "dit_config": json.dumps(config.to_dict())}
    if sampler is not None:
        metadata.update({
            "variant": sampler.name,
            "frames_per_block": str(sampler.frames_per_block),
            "denoising_steps": json.dumps(list(sampler.denoising_steps)),
            "first_chunk_steps": json.dumps(list(sampler.first_chunk_steps) if sampler.first_chunk_steps else None),
        })
    return {**metadata, **extra}


def convert_release_to_safetensors(
    src: str | Path,
    dst: str | Path,
    *,
    variant: str,
    prefer_ema: bool | None = None,
    dtype: torch.dtype | str | None = None,
    num_heads: int | None = None,
    config: DiTConfig | None = None,
    text_len: int = WAN_TEXT_LEN,
) -> Path:
    """Write ``src`` (a release .pt, or any layout :func:`.checkpoints.load_dit` reads) as safetensors at ``dst``.

    ``variant`` is a sampler preset name (validated first); ``prefer_ema`` picks ``generator_ema``/``generator``;
    ``dtype`` ("bf16", torch.bfloat16, ...; None keeps the file's) casts floating tensors, float8 only the weight
    matrices. ``num_heads`` / ``text_len`` / ``config`` give the architecture when the file cannot (it is recorded in the
    output, so later loads need neither). The keys are checked strictly before anything is written, and the
    file appears atomically. Returns ``dst``.
    """
    sampler = sampler_preset(variant)
    src, dst = Path(src), Path(dst)
    if dst.suffix != ".safetensors":
        raise CheckpointError(f"The output {dst.name} should end in .safetensors.")
    if dst.resolve() == src.resolve():
        raise CheckpointError(f"Refusing to overwrite the source {src} with its conversion.")
    storage = resolve_weight_dtype(dtype)
    raw = read_checkpoint(src, prefer_ema)
    config = config_for(raw, num_heads, config, text_len)
    check_keys(raw.state_dict, config)
    if storage is not None:
        cast_state_dict(raw.state_dict, storage)
    tensors = {k: v.contiguous() for k, v in raw.state_dict.items()}
    metadata = dit_metadata(config, sampler, source=src.name, source_key=str(raw.metadata.get("release_key", "")))
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.partial")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("Wrote %s (%d tensors, variant %s) from %s", dst, len(tensors), sampler.name, src.name)
    return dst
