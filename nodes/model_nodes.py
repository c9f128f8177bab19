"""Loading a Causal Forcing student: ``CausalForcingModelLoader`` -> ``CF_MODEL``.

The DiT is wrapped in a ComfyUI ModelPatcher (through :mod:`.comfy_runtime`), so ComfyUI's memory management loads
it to the GPU for a run, offloads it when another model needs the memory, and frees it when the loader's output is
dropped. The preview decoder shown on the Generate nodes is chosen here as well.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ..causal_forcing_core.checkpoints import CheckpointError, load_dit
from ..causal_forcing_core.config import SAMPLER_PRESETS, check_sampler_fits, sampler_preset
from ..causal_forcing_core.geometry import WAN21
from ..causal_forcing_core.preview_fallback import LatentRGBPreview, Previewer, make_preview_decoder
from . import comfy_runtime as rt
from . import toy_entries as toy
from .common import CATEGORY
from .payloads import CF_MODEL, CFModel

logger = logging.getLogger(__name__)

VARIANTS = ("auto", *SAMPLER_PRESETS)
WEIGHT_DTYPES = ("auto", "bf16", "fp16", "fp32", "fp8_e4m3fn")
PREVIEW_AUTO, PREVIEW_LATENT2RGB, PREVIEW_NONE = "auto", "latent2rgb", "none"
#: preview decoder files picked by "auto" (TAEHV for Wan 2.1)
_TAEW_PREFIX = "taew2_1"


def model_choices() -> list[str]:
    """Files offered by the loader: ``diffusion_models`` first, then ``checkpoints`` files not already listed, then
    the embedded toy student when its bundle is available (:mod:`.toy_entries`)."""
    names = list(rt.model_file_list("diffusion_models"))
    seen = set(names)
    names += [n for n in rt.model_file_list("checkpoints") if n not in seen]
    return toy.with_embedded(names, toy.MODEL_ENTRY)


def model_path(name: str) -> str:
    """Full path of a listed model file (``diffusion_models`` first, then ``checkpoints``; the embedded toy entry
    resolves to its bundle file)."""
    if toy.is_embedded(name):
        return str(toy.embedded_path(name))
    for folder in ("diffusion_models", "checkpoints"):
        try:
            return rt.model_file_path(folder, name)
        except (FileNotFoundError, KeyError):
            continue
    raise CheckpointError(
        f"Model file {name!r} is in neither models/diffusion_models nor models/checkpoints. Put the Causal Forcing "
        "student there (e.g. causal_forcing_chunkwise.safetensors) and refresh the node list (press R)."
    )


def preview_choices() -> list[str]:
    return [PREVIEW_AUTO, PREVIEW_LATENT2RGB, PREVIEW_NONE, *rt.model_file_list("vae_approx")]


def load_previewer(choice: str, device: torch.device) -> Previewer | None:
    """The preview decoder: a ``vae_approx`` file, ``auto`` (a taew2_1 file if present, else latent->RGB),
    ``latent2rgb`` (ComfyUI's Wan 2.1 factors when available) or ``none``."""
    if choice == PREVIEW_NONE:
        return None
    if choice == PREVIEW_AUTO:
        found = [n for n in rt.model_file_list("vae_approx") if Path(n).name.startswith(_TAEW_PREFIX)]
        choice = found[0] if found else PREVIEW_LATENT2RGB
    if choice == PREVIEW_LATENT2RGB:
        rgb = rt.wan21_latent_rgb()
        return LatentRGBPreview(factors=rgb[0], bias=rgb[1]) if rgb is not None else LatentRGBPreview()
    return make_preview_decoder(rt.model_file_path("vae_approx", choice), device=device)


def guess_variant(name: str) -> str:
    """A sampler preset from a file name without metadata (release files live in folders such as
    ``framewise/`` or ``causal-forcing++/framewise-2step.pt``): 1step/2step/framewise, the long-video student
    (``chunkwise/longvideo.pt``, trained for Rolling Forcing) rolling-4step, else chunkwise-4step."""
    lowered = name.lower().replace("_", "-")
    if "longvideo" in lowered or "long-video" in lowered:
        return "rolling-4step"
    if "framewise" in lowered or "frame-wise" in lowered:
        for steps in ("1step", "2step"):
            if steps in lowered:
                return f"framewise-{steps}"
        return "framewise-4step"
    return "chunkwise-4step"


def _compute_dtype(storage: str, device: torch.device) -> torch.dtype | None:
    if device.type == "cpu":
        return torch.float32  # bf16/fp16 matmuls are slow or missing on CPUs
    return {"fp16": torch.float16, "fp32": torch.float32}.get(storage, torch.bfloat16)


def load_model(name: str, variant: str = "auto", weight_dtype: str = "auto", preview: str = PREVIEW_AUTO) -> CFModel:
    """Load the student ``name`` from the model folders; see :class:`CausalForcingModelLoader`."""
    path = model_path(name)
    device = rt.get_torch_device()
    loaded = load_dit(
        path, weight_dtype=weight_dtype, compute_dtype=_compute_dtype(weight_dtype, device),
        device=rt.offload_device(), variant=None if variant == "auto" else variant,
    )
    sampler = loaded.sampler
    if variant != "auto":  # the file's own word (a converted file remembers its sampler) against the widget's
        own = loaded.metadata.get("variant")
        check_sampler_fits(sampler_preset(own) if own in SAMPLER_PRESETS else None, sampler, name, "variant")
    if sampler is None:
        sampler = sampler_preset(guess_variant(name))
        logger.warning(
            "%s does not say which sampler it was trained for; from its name it looks like %s. Pick the variant on "
            "the Causal Forcing loader if that is wrong.", name, sampler.name,
        )
    max_frames = int(loaded.metadata.get("max_frames") or WAN21.trained_latent_frames)
    previewer = load_previewer(preview, device)
    model = CFModel(loaded.model, sampler, Path(path).stem, max_frames, previewer)
    model.patcher = rt.manage_model(loaded.model)
    return model


class CausalForcingModelLoader:
    """Load a Causal Forcing (or Self Forcing) student from ``diffusion_models`` or ``checkpoints``."""

    DESCRIPTION = (
        "Loads a Causal Forcing student (a causal Wan2.1-T2V-1.3B DiT) for chunk-by-chunk generation with a KV "
        "cache. Files: .safetensors (converted, remembers its variant), or the release .pt/.pth. 'auto' variant "
        "reads the file's metadata; for a release .pt pick chunkwise-4step or framewise-Nstep yourself."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = (CF_MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The student with its sampler preset, ready for Causal Forcing Start.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "model_name": (model_choices(), {
                    "tooltip": "Student weights in models/diffusion_models or models/checkpoints; "
                               f"'{toy.MODEL_ENTRY}' is the small toy model that ships with the pack.",
                }),
                "variant": (list(VARIANTS), {
                    "default": "auto",
                    "tooltip": "Sampler the student was trained for: chunk-wise 3-frame blocks with 4 steps, or "
                               "frame-wise with 4, 2 or 1 steps. auto: from the file's metadata.",
                }),
                "weight_dtype": (list(WEIGHT_DTYPES), {
                    "default": "auto",
                    "tooltip": "Storage precision. auto keeps the file's; fp8_e4m3fn halves memory (computed in bf16).",
                }),
                "preview": (preview_choices(), {
                    "default": PREVIEW_AUTO,
                    "tooltip": "Live preview decoder: a TAEHV taew2_1 file from models/vae_approx (auto picks it when "
                               "present), latent2rgb (rough colours, no file), or none.",
                }),
            }
        }

    def load(self, model_name: str, variant: str, weight_dtype: str, preview: str) -> tuple[CFModel]:
        return (load_model(model_name, variant, weight_dtype, preview),)


NODE_CLASS_MAPPINGS = {"CausalForcingModelLoader": CausalForcingModelLoader}
NODE_DISPLAY_NAME_MAPPINGS = {"CausalForcingModelLoader": "Causal Forcing Model Loader"}
