"""The one safe reader of weight files: safetensors (with metadata) and weights-only torch pickles.

Every loader of the core (DiT, VAE, umT5 text encoder, preview decoder, training state) reads files through this
module, so what is accepted, how it is refused and what the messages say is written once:

- ``.safetensors`` / ``.sft``: tensors and the header's ``__metadata__`` (a ``dict[str, str]``), read with
  :mod:`safetensors` (no code can run);
- ``.pt`` / ``.pth`` / ``.bin`` / ``.ckpt``: ``torch.load(..., weights_only=True)``, memory-mapped when the file is
  in torch's zip format (old, non-zip files are read whole). A pickle that wants to rebuild any object other than
  tensors and plain containers (a class, ``os.system``...) raises :class:`UnsafeCheckpointError` naming the global
  it asked for and saying how to convert the file; nothing in it runs;
- any other name: the first bytes decide (safetensors header, zip or pickle), else the file is unsupported.

A *state dict* here is a flat ``dict[str, Tensor]``; a torch file holding ``{"state_dict": {...}}`` (the Lightning /
``.ckpt`` convention) is unwrapped. Shapes and dtypes are whatever the file stores; nothing is cast.

Every reader takes ``what`` (the file's role in messages: "VAE file"), ``expected`` (what should be there, added to
the messages of unreadable files: "taew2_1.safetensors") and ``advice`` (what to do about an unreadable file).

The checks every model loader runs on what it read live here too: :func:`key_problems` (missing, unexpected and
mis-shaped keys against a model's own state dict) and :func:`check_tensor_values` (NaN / inf weights, integer tensors
where weights must be floating point), each naming the tensors.
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import safe_open

from .errors import CheckpointError, UnsafeCheckpointError

logger = logging.getLogger(__name__)

WeightFormat = Literal["safetensors", "torch"]
SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
#: the key under which Lightning-style ``.ckpt`` / some ``.pth`` files nest their state dict
NESTED_STATE_DICT_KEY = "state_dict"
DEFAULT_ADVICE = "download it again"
_AS = {"safetensors": "safetensors", "torch": "a torch file"}
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80  # first byte of a pickle of protocol >= 2 (torch's legacy, non-zip format)


@dataclass(frozen=True)
class WeightFile:
    """What a weight file holds: its tensors (keys as stored, or with a prefix removed) and its metadata.

    ``metadata`` is the safetensors header's ``__metadata__`` (strings; JSON values are left encoded), empty for
    torch files, which have none.
    """

    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str] = field(default_factory=dict)
    format: WeightFormat = "safetensors"
    path: Path | None = None


def weight_format(path: str | Path) -> WeightFormat | None:
    """``"safetensors"`` or ``"torch"`` by the file's suffix, else by its first bytes; None when neither says."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return "safetensors"
    if suffix in TORCH_SUFFIXES:
        return "torch"
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return None
    if len(head) == 9 and head[8:9] == b"{":  # 8-byte little-endian header length, then the JSON header
        return "safetensors"
    if head.startswith(_ZIP_MAGIC) or head[:1] == bytes([_PICKLE_PROTO]):
        return "torch"
    return None


# ------------------------------------------------------------------------------------------------- messages
@dataclass(frozen=True)
class _File:
    """One file being read and how to talk about it: every message of this module is built here."""

    path: Path
    what: str = "weight file"
    expected: str | None = None
    advice: str = DEFAULT_ADVICE

    def _tail(self) -> str:
        return f" Expected {self.expected}." if self.expected else ""

    def require(self) -> None:
        """CheckpointError when the file is missing, a folder or empty."""
        if not self.path.is_file():
            why = "is a directory, not a file" if self.path.is_dir() else "does not exist"
            raise CheckpointError(f"The {self.what} {self.path} {why}.{self._tail()}")
        if self.path.stat().st_size == 0:
            raise CheckpointError(
                f"The {self.what} {self.path} is empty (0 bytes): a download or copy that did not finish; "
                f"{self.advice}.{self._tail()}"
            )

    def check(self) -> WeightFormat:
        """The file's format; CheckpointError when it is missing, a folder, or of no format we read."""
        self.require()
        fmt = weight_format(self.path)
        if fmt is None:
            raise CheckpointError(
                f"Unsupported {self.what} {self.path.name}: expected a .safetensors file or a .pt/.pth/.bin/.ckpt "
                f"torch file.{self._tail()}"
            )
        return fmt

    def unreadable(self, kind: WeightFormat, err: Exception | str) -> CheckpointError:
        """The file is not a readable ``kind`` file; ``err``'s first sentence says why."""
        first = (str(err).strip().splitlines() or [""])[0]
        detail = err if isinstance(err, str) else f"{type(err).__name__}: {first}" if first else type(err).__name__
        detail = detail.split(". ")[0].rstrip(".")
        return CheckpointError(
            f"Cannot read the {self.what} {self.path} as {_AS[kind]} ({detail}). The file is truncated, corrupt or "
            f"not a {kind} file; {self.advice}.{self._tail()}"
        )

    def refused(self, err: Exception) -> CheckpointError:
        """Our error for a file torch's weights-only unpickler rejected, without relaying its "retry unsafely" or
        "allowlist this global" advice."""
        text = str(err)
        asked = re.search(r"GLOBAL ([\w.<>]+)", text)
        if asked is None:  # no global lookup: bytes the safe unpickler cannot parse (corrupt, not a torch file)
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            detail = next((ln for ln in lines if ln.startswith("Unsupported")), "rejected by the safe unpickler")
            return self.unreadable("torch", detail)
        return UnsafeCheckpointError(
            f"{self.path.name} is a pickle that wants to run code while loading (it asks for the Python global "
            f"{asked.group(1)}). We refuse such files and only load plain tensors (torch.load weights_only=True). If "
            "you trust its source, convert it to safetensors on a machine you trust (load it there, then "
            f"safetensors.torch.save_file(state_dict, '{self.path.stem}.safetensors')) and load the .safetensors "
            "file instead."
        )

    def not_flat(self, obj: Any) -> CheckpointError:
        if isinstance(obj, Mapping):
            odd = [f"{k} ({type(v).__name__})" for k, v in obj.items() if not isinstance(v, torch.Tensor)][:5]
            found = f"entries that are not tensors: {', '.join(map(str, odd))}"
        else:
            found = f"a {type(obj).__name__}"
        return CheckpointError(
            f"The {self.what} {self.path.name} is not a flat dict of named tensors; it holds {found}.{self._tail()}"
        )


# ---------------------------------------------------------------------------------------------------- reading
#: safetensors header dtype names -> torch dtypes (for shape-only reads on the meta device)
_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "I64": torch.int64, "I32": torch.int32,
    "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}


def _header_tensor(f: Any, key: str) -> torch.Tensor:
    """A data-less (meta) tensor with the shape and dtype the header records for ``key``."""
    piece = f.get_slice(key)
    dtype = _SAFETENSORS_DTYPES.get(piece.get_dtype(), torch.uint8)  # unknown kinds still show as non-float
    return torch.empty(piece.get_shape(), dtype=dtype, device="meta")


def _read_safetensors(file: _File, device: str) -> WeightFile:
    try:
        with safe_open(str(file.path), framework="pt", device="cpu" if device == "meta" else device) as f:
            read = _header_tensor if device == "meta" else (lambda f, k: f.get_tensor(k))
            tensors = {k: read(f, k) for k in f.keys()}
            metadata = dict(f.metadata() or {})
    except Exception as err:  # noqa: BLE001 - corrupt header, truncated data, not safetensors at all
        raise file.unreadable("safetensors", err) from None
    return WeightFile(tensors, metadata, "safetensors", file.path)


def _load_torch(file: _File, device: torch.device | str, mmap: bool) -> Any:
    try:
        try:
            return torch.load(file.path, map_location=device, weights_only=True, mmap=mmap)
        except RuntimeError as err:
            if not mmap or "mmap" not in str(err):  # only old (non-zip) torch files cannot be memory-mapped
                raise
            return torch.load(file.path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as err:
        raise file.refused(err) from None
    except Exception as err:  # noqa: BLE001 - truncated zip, not a torch file at all
        if "Weights only load failed" in str(err):
            raise file.refused(err) from None
        raise file.unreadable("torch", err) from None


def _flat(obj: Any, file: _File) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping) and isinstance(obj.get(NESTED_STATE_DICT_KEY), Mapping):
        obj = obj[NESTED_STATE_DICT_KEY]
    if isinstance(obj, Mapping) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        return dict(obj)
    raise file.not_flat(obj)


# ------------------------------------------------------------------------------------------------ public API
def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str | Iterable[str]) -> dict[str, torch.Tensor]:
    """Remove from each key the first of ``prefix`` (one string or several, tried in order) it starts with.

    Keys that start with none are kept as they are. Two keys that become the same name (a file holding both
    ``model.x`` and ``x``) raise CheckpointError instead of one silently replacing the other.
    """
    prefixes = (prefix,) if isinstance(prefix, str) else tuple(prefix)
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new = next((key[len(p):] for p in prefixes if key.startswith(p)), key)
        if new in out:
            raise CheckpointError(
                f"Key {new!r} appears twice after removing the prefix(es) {', '.join(map(repr, prefixes))}."
            )
        out[new] = value
    return out


def load_torch_file(
    path: str | Path,
    *,
    device: torch.device | str = "cpu",
    mmap: bool = True,
    what: str = "weight file",
    expected: str | None = None,
    advice: str = DEFAULT_ADVICE,
) -> Any:
    """The object stored in a torch file, read with ``torch.load(weights_only=True)`` only.

    The result may be nested (a release file's ``{"generator_ema": {...}}``, a training checkpoint with optimiser
    state and step counters); use :func:`read_state_dict` for a flat dict of tensors. ``mmap`` memory-maps zip-format
    files (old non-zip files are read whole); tensors land on ``device``. Raises :class:`UnsafeCheckpointError` for a
    pickle that wants to run code (nothing runs), CheckpointError for a missing, truncated or foreign file.
    """
    file = _File(Path(path), what, expected, advice)
    file.require()
    return _load_torch(file, device, mmap)


def read_weights(
    path: str | Path,
    *,
    prefix: str | Iterable[str] | None = None,
    device: torch.device | str = "cpu",
    what: str = "weight file",
    expected: str | None = None,
    advice: str = DEFAULT_ADVICE,
) -> WeightFile:
    """Tensors and metadata of one weight file (safetensors, or a weights-only torch state dict).

    ``prefix``: see :func:`strip_prefix` (None keeps the keys as stored). ``device``: where the tensors land;
    ``"meta"`` reads no tensor data at all (the safetensors header, or the pickle with its storages left unread):
    names, shapes and dtypes only, for checks before a model loads.
    Raises CheckpointError (UnsafeCheckpointError for a pickle that wants to run code).
    """
    file = _File(Path(path), what, expected, advice)
    if file.check() == "safetensors":
        loaded = _read_safetensors(file, str(device))
    else:
        loaded = WeightFile(_flat(_load_torch(file, device, mmap=True), file), {}, "torch", file.path)
    if prefix is not None:
        loaded = WeightFile(strip_prefix(loaded.tensors, prefix), loaded.metadata, loaded.format, loaded.path)
    logger.debug("Read %d tensors from %s (%s)", len(loaded.tensors), file.path.name, loaded.format)
    return loaded


def read_state_dict(
    path: str | Path,
    *,
    prefix: str | Iterable[str] | None = None,
    device: torch.device | str = "cpu",
    what: str = "weight file",
    expected: str | None = None,
    advice: str = DEFAULT_ADVICE,
) -> dict[str, torch.Tensor]:
    """The flat ``{name: tensor}`` of a weight file (:func:`read_weights` without the metadata)."""
    return read_weights(path, prefix=prefix, device=device, what=what, expected=expected, advice=advice).tensors


def read_metadata(path: str | Path, *, what: str = "weight file") -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file (only the header is read); ``{}`` for a torch file.

    Raises CheckpointError when the file is missing or unreadable.
    """
    file = _File(Path(path), what)
    if file.check() == "torch":
        return {}
    try:
        with safe_open(str(file.path), framework="pt", device="cpu") as f:
            return dict(f.metadata() or {})
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types for bad headers
        raise file.unreadable("safetensors", err) from None


# ---------------------------------------------------------------------------------------------------- checks
#: how many tensor names a message lists before "..."
NAMES_SHOWN = 10


def _names(items: list[str], limit: int = NAMES_SHOWN) -> str:
    return ", ".join(items[:limit]) + (" ..." if len(items) > limit else "")


def key_problems(found: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]]) -> list[str]:
    """What differs between the tensors a file gave and the ``{name: shape}`` a model expects, one phrase per kind
    with counts and the first names: ``"2 missing: a, b"``, ``"1 unexpected: c"``,
    ``"1 wrong shape: d: file [128] vs model [96]"``; empty when they match."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = sorted(
        f"{k}: file {list(found[k].shape)} vs model {list(expected[k])}"
        for k in set(expected) & set(found) if tuple(found[k].shape) != tuple(expected[k])
    )
    return [f"{len(items)} {label}: {_names(items)}"
            for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)) if items]


def check_tensor_values(
    tensors: Mapping[str, torch.Tensor], *, what: str, floating_only: bool = False, limit: int = 5
) -> None:
    """Raise CheckpointError naming (up to ``limit``) the tensors that hold NaN or infinite values, and with
    ``floating_only`` the integer / bool tensors (a model's weights are all floating point).

    Cheap enough for every load: one float32 sum per floating tensor (a NaN or inf anywhere makes it non-finite;
    finite weights cannot overflow a float32 sum), no copy of the weights. Meta tensors (shape-only reads) have no
    values to check.
    """
    if floating_only:
        integer = sorted(f"{k} ({v.dtype})".replace("torch.", "") for k, v in tensors.items()
                         if not v.is_floating_point())
        if integer:
            raise CheckpointError(
                f"The {what} holds {len(integer)} non-floating-point tensors where weights should be floats: "
                f"{_names(integer, limit)}. It is not a checkpoint of this model (or in a quantised format it does "
                "not read); use the released fp32/bf16/fp16/fp8 weights."
            )
    bad = sorted(k for k, v in tensors.items()
                 if v.is_floating_point() and v.numel() and not v.is_meta
                 and not torch.isfinite(v.sum(dtype=torch.float32)))
    if bad:
        raise CheckpointError(
            f"The {what} has NaN or infinite values in {len(bad)} tensors: {_names(bad, limit)}. The file is "
            "corrupt or was saved from a diverged run; download or export it again."
        )
