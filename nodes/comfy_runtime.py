"""The one place that touches ComfyUI (``comfy.*``, ``comfy_execution``, ``folder_paths``, ``server``).

ComfyUI modules are imported lazily, on first use. When ComfyUI is absent every function falls back to plain torch
behaviour (or does nothing), so node logic runs in tests and outside ComfyUI.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from ..causal_forcing_core.errors import InvalidInputError

logger = logging.getLogger(__name__)

#: extensions ComfyUI lists in model folders; the fallback listing uses the same set
MODEL_EXTENSIONS = frozenset({".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"})
#: environment variable naming the models root outside ComfyUI (``$CF_MODELS_DIR/<folder>/<file>``)
MODELS_DIR_ENV = "CF_MODELS_DIR"

_missing: set[str] = set()


def _optional(name: str) -> ModuleType | None:
    """Import ``name`` if it can be imported, else None. A miss is remembered (no repeated import search); a module
    placed in ``sys.modules`` later, as tests do with stand-ins, is still found."""
    module = sys.modules.get(name)
    if module is not None or name in _missing:
        return module
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        logger.debug("ComfyUI module %s not available (%s); using the fallback", name, exc)
        _missing.add(name)
        return None


def comfy_available() -> bool:
    """True inside ComfyUI: its ``comfy.model_management`` and ``folder_paths`` modules import."""
    return _optional("comfy.model_management") is not None and _optional("folder_paths") is not None


def get_torch_device() -> torch.device:
    """ComfyUI's compute device; outside ComfyUI the first of CUDA, MPS and CPU that is available."""
    mm = _optional("comfy.model_management")
    if mm is not None:
        return mm.get_torch_device()
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def throw_if_interrupted() -> None:
    """Raise ComfyUI's interruption exception when the user cancelled the run; a no-op outside ComfyUI.
    Call it between denoising steps and between chunks."""
    mm = _optional("comfy.model_management")
    if mm is not None:
        mm.throw_exception_if_processing_interrupted()


class ProgressBar:
    """A progress bar over ``total`` steps: ComfyUI's bar on the running node (whose updates are also
    interruption points), or, outside ComfyUI, one that logs at debug level.

    ``preview`` is ComfyUI's preview tuple ``("JPEG" | "PNG", PIL.Image, max_size | None)``; it is dropped outside
    ComfyUI.
    """

    def __init__(self, total: int, node_id: str | None = None) -> None:
        self.total = int(total)
        self.current = 0
        utils = _optional("comfy.utils")
        self._bar: Any = None
        if utils is not None:  # older ComfyUI releases take no node_id
            self._bar = utils.ProgressBar(self.total) if node_id is None else utils.ProgressBar(self.total, node_id)

    def update_absolute(self, value: int, total: int | None = None, preview: Any = None) -> None:
        """Set the progress to ``value`` (and the total, when given)."""
        if total is not None:
            self.total = int(total)
        self.current = int(value)
        if self._bar is not None:
            self._bar.update_absolute(self.current, self.total if total is not None else None, preview)
        else:
            logger.debug("progress %d/%d", self.current, self.total)

    def update(self, value: int = 1) -> None:
        """Advance the progress by ``value`` steps."""
        self.update_absolute(self.current + int(value))


def model_file_list(folder: str) -> list[str]:
    """Model file names in a ComfyUI model folder (``diffusion_models``, ``checkpoints``, ``vae_approx``...).

    Outside ComfyUI: the files with a model extension under ``$CF_MODELS_DIR/<folder>``, as sorted relative POSIX
    paths, or an empty list when that folder does not exist.
    """
    fp = _optional("folder_paths")
    if fp is not None:
        return list(fp.get_filename_list(folder))
    base = _fallback_folder(folder)
    if base is None or not base.is_dir():
        return []
    return sorted(
        p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file() and p.suffix.lower() in MODEL_EXTENSIONS
    )


def model_file_path(folder: str, name: str) -> str:
    """Full path of the model file ``name`` in ``folder``; raises FileNotFoundError saying where it looked.

    Outside ComfyUI the file is looked up under ``$CF_MODELS_DIR/<folder>``; names that leave that folder are refused.
    """
    fp = _optional("folder_paths")
    if fp is not None:
        return fp.get_full_path_or_raise(folder, name)
    base = _fallback_folder(folder)
    if base is None:
        raise FileNotFoundError(
            f"Model file {name!r} not found: ComfyUI is not loaded and {MODELS_DIR_ENV} is not set "
            f"(expected the file at ${MODELS_DIR_ENV}/{folder}/{name})."
        )
    path = (base / name).resolve()
    if not path.is_relative_to(base.resolve()) or not path.is_file():
        raise FileNotFoundError(f"Model file {name!r} not found in {base} (folder {folder!r} under ${MODELS_DIR_ENV}).")
    return str(path)


def _fallback_folder(folder: str) -> Path | None:
    root = os.environ.get(MODELS_DIR_ENV)
    return Path(root) / folder if root else None


def _prompt_server() -> Any:
    server = _optional("server")
    return getattr(getattr(server, "PromptServer", None), "instance", None)


def send_sync(event: str, data: dict[str, Any], sid: str | None = None) -> None:
    """Send a websocket event to the browser (``PromptServer.instance.send_sync``): to the client ``sid`` only, or
    to every client when None; a no-op outside ComfyUI. Event names of this pack start with ``causal_forcing.``."""
    instance = _prompt_server()
    if instance is not None:
        instance.send_sync(event, data, sid)
    else:
        logger.debug("event %s (no ComfyUI server, to %s): %s", event, sid or "all", data)


def current_client_id() -> str | None:
    """The websocket client id of whoever queued the prompt that is running (None when queued without one, or
    outside ComfyUI)."""
    return getattr(_prompt_server(), "client_id", None)


def client_connected(sid: str) -> bool:
    """Whether the websocket client ``sid`` is still connected (True outside ComfyUI: nothing to lose)."""
    instance = _prompt_server()
    sockets = getattr(instance, "sockets", None)
    return True if sockets is None else sid in sockets


def interruption_types() -> tuple[type[BaseException], ...]:
    """The exception ComfyUI raises when the user interrupts the queue (none outside ComfyUI)."""
    mm = _optional("comfy.model_management")
    exc = getattr(mm, "InterruptProcessingException", None)
    return (exc,) if isinstance(exc, type) else ()


def send_progress_text(text: str, node_id: str | None = None) -> None:
    """Show ``text`` on a node (``PromptServer.instance.send_progress_text``); ``node_id`` defaults to the node that
    is running. A no-op outside ComfyUI and in ComfyUI releases without text progress."""
    instance = _prompt_server()
    if instance is None or not hasattr(instance, "send_progress_text"):
        logger.debug("progress text: %s", text)
        return
    if node_id is None:
        execution = _optional("comfy_execution.utils")
        get_context = getattr(execution, "get_executing_context", None)
        context = get_context() if get_context is not None else None
        node_id = getattr(context, "node_id", None)
    if node_id is not None:
        instance.send_progress_text(text, node_id)


# --------------------------------------------------------------------------------------------------- folders
def model_folder_paths(folder: str) -> list[str]:
    """The directories of a ComfyUI model folder (``folder_paths.get_folder_paths``); outside ComfyUI
    ``$CF_MODELS_DIR/<folder>`` when that variable is set, else none."""
    fp = _optional("folder_paths")
    if fp is not None:
        try:
            return [str(p) for p in fp.get_folder_paths(folder)]
        except KeyError:
            return []
    base = _fallback_folder(folder)
    return [str(base)] if base is not None else []


def temp_directory() -> Path:
    """ComfyUI's temp folder (served by ``/view?type=temp``); outside ComfyUI a folder in the system temp dir."""
    fp = _optional("folder_paths")
    if fp is not None:
        return Path(fp.get_temp_directory())
    import tempfile

    return Path(tempfile.gettempdir()) / "causal_forcing_temp"


def output_directory() -> Path:
    """ComfyUI's output folder (served by ``/view?type=output``); outside ComfyUI a folder in the system temp dir."""
    fp = _optional("folder_paths")
    if fp is not None:
        return Path(fp.get_output_directory())
    import tempfile

    return Path(tempfile.gettempdir()) / "causal_forcing_output"


# --------------------------------------------------------------------------------------------------- memory
def offload_device() -> torch.device:
    """Where models rest between runs (ComfyUI's ``unet_offload_device``); outside ComfyUI the compute device."""
    mm = _optional("comfy.model_management")
    return mm.unet_offload_device() if mm is not None else get_torch_device()


def intermediate_device() -> torch.device:
    """Where IMAGE and LATENT outputs live (CPU)."""
    mm = _optional("comfy.model_management")
    return mm.intermediate_device() if mm is not None else torch.device("cpu")


class _Host(torch.nn.Module):
    """Holds a module for ComfyUI's ModelPatcher, which sets bookkeeping attributes (``device`` among them) on the
    module it manages; our models keep read-only properties of those names."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.inner = module


def manage_model(module: torch.nn.Module) -> Any:
    """A ComfyUI ``ModelPatcher`` for ``module`` (compute device / offload device, size from its tensors), so
    ComfyUI's memory management loads, offloads and frees it like its own models; None outside ComfyUI."""
    mp = _optional("comfy.model_patcher")
    mm = _optional("comfy.model_management")
    if mp is None or mm is None:
        return None
    return mp.ModelPatcher(_Host(module), load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())


def load_models(patchers: list[Any], memory_required: int = 0) -> None:
    """Make ComfyUI load these ModelPatchers to the compute device, freeing others so that ``memory_required``
    extra bytes (a KV cache, activations) fit as well. Outside ComfyUI (patchers None) a no-op."""
    present = [p for p in patchers if p is not None]
    mm = _optional("comfy.model_management")
    if mm is None or not present:
        return
    mm.load_models_gpu(present, memory_required=int(memory_required))


# --------------------------------------------------------------------------------------------------- native objects
#: ComfyUI's model config for a Wan 2.1 text-to-video DiT (``comfy.supported_models``), the one backbone the causal
#: students share; the other Wan configs (image-to-video, VACE, Wan 2.2...) have other inputs or latents
NATIVE_WAN_T2V = "WAN21_T2V"
#: what the other Wan model configs are, for the refusal message
_NATIVE_WAN_OTHERS = {
    "WAN21_I2V": "Wan 2.1 image-to-video (CLIP image input, 36 input channels)",
    "WAN21_FunControl2V": "Wan 2.1 Fun control",
    "WAN21_Camera": "Wan 2.1 camera control",
    "WAN21_Vace": "Wan 2.1 VACE",
    "WAN21_HuMo": "Wan 2.1 HuMo",
    "WAN22_T2V": "Wan 2.2 TI2V-5B (48-channel latents)",
    "WAN22_S2V": "Wan 2.2 speech-to-video",
    "WAN22_Animate": "Wan 2.2 Animate",
    "WAN22_Camera": "Wan 2.2 camera control",
}


@dataclass(frozen=True)
class NativeDiT:
    """The parts of a native ``MODEL`` the causal sampler runs on: ComfyUI's own Wan DiT module (its layers, casts
    and patches), where it computes, in which dtype, and the ModelPatcher that loads and patches it."""

    module: torch.nn.Module
    load_device: torch.device
    compute_dtype: torch.dtype
    patcher: Any


def _model_kind(model: Any) -> str:
    base = getattr(model, "model", None)
    config = getattr(base, "model_config", None)
    if config is None:
        return f"a {type(model).__name__} (not a ComfyUI MODEL)"
    name = type(config).__name__
    return f"{_NATIVE_WAN_OTHERS.get(name, name)} ({type(base).__name__} / {name})"


def native_wan_dit(model: Any) -> NativeDiT:
    """The Wan 2.1 text-to-video DiT inside a native ``MODEL`` (a ModelPatcher from UNETLoader, a checkpoint
    loader, LoraLoaderModelOnly...). Raises InvalidInputError naming what was received when it is another model,
    or GGUF-quantised (whose weights only the GGUF pack's own layers can read)."""
    base = getattr(model, "model", None)
    config_name = type(getattr(base, "model_config", None)).__name__
    if config_name != NATIVE_WAN_T2V:
        raise InvalidInputError(
            f"Causal Forcing runs on a Wan 2.1 text-to-video DiT (ComfyUI's {NATIVE_WAN_T2V}), but this MODEL is "
            f"{_model_kind(model)}. Load a Causal Forcing student (or Wan2.1-T2V-1.3B) with Load Diffusion Model."
        )
    get = getattr(model, "get_model_object", None)
    module = get("diffusion_model") if callable(get) else base.diffusion_model
    quantised = {type(p).__name__ for p in module.parameters()} & {"GGMLTensor"}
    if quantised:
        raise InvalidInputError(
            "This MODEL holds GGUF-quantised weights, which the causal sampler does not read. Load the student "
            "as .safetensors with Load Diffusion Model instead (weight_dtype fp8_e4m3fn halves its memory)."
        )
    cast = get("manual_cast_dtype") if callable(get) else getattr(base, "manual_cast_dtype", None)
    return NativeDiT(module, torch.device(model.load_device), cast or base.get_dtype(), model)


def patched_weights_id(patcher: Any) -> object:
    """Which patches ComfyUI applied to the weights the patcher's model now holds (its ``patches_uuid`` after a
    load); None when unknown. Two MODELs sharing one base model hold each other's patches only while loaded."""
    base = getattr(patcher, "model", None)
    return getattr(base, "current_weight_patches_uuid", None)


def clip_encode(clip: Any, text: str) -> list:
    """Encode ``text`` with a native ``CLIP`` the way CLIPTextEncode does; returns a ``CONDITIONING``."""
    if clip is None or not hasattr(clip, "tokenize"):
        raise TypeError(f"expected a ComfyUI CLIP object, got {type(clip).__name__}")
    tokens = clip.tokenize(text)
    if hasattr(clip, "encode_from_tokens_scheduled"):
        return clip.encode_from_tokens_scheduled(tokens)
    cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
    return [[cond, {"pooled_output": pooled}]]


def native_vae_module(vae: Any) -> torch.nn.Module | None:
    """The torch module inside a native ``VAE`` (``first_stage_model``), or None when ``vae`` is not one."""
    module = getattr(vae, "first_stage_model", None)
    return module if isinstance(module, torch.nn.Module) else None


def native_vae_patcher(vae: Any) -> Any:
    """The ModelPatcher of a native ``VAE`` (to load it through ComfyUI's memory management), or None."""
    return getattr(vae, "patcher", None)


def wan21_latent_rgb() -> tuple[torch.Tensor, torch.Tensor] | None:
    """ComfyUI's latent->RGB preview factors for Wan 2.1, as ``(factors [16, 3], bias [3])`` mapping *normalised*
    latents straight to RGB in [0, 1] (ComfyUI's map to [-1, 1], halved and shifted); None outside ComfyUI."""
    formats = _optional("comfy.latent_formats")
    fmt = getattr(formats, "Wan21", None)
    if fmt is None:
        return None
    latent_format = fmt()
    factors = getattr(latent_format, "latent_rgb_factors", None)
    if factors is None:
        return None
    bias = getattr(latent_format, "latent_rgb_factors_bias", None) or [0.0, 0.0, 0.0]
    factors_t = torch.tensor(factors, dtype=torch.float32)
    bias_t = torch.tensor(bias, dtype=torch.float32)
    return factors_t / 2, (bias_t + 1) / 2


def parse_json_body(raw: bytes) -> tuple[Any, str | None]:
    """A request body as JSON: ``(value, None)``, or ``(None, why)`` when it is not JSON, not UTF-8, or nested too
    deeply for the parser (``[`` x 16,000 raises RecursionError inside ``json``); an empty body is ``None``."""
    try:
        return json.loads(raw or b"null"), None
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None, "The request body is not JSON (or is nested too deeply)."


def add_json_route(method: str, path: str, handle: Any, max_body: int = 16_384) -> bool:
    """Register ``handle(query: dict, body: dict | None) -> (status, dict)`` as an aiohttp route on ComfyUI's
    server (also served under ``/api``): JSON in (at most ``max_body`` bytes), JSON out. The handler may block (it
    runs on a worker thread, not on the server's event loop). False outside ComfyUI."""
    instance = _prompt_server()
    web = _optional("aiohttp.web") if instance is not None else None
    if web is None:
        return False

    async def route(request: Any) -> Any:
        import asyncio

        body = None
        if request.method == "POST":
            if request.content_length is not None and request.content_length > max_body:
                return web.json_response({"error": f"Request body over {max_body} bytes."}, status=413)
            raw = await request.content.read(max_body + 1)
            if len(raw) > max_body:
                return web.json_response({"error": f"Request body over {max_body} bytes."}, status=413)
            body, problem = parse_json_body(raw)
            if problem is not None:
                return web.json_response({"error": problem}, status=400)
        status, data = await asyncio.get_running_loop().run_in_executor(None, handle, dict(request.query), body)
        return web.json_response(data, status=status)

    getattr(instance.routes, method.lower())(path)(route)
    return True
