"""Models: Causal Forcing Model Loader (a student file), Causal Forcing Native Model (a native ``MODEL``) and Causal
Forcing LoRA, each giving a ``CF_MODEL``.

The DiT is wrapped in a ComfyUI ModelPatcher (through :mod:`.comfy_runtime`), so ComfyUI's memory management loads
it to the GPU for a run, offloads it when another model needs the memory, and frees it when the loader's output is
dropped. The preview decoder shown on the Generate nodes is chosen here as well.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from comfy_api.latest import io

from ..causal_forcing_core.checkpoints import CheckpointError, load_dit
from ..causal_forcing_core.config import SAMPLER_PRESETS, DiTConfig, SamplerConfig, check_sampler_fits, sampler_preset
from ..causal_forcing_core.dit_borrow import borrow_layers, check_causal_backbone
from ..causal_forcing_core.errors import InvalidInputError
from ..causal_forcing_core.geometry import WAN21
from ..causal_forcing_core.lora import check_strength, load_lora, plan_loras
from ..causal_forcing_core.preview_fallback import LatentRGBPreview, Previewer, make_preview_decoder
from ..causal_forcing_core.students import DEFAULT_SAMPLER, StudentRelease, student_for_file
from . import comfy_runtime as rt
from . import toy_entries as toy
from .common import CATEGORY
from .payloads import CFModel, CFModelSocket

logger = logging.getLogger(__name__)

VARIANTS = ("auto", *SAMPLER_PRESETS)
WEIGHT_DTYPES = ("auto", "bf16", "fp16", "fp32", "fp8_e4m3fn")
PREVIEW_AUTO, PREVIEW_LATENT2RGB, PREVIEW_NONE = "auto", "latent2rgb", "none"
#: preview decoder files picked by "auto" (TAEHV for Wan 2.1)
_TAEW_PREFIX = "taew2_1"
#: inputs of native loaders that name the model file (UNETLoader, CheckpointLoaderSimple, ...)
_FILE_INPUTS = ("unet_name", "ckpt_name", "model_name")
#: how many MODEL-to-MODEL nodes (LoRA loaders, patches) the file-name search follows upstream
_MAX_HOPS = 32


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
    """A sampler preset from a file name without metadata: the released student the name stands for
    (:func:`~causal_forcing_core.students.student_for_file`: framewise, 1step/2step, the long-video student trained
    for rolling-4step, LongLive, Self Forcing, Rolling Forcing, CausVid...), else chunkwise-4step."""
    found = student_for_file(name)
    return found[1].variant if found else DEFAULT_SAMPLER


def _variant_sampler(variant: str, file_name: str | None, what: str) -> SamplerConfig:
    """The sampler of the variant widget; ``auto`` guesses it from the file name (warning when there is none)."""
    if variant != "auto":
        return sampler_preset(variant)
    sampler = sampler_preset(guess_variant(file_name or ""))
    logger.warning(
        "%s does not say which sampler it was trained for; from %s it looks like %s. Pick the variant on the node "
        "if that is wrong.", what, f"its file name {file_name!r}" if file_name else "nothing (no file name found)",
        sampler.name,
    )
    return sampler


def upstream_model_file(prompt: dict[str, Any] | None, node_id: str | None, input_name: str = "model") -> str | None:
    """The model file a node's ``input_name`` MODEL was loaded from: the API prompt is followed upstream through
    MODEL-to-MODEL nodes (LoRA loaders, patches) to the loader whose ``unet_name``/``ckpt_name`` names it. None
    when the prompt is not known or no loader is found."""
    if not isinstance(prompt, dict) or node_id is None:
        return None
    link = (prompt.get(str(node_id)) or {}).get("inputs", {}).get(input_name)
    for _ in range(_MAX_HOPS):
        if not (isinstance(link, list) and link):
            return None
        inputs = (prompt.get(str(link[0])) or {}).get("inputs", {})
        for name in _FILE_INPUTS:
            if isinstance(inputs.get(name), str):
                return inputs[name]
        link = inputs.get("model")
    return None


def adapt_native_model(model: Any, variant: str = "auto", preview: str = PREVIEW_AUTO, file_name: str | None = None) -> CFModel:
    """A ``CF_MODEL`` running the causal sampler on a native ``MODEL``'s own Wan DiT (ComfyUI's weights, casts and
    patches; nothing copied); see :class:`CausalForcingNativeModel`."""
    native = rt.native_wan_dit(model)
    name = Path(file_name).stem if file_name else "native Wan model"
    config = DiTConfig.from_state_dict(dict(native.module.named_parameters()))
    check_causal_backbone(config, f"The MODEL ({name})")
    dit = borrow_layers(
        native.module, config, device=native.load_device, compute_dtype=native.compute_dtype,
        patch_dtype=torch.float32,  # ComfyUI's Wan keeps its patch embedding in float32
        weights_probe=lambda: ("comfy", rt.patched_weights_id(model)),  # every MODEL on this base sees its patches
    )
    sampler = _variant_sampler(variant, file_name, f"The MODEL ({name})")
    previewer = load_previewer(preview, native.load_device)
    return CFModel(dit, sampler, name, WAN21.trained_latent_frames, previewer, patcher=model, native=True)


def _compute_dtype(storage: str, device: torch.device) -> torch.dtype | None:
    if device.type == "cpu":
        return torch.float32  # bf16/fp16 matmuls are slow or missing on CPUs
    return {"fp16": torch.float16, "fp32": torch.float32}.get(storage, torch.bfloat16)


def load_model(name: str, variant: str = "auto", weight_dtype: str = "auto", preview: str = PREVIEW_AUTO) -> CFModel:
    """Load the student ``name`` from the model folders; see :class:`CausalForcingModelLoader`."""
    path = model_path(name)
    device = rt.get_torch_device()
    release = student_for_file(name)
    loaded = load_dit(
        path, weight_dtype=weight_dtype, compute_dtype=_compute_dtype(weight_dtype, device),
        device=rt.offload_device(), variant=None if variant == "auto" else variant,
        prefer_ema=release[1].prefer_ema if release else None,  # which weights of a release .pt its student runs
    )
    if release is not None:
        _log_release_settings(name, *release)
    sampler = loaded.sampler
    if variant != "auto":  # the file's own word (a converted file remembers its sampler) against the widget's
        own = loaded.metadata.get("variant")
        check_sampler_fits(sampler_preset(own) if own in SAMPLER_PRESETS else None, sampler, name, "variant")
    if sampler is None:
        sampler = _variant_sampler("auto", name, name)
    max_frames = int(loaded.metadata.get("max_frames") or WAN21.trained_latent_frames)
    previewer = load_previewer(preview, device)
    model = CFModel(loaded.model, sampler, Path(path).stem, max_frames, previewer)
    model.patcher = rt.manage_model(loaded.model)
    return model


def _log_release_settings(file_name: str, key: str, release: StudentRelease) -> None:
    """Say what else a recognised student's release runs with (its LoRA, window, sink), which the loader cannot
    set: the LoRA is a Causal Forcing LoRA node, the attention a setting of Causal Forcing Start."""
    needs = []
    if release.lora is not None:
        needs.append(f"its LoRA {Path(release.lora.filename).name} from {release.repo} through Causal Forcing LoRA "
                     "(strength 1.0)")
    if release.window_frames:
        needs.append(f"window_frames {release.window_frames} and sink_frames {release.sink_frames} on Causal "
                     f"Forcing Start (re-cache: {release.recache.value})")
    if needs:
        logger.info("%s looks like the %s release (%s); it runs with %s.", file_name, key, release.title,
                    "; ".join(needs))


def _preview_input() -> Any:
    return io.Combo.Input("preview", options=preview_choices(), default=PREVIEW_AUTO, tooltip=(
        "Live preview decoder: a TAEHV taew2_1 file from models/vae_approx (auto picks it when present), latent2rgb "
        "(rough colours, no file), or none."))


class CausalForcingModelLoader(io.ComfyNode):
    """Load a Causal Forcing (or Self Forcing) student from ``diffusion_models`` or ``checkpoints``."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CausalForcingModelLoader", display_name="Causal Forcing Model Loader", category=CATEGORY,
            description=(
                "Loads a Causal Forcing student (a causal Wan2.1-T2V-1.3B DiT) for chunk-by-chunk generation with a "
                "KV cache. Files: .safetensors (converted, remembers its variant), or the release .pt/.pth. 'auto' "
                "variant reads the file's metadata, else the file name: the Causal Forcing releases and the "
                "students of the same backbone (LongLive, Self Forcing, Rolling Forcing, CausVid) get their own "
                "sampler and weights; pick the variant yourself for a file named otherwise."
            ),
            inputs=[
                io.Combo.Input("model_name", options=model_choices(), tooltip=(
                    "Student weights in models/diffusion_models or models/checkpoints; "
                    f"'{toy.MODEL_ENTRY}' is the small toy model that ships with the pack.")),
                io.Combo.Input("variant", options=list(VARIANTS), default="auto", tooltip=(
                    "Sampler the student was trained for: chunk-wise 3-frame blocks with 4 steps, frame-wise with "
                    "4, 2 or 1 steps, or another student's preset. auto: from the file's metadata, else its name.")),
                io.Combo.Input("weight_dtype", options=list(WEIGHT_DTYPES), default="auto", tooltip=(
                    "Storage precision. auto keeps the file's; fp8_e4m3fn halves memory (computed in bf16).")),
                _preview_input(),
            ],
            outputs=[CFModelSocket.Output(display_name="model", tooltip=(
                "The student with its sampler preset, ready for Causal Forcing Start."))],
        )

    @classmethod
    def execute(cls, model_name: str, variant: str, weight_dtype: str, preview: str) -> io.NodeOutput:
        return io.NodeOutput(load_model(model_name, variant, weight_dtype, preview))


class CausalForcingNativeModel(io.ComfyNode):
    """A native ``MODEL`` (Load Diffusion Model, a checkpoint loader, LoRA loaders...) as a ``CF_MODEL``."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CausalForcingNativeModel", display_name="Causal Forcing Native Model", category=CATEGORY,
            description=(
                "Runs Causal Forcing's chunk-by-chunk sampler on a native MODEL: a Causal Forcing student loaded with "
                "Load Diffusion Model (fp8 weight dtypes included), with any LoRA applied by LoraLoaderModelOnly. "
                "ComfyUI's own weights, casts, LoRA patches and low-VRAM loading are used as they are; nothing is "
                "copied. Only a Wan 2.1 text-to-video DiT fits. Patches that replace the model's forward (block "
                "swaps, caches) do not apply."
            ),
            inputs=[
                io.Model.Input("model", tooltip="A Wan 2.1 T2V Causal Forcing student from Load Diffusion Model."),
                io.Combo.Input("variant", options=list(VARIANTS), default="auto", tooltip=(
                    "Sampler the student was trained for. auto: guessed from the loaded file's name (framewise / "
                    "1step / 2step / longvideo / longlive / self_forcing / rolling_forcing / causvid), else "
                    "chunkwise-4step.")),
                _preview_input(),
            ],
            outputs=[CFModelSocket.Output(display_name="model", tooltip=(
                "The native model with its sampler preset, ready for Causal Forcing Start."))],
            hidden=[io.Hidden.prompt, io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model: Any, variant: str, preview: str) -> io.NodeOutput:
        file_name = upstream_model_file(cls.hidden.prompt, cls.hidden.unique_id)
        return io.NodeOutput(adapt_native_model(model, variant, preview, file_name))


def add_lora(model: CFModel, lora_name: str, strength: float, ignore_unmatched: bool = False) -> CFModel:
    """``model`` with the LoRA file ``lora_name`` (from ``models/loras``) at ``strength`` added to its LoRA set
    (a new CF_MODEL: the input one, which other branches may use, keeps its own set); see
    :class:`CausalForcingLoRA`. The LoRA is checked against the model's layers here, before anything runs."""
    strength = check_strength(strength)
    if model.native:
        raise InvalidInputError(
            f"{model.name} is a native MODEL: apply LoRAs to it with LoraLoaderModelOnly before Causal Forcing Native "
            "Model (ComfyUI patches its weights); Causal Forcing LoRA is for Causal Forcing Model Loader models."
        )
    lora = load_lora(rt.model_file_path("loras", lora_name))
    loras = (*model.loras, (lora, strength))
    unmatched = ignore_unmatched or model.ignore_unmatched
    plan_loras(model.dit, loras, ignore_unmatched=unmatched)
    return replace(model, loras=loras, ignore_unmatched=unmatched)


class CausalForcingLoRA(io.ComfyNode):
    """Apply a LoRA to a ``CF_MODEL`` (chain several for a stack)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CausalForcingLoRA", display_name="Causal Forcing LoRA", category=CATEGORY,
            description=(
                "Applies a LoRA file from models/loras to a Causal Forcing model: diffusers/PEFT, kohya/ComfyUI and "
                "LongLive's lora.pt. The weights are merged while this model runs and unmerged exactly when a branch "
                "without it runs, so one loader can feed branches with different LoRAs. A stream started on one LoRA "
                "set goes on only on that set. For a native MODEL use LoraLoaderModelOnly instead."
            ),
            inputs=[
                CFModelSocket.Input("model"),
                io.Combo.Input("lora_name", options=rt.model_file_list("loras"),
                               tooltip="A LoRA of the Wan 2.1 1.3B DiT in models/loras."),
                io.Float.Input("strength", default=1.0, min=-10.0, max=10.0, step=0.01,
                               tooltip="How much of the LoRA to add; 0 leaves the model as it is."),
                io.Boolean.Input("ignore_unmatched", default=False, tooltip=(
                    "Apply the layers that match this model and ignore the others (off: a LoRA with layers this "
                    "model lacks is refused, naming them).")),
            ],
            outputs=[CFModelSocket.Output(display_name="model", tooltip="The model with this LoRA added to its LoRA set.")],
        )

    @classmethod
    def execute(cls, model: CFModel, lora_name: str, strength: float, ignore_unmatched: bool) -> io.NodeOutput:
        return io.NodeOutput(add_lora(model, lora_name, strength, ignore_unmatched))


#: the nodes of this module, registered by :mod:`nodes`
NODES: tuple[type[io.ComfyNode], ...] = (CausalForcingModelLoader, CausalForcingNativeModel, CausalForcingLoRA)
