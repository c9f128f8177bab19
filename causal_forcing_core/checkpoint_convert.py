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
from .weights import SAFETENSORS_SUFFIXES, check_tensor_values

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

    ``dst`` is a ``.safetensors`` file name (any case), or a folder (an existing one, or a path ending in ``/``) to
    write ``<src stem>.safetensors`` into; missing folders are created. The file gets the permissions of a normal new
    file (the process umask), readable by others like the files around it.

    ``variant`` is a sampler preset name (validated first); ``prefer_ema`` picks ``generator_ema``/``generator``;
    ``dtype`` ("bf16", torch.bfloat16, ...; None keeps the file's) casts floating tensors, float8 only the weight
    matrices. ``num_heads`` / ``text_len`` / ``config`` give the architecture when the file cannot (it is recorded in the
    output, so later loads need neither). The keys are checked strictly before anything is written, and the
    file appears atomically. Returns ``dst``.
    """
    sampler = sampler_preset(variant)
    src = Path(src)
    dst = _output_path(src, dst)
    if dst.resolve() == src.resolve():
        raise CheckpointError(f"Refusing to overwrite the source {src} with its conversion.")
    storage = resolve_weight_dtype(dtype)
    raw = read_checkpoint(src, prefer_ema)
    config = config_for(raw, num_heads, config, text_len)
    check_keys(raw.state_dict, config)
    check_tensor_values(raw.state_dict, what=f"DiT file {src.name}", floating_only=True)
    if storage is not None:
        cast_state_dict(raw.state_dict, storage)
    tensors = {k: v.contiguous() for k, v in raw.state_dict.items()}
    metadata = dit_metadata(config, sampler, source=src.name, source_key=str(raw.metadata.get("release_key", "")))
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CheckpointError(
            f"Cannot create the folder {dst.parent} for {dst.name}: {err.strerror or err} (a part of it may be a "
            "file). Choose another output path."
        ) from None
    tmp = dst.with_name(f".{dst.name}.partial")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # safetensors writes a private file; the result is an ordinary one
        os.replace(tmp, dst)
    except OSError as err:
        raise CheckpointError(f"Cannot write {dst}: {err.strerror or err}.") from None
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("Wrote %s (%d tensors, variant %s) from %s", dst, len(tensors), sampler.name, src.name)
    return dst


def _output_path(src: Path, dst: str | Path) -> Path:
    """The file to write: ``dst`` itself when it names a safetensors file, ``dst/<src stem>.safetensors`` for a
    folder (one that exists, or a path ending in a separator); CheckpointError for anything else."""
    text = str(dst)
    path = Path(dst).expanduser()
    if path.is_dir() or text.endswith(("/", os.sep)):
        return path / f"{src.stem}.safetensors"
    if path.suffix.lower() not in SAFETENSORS_SUFFIXES:
        raise CheckpointError(
            f"The output {path.name} should end in .safetensors (or name a folder, ending in /, to write "
            f"{src.stem}.safetensors into)."
        )
    return path
