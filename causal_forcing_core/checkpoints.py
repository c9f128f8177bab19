"""Load every Causal Forcing / Wan DiT weight layout safely and strictly.

Layouts:

- release ``.pt``/``.pth``: a torch pickle dict with ``generator`` and/or ``generator_ema`` (keys prefixed
  ``model.`` or ``model._fsdp_wrapped_module.``), or a bare state dict; read with ``weights_only=True`` only;
- a diffusers-style folder (the original Wan layout): ``config.json`` + ``diffusion_pytorch_model.safetensors``
  (or shards listed in ``diffusion_pytorch_model.safetensors.index.json``);
- one ``.safetensors`` file with bare keys or the ``model.diffusion_model.`` / ``model.`` prefix, optionally
  carrying our metadata (``dit_config``, ``variant``...; see :mod:`.checkpoint_convert`).

Weights may be fp32/bf16/fp16 or float8_e4m3fn; float8 stays float8 in memory and each layer upcasts at compute.
Keys are checked strictly: missing, unexpected and mis-shaped keys are reported by name. Files are read by
:mod:`.weights` (the one safe reader); downloads live with the model-file resolution in :mod:`.model_files`.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .config import WAN_TEXT_LEN, DiTConfig, SamplerConfig, sampler_preset
from .dit import CausalWanModel
from .errors import CheckpointError
from .weights import (
    SAFETENSORS_SUFFIXES,
    check_tensor_values,
    key_problems,
    load_torch_file,
    read_weights,
    strip_prefix,
    weight_format,
)

logger = logging.getLogger(__name__)

_PREFIXES = ("model._fsdp_wrapped_module.", "model.diffusion_model.", "model.")
_DTYPES = {
    "fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16, "fp8_e4m3fn": torch.float8_e4m3fn, "fp8": torch.float8_e4m3fn,
}
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
WAN_KEYS_HINT = "Wan DiT keys such as patch_embedding.weight, blocks.N.self_attn.q.weight, head.head.weight"


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
#: prefixes of the other models inside a ComfyUI all-in-one checkpoint (the DiT is under ``model.diffusion_model.``)
_BUNDLED_PREFIXES = ("first_stage_model.", "vae.", "cond_stage_model.", "text_encoders.", "conditioner.",
                     "clip_vision.")


def strip_prefixes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove the FSDP / wrapper / ComfyUI prefixes; a file may mix them.

    In a ComfyUI all-in-one checkpoint (DiT keys under ``model.diffusion_model.``) the VAE and text encoder parts
    (``first_stage_model.``, ``vae.``, ``text_encoders.``...) are set aside, with a log line saying so.
    """
    if any(k.startswith("model.diffusion_model.") for k in state_dict):
        bundled = [k for k in state_dict if k.startswith(_BUNDLED_PREFIXES)]
        if bundled:
            parts = sorted({k.split(".", 1)[0] for k in bundled})
            logger.info("All-in-one checkpoint: using its DiT, leaving %d tensors of %s", len(bundled), ", ".join(parts))
            state_dict = {k: v for k, v in state_dict.items() if not k.startswith(_BUNDLED_PREFIXES)}
    return strip_prefix(state_dict, _PREFIXES)


def read_release_pt(path: Path, prefer_ema: bool | None = None, device: str = "cpu") -> RawCheckpoint:
    """A release ``.pt``: pick ``generator_ema``/``generator`` (or a bare state dict) and strip prefixes.

    ``prefer_ema`` None takes ``generator_ema`` when present; True/False pick that entry and fall back (with a
    warning) to the other when the file holds only one (release files hold exactly one, reference §3.2).
    """
    path = Path(path)
    obj = load_torch_file(path, what="checkpoint", device=device)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path.name} holds a {type(obj).__name__}, expected a dict of weights.")
    present = [k for k in ("generator_ema", "generator") if k in obj]
    wanted = {None: present[:1], True: ["generator_ema"], False: ["generator"]}[prefer_ema]
    chosen = next((k for k in wanted if k in obj), present[0] if present else None)
    if chosen is not None and wanted and chosen not in wanted:
        logger.warning("%s has no %s; loading %s instead", path.name, wanted[0], chosen)
    if chosen is not None:
        logger.info("Loading %s from %s", chosen, path.name)
        sd, meta = obj[chosen], {"release_key": chosen}
    else:
        sd, meta = obj, {}
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(
            f"{path.name} is not a state dict of tensors (top-level keys: {', '.join(map(str, list(obj)[:8]))}). "
            f"Expected a Causal Forcing release file with 'generator' / 'generator_ema', or bare {WAN_KEYS_HINT}."
        )
    return RawCheckpoint(strip_prefixes(sd), meta)


def _decode_metadata(raw: Mapping[str, str]) -> dict[str, Any]:
    """Safetensors metadata with JSON values (``dit_config``, step lists...) decoded; other strings kept."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            out[key] = json.loads(value)
        except (json.JSONDecodeError, TypeError):
            out[key] = value
    return out


def read_safetensors_file(path: Path, device: str = "cpu") -> RawCheckpoint:
    """One ``.safetensors`` file: prefixes stripped, JSON metadata values decoded."""
    loaded = read_weights(path, what="checkpoint", device=device)
    return RawCheckpoint(strip_prefixes(loaded.tensors), _decode_metadata(loaded.metadata))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"Cannot read {path} as JSON: {err}") from None


def read_diffusers_folder(folder: Path, device: str = "cpu") -> RawCheckpoint:
    """``config.json`` plus one or several ``diffusion_pytorch_model*.safetensors`` files."""
    folder = Path(folder)
    config_path = folder / "config.json"
    config = _read_json(config_path) if config_path.exists() else None
    index = folder / f"{DIFFUSERS_WEIGHTS}.index.json"
    if index.exists():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, Mapping) or not weight_map:
            raise CheckpointError(f"{index} has no 'weight_map'; it should map each key to its shard file.")
        shards = sorted(set(weight_map.values()))
        absent = [s for s in shards if not (folder / s).exists()]
        if absent:
            raise CheckpointError(f"{folder} lacks the shard(s) {', '.join(absent)} listed in {index.name}.")
    elif (folder / DIFFUSERS_WEIGHTS).exists():
        shards = [DIFFUSERS_WEIGHTS]
    else:
        shards = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in SAFETENSORS_SUFFIXES and p.is_file())
    if not shards:
        raise CheckpointError(f"{folder} has no {DIFFUSERS_WEIGHTS} (or shards / index); nothing to load.")
    sd: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {}
    for shard in shards:
        part = read_weights(folder / shard, what="checkpoint shard", device=device)
        sd.update(part.tensors)
        meta.update(_decode_metadata(part.metadata))
    return RawCheckpoint(strip_prefixes(sd), meta, config)


def read_checkpoint(path: str | Path, prefer_ema: bool | None = None, *, shapes_only: bool = False) -> RawCheckpoint:
    """Read any supported layout into bare Wan keys (no model is built). ``shapes_only`` reads no tensor data:
    the tensors are meta tensors with the file's shapes and dtypes (see :func:`.weights.read_weights`)."""
    path = Path(path)
    device = "meta" if shapes_only else "cpu"
    if not path.exists():
        raise CheckpointError(f"No checkpoint at {path}.")
    if path.is_dir():
        return read_diffusers_folder(path, device)
    fmt = weight_format(path)
    if fmt == "safetensors":
        return read_safetensors_file(path, device)
    if fmt == "torch":
        return read_release_pt(path, prefer_ema, device)
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


def _diffusers_naming(keys: list[str]) -> bool:
    return any(k.startswith(("condition_embedder.", "scale_shift_table")) or ".attn1.to_q." in k for k in keys)


def config_for(
    raw: RawCheckpoint, num_heads: int | None = None, config: DiTConfig | None = None, text_len: int = WAN_TEXT_LEN
) -> DiTConfig:
    """Architecture: ``config`` if given, else config.json, our metadata, or the tensor shapes (in that order).

    Shapes cannot tell ``text_len`` (the argument, 512 for every Wan release) nor the head count (dim/128 unless ``num_heads`` is given).
    """
    keys = sorted(raw.state_dict)
    if _diffusers_naming(keys):
        raise CheckpointError(
            "This is a Wan DiT in the diffusers library's naming (WanTransformer3DModel: condition_embedder.*, "
            f"blocks.N.attn1.to_q.*), not the original Wan naming we load ({WAN_KEYS_HINT}). Use the original "
            "release (Wan-AI/Wan2.1-T2V-1.3B, not the -Diffusers repo) or ComfyUI's repackaged single file."
        )
    if "patch_embedding.weight" not in raw.state_dict:
        raise CheckpointError(
            f"This file is not a Wan DiT: expected {WAN_KEYS_HINT}; "
            f"found {', '.join(keys[:5]) or 'no tensors'}{' ...' if len(keys) > 5 else ''}." + _guess_kind(keys)
        )
    if config is not None:
        return config
    if raw.config_json:
        return DiTConfig.from_dict(raw.config_json)
    if isinstance(raw.metadata.get("dit_config"), Mapping):
        return DiTConfig.from_dict(raw.metadata["dit_config"])
    return DiTConfig.from_state_dict(raw.state_dict, num_heads=num_heads, text_len=text_len)


def check_keys(state_dict: Mapping[str, torch.Tensor], config: DiTConfig) -> None:
    """Raise CheckpointError naming missing, unexpected and mis-shaped keys (first 10 of each, with counts)."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in CausalWanModel(config).state_dict().items()}
    problems = key_problems(state_dict, expected)
    if problems:
        hint = ""
        if any((k.startswith("img_emb.") or ".k_img." in k) and k not in expected for k in state_dict):
            hint = " The extra img_emb / k_img keys belong to Wan I2V (CLIP image conditioning), which students lack."
        raise CheckpointError(
            f"Checkpoint keys do not match the Wan DiT (dim {config.dim}, {config.num_layers} layers, "
            f"{config.num_heads} heads): " + "; ".join(problems) + "." + hint
        )


def count_parameters(config: DiTConfig) -> int:
    """Number of parameters of a DiT of this config (built on the meta device, no memory used)."""
    with torch.device("meta"):
        return sum(p.numel() for p in CausalWanModel(config).parameters())


def estimate_dit_bytes(config: DiTConfig, dtype: torch.dtype) -> int:
    """Bytes of the DiT weights stored in ``dtype`` (parameter count x element size; with float8 storage the
    bf16 biases/norms/modulation add about 0.1% for Wan 1.3B)."""
    return count_parameters(config) * dtype.itemsize


# --------------------------------------------------------------------------------------------------- dtypes
def resolve_weight_dtype(weight_dtype: str | torch.dtype | None) -> torch.dtype | None:
    """"auto"/None -> None (keep the file's); "fp32"/"bf16"/"fp16"/"fp8_e4m3fn" or a torch.dtype -> that dtype."""
    if weight_dtype is None or isinstance(weight_dtype, torch.dtype):
        return weight_dtype
    if weight_dtype in ("auto", "default", "keep"):
        return None
    try:
        return _DTYPES[weight_dtype]
    except KeyError:
        raise CheckpointError(
            f"Unknown weight dtype {weight_dtype!r}; use auto, fp32, bf16, fp16 or fp8_e4m3fn."
        ) from None


def cast_state_dict(
    state_dict: MutableMapping[str, torch.Tensor], dtype: torch.dtype, small_dtype: torch.dtype = torch.bfloat16
) -> MutableMapping[str, torch.Tensor]:
    """Cast floating tensors to ``dtype`` in place (each original is freed as it goes, keeping peak memory low).

    For 1-byte float storage only Linear/Conv weight matrices become float8; biases, norm weights and the
    modulation tables go to ``small_dtype`` (they are tiny, and float8 would ruin them).
    """
    for key in list(state_dict):
        tensor = state_dict[key]
        if not tensor.is_floating_point():
            continue
        is_matrix = key.endswith(".weight") and tensor.ndim >= 2  # Linear / Conv weights: the bulk of the bytes
        target = dtype if dtype.itemsize > 1 or is_matrix else small_dtype
        if tensor.dtype != target:
            state_dict[key] = tensor.to(target)
    return state_dict


def _main_dtype(state_dict: Mapping[str, torch.Tensor]) -> torch.dtype:
    """The floating dtype holding most parameters."""
    counts: Counter[torch.dtype] = Counter()
    for tensor in state_dict.values():
        if tensor.is_floating_point():
            counts[tensor.dtype] += tensor.numel()
    return counts.most_common(1)[0][0] if counts else torch.float32


# --------------------------------------------------------------------------------------------------- loading
def _sampler_for(variant: str | None, metadata: Mapping[str, Any]) -> SamplerConfig | None:
    if variant and variant != "auto":
        return sampler_preset(variant)  # the caller's word: an unknown name is an error
    name = metadata.get("variant")
    if not name:
        return None
    try:
        return sampler_preset(str(name))
    except Exception:
        logger.warning("The file names an unknown sampler variant %r; pass variant= explicitly", name)
        return None


@dataclass(frozen=True)
class DiTFileInfo:
    """What a student file is, read without its tensor data (:func:`describe_dit`)."""

    #: the architecture it will load with
    config: DiTConfig
    #: the sampler its metadata names (its kind: chunk-wise or frame-wise), None when it does not say
    own_sampler: SamplerConfig | None
    #: the sampler it will run with: the ``variant`` asked for, else ``own_sampler``
    sampler: SamplerConfig | None
    metadata: dict[str, Any] = field(default_factory=dict)


def describe_dit(
    path: str | Path, *, prefer_ema: bool | None = None, variant: str | None = None, num_heads: int | None = None,
) -> DiTFileInfo:
    """A student's architecture and sampler from its header, metadata and tensor shapes only (no
    weights are read), with the checks :func:`load_dit` makes that need no values: keys and shapes, and
    non-floating tensors. So a caller can check sizes, memory and options before the minutes of loading."""
    raw = read_checkpoint(path, prefer_ema, shapes_only=True)
    config = config_for(raw, num_heads)
    check_keys(raw.state_dict, config)
    check_tensor_values(raw.state_dict, what=f"DiT file {Path(path).name}", floating_only=True)
    own = _sampler_for(None, raw.metadata)
    return DiTFileInfo(config, own, _sampler_for(variant, raw.metadata), raw.metadata)


def load_dit(
    path: str | Path,
    *,
    weight_dtype: str | torch.dtype = "auto",
    compute_dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    prefer_ema: bool | None = None,
    variant: str | None = None,
    num_heads: int | None = None,
    config: DiTConfig | None = None,
) -> LoadedDiT:
    """Load a DiT from any supported layout (release .pt, diffusers-style folder, single .safetensors).

    ``weight_dtype``: storage dtype; "auto" keeps each tensor's file dtype. Float8 storage keeps the weight
    matrices float8 (biases, norms and modulation in bf16) and each layer upcasts them to ``compute_dtype``.
    ``compute_dtype`` defaults to the storage dtype (float32 for float32 files), bf16 for float8.
    ``variant``: a sampler preset name; None/"auto" reads the file's metadata (``LoadedDiT.sampler`` None if absent).
    ``num_heads``: only needed when neither config.json nor metadata gives the architecture and dim/128 is wrong;
    ``config`` overrides the file's architecture (still checked strictly against the tensors).
    Raises CheckpointError (UnsafeCheckpointError for pickles that want to run code).
    """
    raw = read_checkpoint(path, prefer_ema)
    config = config_for(raw, num_heads, config)
    check_keys(raw.state_dict, config)
    check_tensor_values(raw.state_dict, what=f"DiT file {Path(path).name}", floating_only=True)
    storage = resolve_weight_dtype(weight_dtype)
    if storage is not None:
        cast_state_dict(raw.state_dict, storage, compute_dtype or torch.bfloat16)
    stored = _main_dtype(raw.state_dict)
    if compute_dtype is None:
        compute_dtype = torch.bfloat16 if stored.itemsize == 1 else stored
    with torch.device("meta"):
        model = CausalWanModel(config)
    model.load_state_dict(raw.state_dict, strict=True, assign=True)  # keys already checked by name above
    model = model.to(device)
    model.compute_dtype = compute_dtype
    model.eval().requires_grad_(False)
    logger.info(
        "Loaded Wan DiT (dim %d, %d layers, %.0fM params) from %s, stored %s, compute %s",
        config.dim, config.num_layers, sum(p.numel() for p in model.parameters()) / 1e6, Path(path).name,
        stored, compute_dtype,
    )
    return LoadedDiT(model, config, _sampler_for(variant, raw.metadata), raw.metadata, Path(path))
