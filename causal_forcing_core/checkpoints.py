"""Load every Causal Forcing / Wan DiT weight layout safely and strictly.

Layouts:

- release ``.pt``/``.pth``: a torch pickle dict with ``generator`` and/or ``generator_ema`` (keys prefixed
  ``model.`` or ``model._fsdp_wrapped_module.``), or a bare state dict; read with ``weights_only=True`` only;
- a diffusers-style folder: ``config.json`` + ``diffusion_pytorch_model.safetensors`` (or shards listed in
  ``diffusion_pytorch_model.safetensors.index.json``);
- one ``.safetensors`` file with bare keys or the ``model.diffusion_model.`` / ``model.`` prefix, optionally
  carrying our metadata (``dit_config``, ``variant``...; see :mod:`.checkpoint_convert`).

Weights may be fp32/bf16/fp16 or float8_e4m3fn; float8 stays float8 in memory and each layer upcasts at compute.
Keys are checked strictly: missing, unexpected and mis-shaped keys are reported by name.
"""

from __future__ import annotations

import json
import logging
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from .config import DiTConfig, SamplerConfig, sampler_preset
from .dit import CausalWanModel
from .errors import CheckpointError, UnsafeCheckpointError

logger = logging.getLogger(__name__)

_PREFIXES = ("model._fsdp_wrapped_module.", "model.diffusion_model.", "model.")
_DTYPES = {
    "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp8_e4m3fn": torch.float8_e4m3fn,
}
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"


@dataclass(frozen=True)
class LoadedDiT:
    """A loaded student: the model (eval, no grad), its architecture, sampler preset when known, file metadata."""

    model: CausalWanModel
    config: DiTConfig
    sampler: SamplerConfig | None
    metadata: dict[str, Any] = field(default_factory=dict)
    source_path: Path | None = None


@dataclass
class RawCheckpoint:
    """Bare-key state dict plus what the file said about itself."""

    state_dict: dict[str, torch.Tensor]
    metadata: dict[str, Any]
    config_json: dict[str, Any] | None = None


# --------------------------------------------------------------------------------------------------- reading
def strip_prefixes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove the FSDP / wrapper / ComfyUI prefixes; a file may mix them."""
    out = {}
    for key, value in state_dict.items():
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
                break
        if key in out:
            raise CheckpointError(f"Key {key!r} appears twice after removing prefixes (e.g. with and without 'model.').")
        out[key] = value
    return out


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as err:
        if "mmap" not in str(err):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)


def read_release_pt(path: Path, prefer_ema: bool | None = None) -> RawCheckpoint:
    """A release ``.pt``: pick ``generator_ema``/``generator`` (or a bare state dict) and strip prefixes."""
    try:
        obj = _torch_load(path)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f"{path.name} is a pickle that wants to run code while loading ({str(err).splitlines()[0]}). "
            "We only load plain tensors (torch.load weights_only=True). Convert it on a machine you trust to "
            "safetensors (python -m causal_forcing_core convert, or safetensors.torch.save_file) and load that."
        ) from None
    except Exception as err:  # truncated file, not a torch file at all
        raise CheckpointError(f"Cannot read {path} as a torch checkpoint: {err}") from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path.name} holds a {type(obj).__name__}, expected a dict of weights.")
    keys = [k for k in ("generator_ema", "generator") if k in obj]
    if prefer_ema is True:
        keys = [k for k in keys if k == "generator_ema"] or keys
    elif prefer_ema is False:
        keys = [k for k in keys if k == "generator"] or keys
    if keys:
        chosen = keys[0]
        logger.info("Loading %s from %s", chosen, path.name)
        sd, meta = obj[chosen], {"release_key": chosen}
    else:
        sd, meta = obj, {}
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(
            f"{path.name} is not a state dict of tensors (top-level keys: {', '.join(map(str, list(obj)[:8]))}). "
            "Expected a Causal Forcing release file with 'generator' / 'generator_ema', or bare Wan DiT weights."
        )
    return RawCheckpoint(strip_prefixes(sd), meta)


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except Exception as err:
        raise CheckpointError(f"Cannot read {path} as safetensors: {err}") from None


def _decode_metadata(raw: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            out[key] = json.loads(value)
        except (json.JSONDecodeError, TypeError):
            out[key] = value
    return out


def read_safetensors_file(path: Path) -> RawCheckpoint:
    sd, meta = _read_safetensors(path)
    return RawCheckpoint(strip_prefixes(sd), _decode_metadata(meta))


def read_diffusers_folder(folder: Path) -> RawCheckpoint:
    """``config.json`` plus one or several ``diffusion_pytorch_model*.safetensors`` files."""
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else None
    index = folder / f"{DIFFUSERS_WEIGHTS}.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (folder / DIFFUSERS_WEIGHTS).exists():
        shards = [DIFFUSERS_WEIGHTS]
    else:
        shards = sorted(p.name for p in folder.glob("*.safetensors"))
    if not shards:
        raise CheckpointError(f"{folder} has no {DIFFUSERS_WEIGHTS} (or shards / index); nothing to load.")
    sd: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {}
    for shard in shards:
        part, part_meta = _read_safetensors(folder / shard)
        sd.update(part)
        meta.update(_decode_metadata(part_meta))
    return RawCheckpoint(strip_prefixes(sd), meta, config)


def read_checkpoint(path: str | Path, prefer_ema: bool | None = None) -> RawCheckpoint:
    """Read any supported layout into bare Wan keys (no model is built)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"No checkpoint at {path}.")
    if path.is_dir():
        return read_diffusers_folder(path)
    if path.suffix == ".safetensors":
        return read_safetensors_file(path)
    if path.suffix in (".pt", ".pth", ".ckpt", ".bin"):
        return read_release_pt(path, prefer_ema)
    raise CheckpointError(f"Unsupported checkpoint {path.name}: expected .safetensors, .pt/.pth or a folder.")


# --------------------------------------------------------------------------------------------------- checks
def _guess_kind(keys: list[str]) -> str:
    if any(k.startswith(("encoder.", "decoder.")) for k in keys):
        return " It looks like a VAE."
    if any(k.startswith("token_embedding") or ".attn.q." in k for k in keys):
        return " It looks like a T5 text encoder."
    if any("input_blocks." in k or "down_blocks." in k for k in keys):
        return " It looks like a Stable Diffusion UNet."
    return ""


def config_for(raw: RawCheckpoint, num_heads: int | None = None) -> DiTConfig:
    """Architecture from config.json, our metadata, or the tensor shapes (in that order)."""
    if "patch_embedding.weight" not in raw.state_dict:
        keys = sorted(raw.state_dict)
        raise CheckpointError(
            "This file is not a Wan DiT: expected keys like patch_embedding.weight, blocks.N.self_attn.q.weight, "
            f"head.head.weight; found {', '.join(keys[:5]) or 'no tensors'}{' ...' if len(keys) > 5 else ''}."
            + _guess_kind(keys)
        )
    if raw.config_json:
        return DiTConfig.from_dict(raw.config_json)
    if isinstance(raw.metadata.get("dit_config"), Mapping):
        return DiTConfig.from_dict(raw.metadata["dit_config"])
    return DiTConfig.from_state_dict(raw.state_dict, num_heads=num_heads)


def check_keys(state_dict: Mapping[str, torch.Tensor], config: DiTConfig) -> None:
    """Raise CheckpointError naming missing, unexpected and mis-shaped keys."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in CausalWanModel(config).state_dict().items()}
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    shapes = sorted(
        f"{k}: file {list(state_dict[k].shape)} vs model {list(expected[k])}"
        for k in set(expected) & set(state_dict) if tuple(state_dict[k].shape) != expected[k]
    )
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
        if items:
            problems.append(f"{len(items)} {label}: {', '.join(items[:10])}{' ...' if len(items) > 10 else ''}")
    if problems:
        raise CheckpointError(
            "Checkpoint keys do not match the Wan DiT "
            f"(dim {config.dim}, {config.num_layers} layers): " + "; ".join(problems) + "."
        )


def parameter_count(config: DiTConfig) -> int:
    """Number of parameters of a DiT of this config (built on the meta device)."""
    with torch.device("meta"):
        return sum(p.numel() for p in CausalWanModel(config).parameters())


def estimate_dit_bytes(config: DiTConfig, dtype: torch.dtype) -> int:
    """Bytes of the DiT weights stored in ``dtype``."""
    return parameter_count(config) * torch.empty((), dtype=dtype).element_size()


# --------------------------------------------------------------------------------------------------- loading
def _storage_dtype(weight_dtype: str | torch.dtype) -> torch.dtype | None:
    if isinstance(weight_dtype, torch.dtype):
        return weight_dtype
    if weight_dtype == "auto":
        return None
    try:
        return _DTYPES[weight_dtype]
    except KeyError:
        raise CheckpointError(f"Unknown weight dtype {weight_dtype!r}; use auto, {', '.join(_DTYPES)}.") from None


def _sampler_for(variant: str | None, metadata: Mapping[str, Any]) -> SamplerConfig | None:
    name = variant if variant and variant != "auto" else metadata.get("variant")
    return sampler_preset(name) if name else None


def load_dit(
    path: str | Path,
    *,
    weight_dtype: str | torch.dtype = "auto",
    compute_dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    prefer_ema: bool | None = None,
    variant: str | None = None,
    num_heads: int | None = None,
) -> LoadedDiT:
    """Load a DiT from any supported layout.

    ``weight_dtype``: storage dtype ("auto" keeps the file's). Float8 weights stay float8 and are upcast per layer
    to ``compute_dtype`` (bf16 by default); otherwise compute follows the storage dtype.
    ``variant``: a sampler preset name; "auto"/None reads the file's metadata.
    """
    raw = read_checkpoint(path, prefer_ema)
    config = config_for(raw, num_heads)
    sd = raw.state_dict
    check_keys(sd, config)
    storage = _storage_dtype(weight_dtype)
    file_dtypes = {v.dtype for v in sd.values() if v.is_floating_point()}
    if storage is not None:
        sd = {k: v.to(storage) if v.is_floating_point() else v for k, v in sd.items()}
    stored = storage or (next(iter(file_dtypes)) if len(file_dtypes) == 1 else torch.float32)
    if storage is None and len(file_dtypes) > 1:
        sd = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in sd.items()}
    with torch.device("meta"):
        model = CausalWanModel(config)
    model.load_state_dict(sd, strict=True, assign=True)
    model = model.to(device)
    if compute_dtype is None:
        compute_dtype = torch.bfloat16 if stored.itemsize == 1 else stored
    model.compute_dtype = compute_dtype
    model.eval().requires_grad_(False)
    sampler = _sampler_for(variant, raw.metadata)
    logger.info(
        "Loaded Wan DiT (dim %d, %d layers, %.0fM params) from %s as %s, compute %s",
        config.dim, config.num_layers, sum(p.numel() for p in model.parameters()) / 1e6, Path(path).name,
        stored, compute_dtype,
    )
    return LoadedDiT(model, config, sampler, raw.metadata, Path(path))


def download_from_hub(repo_id: str, filename: str, local_dir: str | Path) -> Path:
    """Fetch ``filename`` (or, for a pattern ending in ``/*``, that folder) from the Hugging Face hub into
    ``local_dir`` (plain layout: ``local_dir/filename``); only ever called when the user asked for a download."""
    try:
        from huggingface_hub import hf_hub_download, snapshot_download
    except ImportError:
        raise CheckpointError(
            f"huggingface-hub is not installed, so {repo_id}/{filename} cannot be downloaded. Install it "
            f"(pip install huggingface-hub) or put the file into {local_dir} by hand."
        ) from None
    try:
        if filename.endswith("/*"):
            snapshot_download(repo_id=repo_id, allow_patterns=[filename], local_dir=str(local_dir))
            return Path(local_dir) / filename[:-2]
        return Path(hf_hub_download(repo_id=repo_id, filename=filename, local_dir=str(local_dir)))
    except Exception as err:
        raise CheckpointError(
            f"Could not download {filename} from {repo_id} ({type(err).__name__}: {err}). Check the network or "
            f"download it by hand into {Path(local_dir) / filename.removesuffix('/*')}."
        ) from None
