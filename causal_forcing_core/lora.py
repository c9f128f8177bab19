"""LoRA for the causal DiT: read the common file formats, merge into the weights, unmerge exactly.

A LoRA changes a linear layer's weight ``W`` [out, in] by ``strength * alpha / rank * up @ down`` (``down``
[rank, in], ``up`` [out, rank]). :func:`load_lora` reads one file into a :class:`Lora` whose layers are keyed by the
DiT's own module names (``blocks.3.self_attn.q``), from any of:

- **diffusers / PEFT**: ``<module>.lora_A.weight`` / ``<module>.lora_B.weight`` (PEFT's adapter name, as in
  ``lora_A.default.weight``, is allowed); alpha from a ``<module>.alpha`` tensor, the safetensors metadata
  (``lora_adapter_metadata`` or ``lora_alpha``), or ``adapter_config.json`` beside the file (``lora_alpha``);
- **kohya / ComfyUI**: ``<module>.lora_down.weight`` / ``<module>.lora_up.weight`` / ``<module>.alpha``, the module
  written with dots or, after a ``lora_unet_`` prefix, with underscores (``lora_unet_blocks_3_self_attn_q``);
- **LongLive's released ``lora.pt``**: a weights-only torch file ``{"generator_lora": <PEFT state dict>}`` (its
  config's alpha equals its rank, 256, which is what a missing alpha means here too).

Prefixes a trainer adds in front of the module (``diffusion_model.``, ``base_model.model.``, ``transformer.``,
``model.``) are removed. Files are read by :mod:`.weights` (safetensors, or ``torch.load(weights_only=True)``: a
pickle that wants to run code is refused, nothing in it runs).

:func:`merge_loras` adds the deltas to the weights in place, computed in float32 and stored back in each weight's
own dtype (a float8 model stays float8). It keeps a CPU copy of each weight it changes, so
:meth:`LoraMerge.unmerge` gives back the original weights bit for bit; merging costs one matmul per layer once, and
sampling then runs at the speed of the plain model. A LoRA key that matches no layer of the model is an error
listing them (``ignore_unmatched`` applies the rest).

One model, several LoRA sets: :func:`use_loras` makes a model's weights the base plus exactly the given set,
unmerging whatever set was merged before. A model shared by several users (one ComfyUI loader feeding branches
with different LoRAs) stays correct when each user calls it with its own set before running.

A stream and a LoRA: a merge sets the model's ``weights_version`` to one that names the LoRA set, and an unmerge
gives back the version before it (the weights are back bit for bit). A stream refuses to go on under any other
version than the one it started with, since its KV and text caches were computed with those weights. Either start
a new stream (the new model's video from the start), or continue the video so far with ``stream.replayed()``,
which re-encodes its committed latents under the new weights (a re-cache) and goes on from there. Switching back to
the stream's own LoRA set (:func:`use_loras`) lets it go on as it was.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import re
import weakref
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .dit import CausalWanModel
from .errors import CheckpointError, InvalidInputError
from .weights import check_tensor_values, load_torch_file, read_metadata, read_weights, weight_format

logger = logging.getLogger(__name__)

#: what trainers put in front of the module name
KEY_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "base_model.model.", "transformer.", "model.")
#: the kohya prefix after which the module is written with underscores
KOHYA_UNET_PREFIX = "lora_unet_"
#: the key LongLive nests its LoRA state dict under
LONGLIVE_KEY = "generator_lora"
_PAIRS = {"lora_A": ("down", "peft"), "lora_B": ("up", "peft"), "lora_down": ("down", "kohya"),
          "lora_up": ("up", "kohya")}
_LAYER_KEY = re.compile(r"^(?P<module>.+)\.(?P<part>lora_A|lora_B|lora_down|lora_up)(?:\.[A-Za-z0-9_]+)?\.weight$")
_NAMES_SHOWN = 8
#: serial numbers of loaded LoRAs: a weights version names its LoRAs by them (never reused, unlike ``id``)
_SERIALS = itertools.count(1)


@dataclass(frozen=True)
class LoraLayer:
    """One layer's low-rank update: ``down`` [rank, in], ``up`` [out, rank], ``alpha`` (None: the rank)."""

    down: torch.Tensor
    up: torch.Tensor
    alpha: float | None = None

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    def delta(self, strength: float) -> torch.Tensor:
        """``strength * alpha / rank * up @ down`` [out, in] in float32."""
        scale = strength * (self.rank if self.alpha is None else self.alpha) / self.rank
        return (self.up.float() @ self.down.float()) * scale


@dataclass(frozen=True)
class Lora:
    """A LoRA file read by :func:`load_lora`: its layers by module name as written in the file (prefixes removed)."""

    name: str
    layers: dict[str, LoraLayer]
    format: str
    #: unique per loaded LoRA
    serial: int = field(default_factory=lambda: next(_SERIALS), compare=False)


def _alpha_defaults(path: Path, metadata: Mapping[str, str]) -> float | None:
    """The file-wide alpha: safetensors metadata, else ``adapter_config.json`` beside it, else None."""
    for key in ("lora_adapter_metadata", "lora_alpha", "ss_network_alpha"):
        if key in metadata:
            value = metadata[key]
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError:
                parsed = value
            alpha = parsed.get("lora_alpha") if isinstance(parsed, dict) else parsed
            if alpha is not None:
                return float(alpha)
    config = path.with_name("adapter_config.json")
    if config.is_file():
        try:
            settings = json.loads(config.read_text())
            alpha = settings.get("lora_alpha") if isinstance(settings, dict) else None
            return None if alpha is None else float(alpha)
        except (json.JSONDecodeError, TypeError, ValueError) as err:
            raise CheckpointError(f"{config} (the LoRA's PEFT config) is not valid JSON with a numeric lora_alpha: "
                                  f"{err}.") from None
    return None


def _read(path: Path, device: str) -> tuple[dict[str, torch.Tensor], dict[str, str], bool]:
    """The file's tensors, its safetensors metadata, and whether it is LongLive's nested ``lora.pt``."""
    what = "LoRA file"
    if weight_format(path) == "torch":
        obj = load_torch_file(path, what=what, device=device)
        longlive = isinstance(obj, Mapping) and isinstance(obj.get(LONGLIVE_KEY), Mapping)
        if longlive:
            obj = obj[LONGLIVE_KEY]
        if not (isinstance(obj, Mapping) and all(isinstance(v, torch.Tensor) for v in obj.values())):
            raise CheckpointError(f"The LoRA file {path.name} holds no flat state dict of tensors.")
        return dict(obj), {}, longlive
    return dict(read_weights(path, what=what, device=device).tensors), read_metadata(path, what=what), False


def load_lora(path: str | Path, *, device: str = "cpu") -> Lora:
    """Read a LoRA file (see the module docstring for the formats). Raises CheckpointError for a file that is not a
    LoRA (naming keys it does not understand) or holds NaN / inf values. ``device="meta"`` reads names and shapes
    only (enough for :func:`plan_loras`; alpha tensors then read as unknown)."""
    path = Path(path).expanduser()
    tensors, metadata, longlive = _read(path, device)
    check_tensor_values(tensors, what=f"LoRA file {path.name}")
    default_alpha = _alpha_defaults(path, metadata)
    parts: dict[str, dict[str, torch.Tensor]] = {}
    alphas: dict[str, float] = {}
    formats, unknown = set(), []
    for key, tensor in tensors.items():
        if key.endswith(".alpha"):
            if not tensor.is_meta:  # a shapes-only read has no values: its alphas stay unknown
                alphas[_module_name(key[: -len(".alpha")])] = float(tensor.float().reshape(-1)[0])
            continue
        match = _LAYER_KEY.match(key)
        if match is None:
            unknown.append(key)
            continue
        role, fmt = _PAIRS[match["part"]]
        formats.add(fmt)
        parts.setdefault(_module_name(match["module"]), {})[role] = tensor
    if unknown:
        raise CheckpointError(f"The LoRA file {path.name} has {len(unknown)} keys that are no LoRA layer: "
                              f"{_names(unknown)} (full-weight diffs and bias LoRAs are not read).")
    half = sorted(m for m, p in parts.items() if len(p) != 2)
    if half or not parts:
        raise CheckpointError(f"The LoRA file {path.name} is not a LoRA: " + (
            f"layers without both halves (down and up): {_names(half)}." if half else "it holds no LoRA layers."))
    layers = {m: LoraLayer(p["down"], p["up"], alphas.get(m, default_alpha)) for m, p in parts.items()}
    for module, layer in layers.items():
        if layer.down.dim() != 2 or layer.up.dim() != 2 or layer.up.shape[1] != layer.down.shape[0]:
            raise CheckpointError(f"LoRA layer {module} of {path.name} has down {tuple(layer.down.shape)} and up "
                                  f"{tuple(layer.up.shape)}: not a [rank, in] / [out, rank] pair.")
    fmt = "longlive" if longlive else "+".join(sorted(formats))
    logger.info("Read LoRA %s: %d layers (%s)", path.name, len(layers), fmt)
    return Lora(path.name, layers, fmt)


def _module_name(raw: str) -> str:
    """A module as written in a file -> as written there without the trainer's prefix (kohya's underscores stay
    until :func:`merge_loras` maps them onto the model's names)."""
    for prefix in KEY_PREFIXES:
        if raw.startswith(prefix):
            return raw[len(prefix):]
    return raw


def _names(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_NAMES_SHOWN])
    return shown + (f" and {len(items) - _NAMES_SHOWN} more" if len(items) > _NAMES_SHOWN else "")


def check_strength(strength: float) -> float:
    """A LoRA strength as a float; :class:`InvalidInputError` for NaN or infinity."""
    value = float(strength)
    if not math.isfinite(value):
        raise InvalidInputError(f"A LoRA strength must be a finite number, got {strength!r}.")
    return value


@dataclass(eq=False)
class LoraMerge:
    """LoRAs merged into a model's weights; :meth:`unmerge` restores them bit for bit."""

    model: CausalWanModel
    originals: dict[str, torch.Tensor] = field(default_factory=dict)  # module name -> its weight before, on the CPU
    #: False when merged without keeping the originals (``keep_originals=False``): it cannot be undone
    reversible: bool = True
    #: the model's ``weights_version`` before the merge, given back by :meth:`unmerge`
    version_before: Hashable = 0

    @property
    def backup_bytes(self) -> int:
        return sum(t.nbytes for t in self.originals.values())

    def unmerge(self) -> None:
        """Put every changed weight back as it was (idempotent)."""
        if not self.reversible:
            raise InvalidInputError("These LoRAs were merged without keeping the original weights "
                                    "(keep_originals=False); load the model again to remove them.")
        if not self.originals:
            return
        modules = dict(self.model.named_modules())
        with torch.no_grad():
            for name, weight in self.originals.items():
                modules[name].weight.copy_(weight)
        self.originals.clear()
        self.model.weights_version = self.version_before


def plan_loras(
    model: torch.nn.Module, loras: Sequence[tuple[Lora, float]], *, ignore_unmatched: bool = False
) -> dict[str, list[tuple[LoraLayer, float]]]:
    """Which of ``model``'s linear layers each LoRA changes, and by how much: ``{module: [(layer, strength)]}``.
    Needs only names and shapes (a model on the meta device works: the command line checks before loading).
    Raises :class:`InvalidInputError` for a non-finite strength, unmatched layers (unless ``ignore_unmatched``),
    a LoRA matching nothing, and mismatched shapes, naming them."""
    linears = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    kohya = {n.replace(".", "_"): n for n in linears}
    plan: dict[str, list[tuple[LoraLayer, float]]] = {}
    for lora, strength in loras:
        strength = check_strength(strength)
        unmatched, wrong = [], []
        for raw, layer in lora.layers.items():
            name = kohya.get(raw[len(KOHYA_UNET_PREFIX):]) if raw.startswith(KOHYA_UNET_PREFIX) else raw
            if name not in linears:
                unmatched.append(raw)
                continue
            if (layer.up.shape[0], layer.down.shape[1]) != tuple(linears[name].weight.shape):
                wrong.append(f"{name} (LoRA {layer.up.shape[0]}x{layer.down.shape[1]}, model "
                             f"{'x'.join(map(str, linears[name].weight.shape))})")
                continue
            if strength:
                plan.setdefault(name, []).append((layer, strength))
        if wrong:
            raise InvalidInputError(f"LoRA {lora.name} does not fit this model's layers: {_names(wrong)}. It was "
                                    "trained for another model size.")
        if unmatched and len(unmatched) == len(lora.layers):
            raise InvalidInputError(f"LoRA {lora.name} matches none of this model's layers (keys like "
                                    f"{_names(unmatched[:3])}): it is for another architecture, not Wan 2.1.")
        if unmatched and not ignore_unmatched:
            raise InvalidInputError(f"LoRA {lora.name}: {len(unmatched)} of its {len(lora.layers)} layers match "
                                    f"nothing in this model: {_names(sorted(unmatched))}. Ask to ignore unmatched "
                                    "layers to apply the rest.")
        if unmatched:
            logger.warning("LoRA %s: ignoring %d unmatched layers", lora.name, len(unmatched))
    return plan


def merge_loras(
    model: CausalWanModel, loras: Sequence[tuple[Lora, float]], *, ignore_unmatched: bool = False,
    keep_originals: bool = True,
) -> LoraMerge:
    """Add ``strength`` x each LoRA to ``model``'s linear weights, in place (see the module docstring). Every LoRA
    is checked against the model (:func:`plan_loras`) before any weight changes. ``keep_originals=False`` keeps no
    CPU copy of the changed weights (about the whole model for a LoRA on every block layer): for a model that is
    never unmerged, like the command line's."""
    plan = plan_loras(model, loras, ignore_unmatched=ignore_unmatched)
    modules = dict(model.named_modules())
    merge = LoraMerge(model, reversible=keep_originals, version_before=model.weights_version)
    with torch.no_grad():
        for name, updates in plan.items():
            weight = modules[name].weight
            if keep_originals:
                merge.originals[name] = weight.detach().to("cpu", copy=True)
            total = weight.float()
            for layer, strength in updates:
                total = total + layer.delta(strength).to(weight.device)
            weight.copy_(total.to(weight.dtype))
    if plan:
        model.weights_version = (merge.version_before, tuple((lora.serial, float(s)) for lora, s in loras if s))
    logger.info("Merged %d LoRA(s) into %d layers (%.1f MB kept to unmerge)", len(loras), len(plan),
                merge.backup_bytes / 2**20)
    return merge


#: the LoRA set each model holds now, with its merge (what :func:`use_loras` undoes first)
_MERGED: "weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple[tuple[Lora, float], ...], LoraMerge]]" = (
    weakref.WeakKeyDictionary()
)


def use_loras(
    model: CausalWanModel, loras: Sequence[tuple[Lora, float]], *, ignore_unmatched: bool = False
) -> None:
    """Make ``model``'s weights its base weights plus exactly ``loras`` (none: the base), unmerging the set merged
    by an earlier call first (bit for bit) when it is another one; nothing happens when it is the same set.
    Checks the new set (:func:`plan_loras`) before touching any weight."""
    wanted = tuple((lora, float(strength)) for lora, strength in loras)
    held, merge = _MERGED.get(model, ((), None))
    if len(held) == len(wanted) and all(a is b and s == t for (a, s), (b, t) in zip(held, wanted)):
        return
    plan_loras(model, wanted, ignore_unmatched=ignore_unmatched)
    if merge is not None:
        merge.unmerge()
        del _MERGED[model]
    if wanted:
        _MERGED[model] = (wanted, merge_loras(model, wanted, ignore_unmatched=ignore_unmatched))


def undo_bytes(model: CausalWanModel) -> int:
    """Bytes :func:`use_loras` keeps to unmerge the set ``model`` holds now (CPU copies of the changed weights)."""
    held = _MERGED.get(model)
    return held[1].backup_bytes if held is not None else 0


def parse_lora_argument(text: str) -> tuple[Path, float]:
    """``FILE`` or ``FILE:STRENGTH`` (the command line's ``--lora``) -> (path, strength, default 1.0); the file
    must exist."""
    path, strength = text, 1.0
    head, sep, tail = text.rpartition(":")
    if sep and head:
        try:
            strength, path = float(tail), head
        except ValueError:
            pass  # a colon inside the path (C:\\...)
    strength = check_strength(strength)
    file = Path(path).expanduser()
    if not file.is_file():
        raise InvalidInputError(f"--lora {text}: no LoRA file {file}. Give FILE or FILE:STRENGTH, e.g. "
                                "style.safetensors:0.8.")
    return file, strength
