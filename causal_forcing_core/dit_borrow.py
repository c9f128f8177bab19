"""The causal DiT run on another module tree's layers, without copying a weight.

Wan's own DiT (for instance ComfyUI's ``WanModel``, as its loaders made it: cast, quantised, partially loaded,
LoRA-patched) has the same layer names as :class:`.dit.CausalWanModel`. :func:`borrow_layers` builds a causal model
whose every weight-holding layer *is* the source's layer object: its linear, convolution and norm layers are the
source's modules (so their own forward runs, with whatever casting or on-the-fly patching they do), and the
modulation tables are read from the source's blocks at each call. Nothing is copied, and a weight the source
changes later (a patch applied or removed, a layer moved between devices) is what the next forward uses.

This module knows nothing about ComfyUI: the source is any ``torch.nn.Module`` with Wan's layer names.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator

import torch
from torch import nn

from .config import WAN_1_3B, WAN_14B, DiTConfig
from .dit import CausalWanModel, Modulated
from .errors import CheckpointError, InvalidInputError


def check_causal_backbone(config: DiTConfig, name: str) -> None:
    """Refuse a Wan DiT that no causal student of this pack is distilled from: the 14B backbone (whose causal
    sampler settings nobody published for these students) and latent spaces other than Wan 2.1's 16 channels
    (Wan 2.2's 48, image-conditioned inputs). Other sizes run (Wan2.1-1.3B, and small test models)."""
    latent = WAN_1_3B.in_dim
    if (config.in_dim, config.out_dim) != (latent, WAN_1_3B.out_dim):
        raise InvalidInputError(
            f"{name} takes {config.in_dim} input and gives {config.out_dim} output channels; a causal Wan 2.1 "
            f"text-to-video student works on Wan 2.1's {latent}-channel latents (this looks like Wan 2.2 or an "
            "image-conditioned model)."
        )
    if (config.dim, config.num_layers) == (WAN_14B.dim, WAN_14B.num_layers):
        raise InvalidInputError(
            f"{name} is a Wan 2.1 14B DiT (dim {config.dim}, {config.num_layers} blocks). The causal students are "
            "distilled from Wan2.1-T2V-1.3B; load one of them (or the 1.3B base) instead."
        )


class BorrowedWanModel(CausalWanModel):
    """A causal DiT on another module tree's layers (made by :func:`borrow_layers`). Its ``weights_version`` is
    asked of ``weights_probe`` at every read: the owner changes the weights (patches them for one user, then for
    another) without telling this model, and a stream must see that at once."""

    #: returns what the owner's weights now are (e.g. which patches are applied); None: the version set last
    weights_probe: Callable[[], Hashable] | None = None

    @property  # type: ignore[override]
    def weights_version(self) -> Hashable:
        probe = self.weights_probe
        return probe() if probe is not None else self._weights_version

    @weights_version.setter
    def weights_version(self, value: Hashable) -> None:
        self._weights_version = value


def _weight_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """The modules of ``model`` that hold parameters themselves, except the modulated ones (their children are
    listed; their own table is borrowed separately)."""
    for name, module in model.named_modules():
        if isinstance(module, Modulated):
            continue
        if next(module.parameters(recurse=False), None) is not None:
            yield name, module


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    parent._modules[attr] = module  # Sequential children are named "0", "2": plain setattr works for every parent


def _shape_problems(ours: nn.Module, theirs: nn.Module, name: str) -> list[str]:
    found = dict(theirs.named_parameters(recurse=False))
    problems = []
    for key, param in ours.named_parameters(recurse=False):
        other = found.get(key)
        if other is None:
            problems.append(f"{name}.{key} (missing)")
        elif tuple(other.shape) != tuple(param.shape):
            problems.append(f"{name}.{key} (shape {list(other.shape)}, expected {list(param.shape)})")
    return problems


def borrow_layers(
    source: nn.Module, config: DiTConfig, *, device: torch.device, compute_dtype: torch.dtype,
    patch_dtype: torch.dtype | None = None, weights_probe: Callable[[], Hashable] | None = None,
) -> BorrowedWanModel:
    """A :class:`.dit.CausalWanModel` of ``config`` computing on ``device`` in ``compute_dtype`` with the layers of
    ``source`` (a Wan DiT module tree: ``patch_embedding``, ``blocks.N.self_attn.q``, ``head.head``...).

    ``patch_dtype`` is the dtype fed to the patch embedding (float32 for ComfyUI's Wan, which keeps that layer in
    float32). Layers of ``source`` that the causal model has no use for (an image embedding, for example) are
    ignored. ``weights_probe`` says which weights the source holds now (see :class:`BorrowedWanModel`). Raises
    :class:`.errors.CheckpointError` listing the layers that are missing or have another shape.

    The result shares the source's weights: never move it or load a state dict into it; its owner (ComfyUI's model
    management) moves the source.
    """
    with torch.device("meta"):
        model = BorrowedWanModel(config)
    problems: list[str] = []
    pairs: list[tuple[str, nn.Module]] = []
    for name, ours in _weight_layers(model):
        try:
            theirs = source.get_submodule(name)
        except AttributeError:
            problems.append(f"{name} (missing)")
            continue
        problems += _shape_problems(ours, theirs, name)
        pairs.append((name, theirs))
    owners: list[tuple[Modulated, nn.Module]] = []
    for name, ours in model.named_modules():
        if isinstance(ours, Modulated):
            theirs = source.get_submodule(name) if _has_submodule(source, name) else None
            if theirs is None:
                problems.append(f"{name}.modulation (missing)")
                continue
            problems += _shape_problems(ours, theirs, name)
            owners.append((ours, theirs))
    if problems:
        shown = ", ".join(problems[:8]) + (f" and {len(problems) - 8} more" if len(problems) > 8 else "")
        raise CheckpointError(f"This DiT does not have the layers of a Wan DiT of dim {config.dim} with {config.num_layers} blocks: {shown}.")
    for name, theirs in pairs:
        _replace(model, name, theirs)
    for ours, theirs in owners:
        del ours._parameters["modulation"]
        object.__setattr__(ours, "modulation_owner", theirs)  # not registered: the source owns it
    model.run_device = torch.device(device)
    model.compute_dtype = compute_dtype
    model.patch_dtype = patch_dtype
    model.weights_probe = weights_probe
    return model


def _has_submodule(module: nn.Module, name: str) -> bool:
    try:
        module.get_submodule(name)
    except AttributeError:
        return False
    return True


def shares_weights(model: nn.Module, source: nn.Module) -> bool:
    """True when every parameter ``model`` uses is one of ``source``'s own tensors (nothing was copied)."""
    theirs = {id(p) for p in source.parameters()}
    return all(id(p) in theirs for p in model.parameters())
