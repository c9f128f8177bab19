"""The one place that touches ComfyUI (``comfy.*``, ``folder_paths``, ``server``).

Every function falls back to plain torch behaviour when ComfyUI is absent, so node logic runs in tests.
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

logger = logging.getLogger(__name__)


def _optional(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def comfy_available() -> bool:
    """True inside a running ComfyUI (its ``comfy`` and ``folder_paths`` modules import)."""
    return _optional("comfy.model_management") is not None and _optional("folder_paths") is not None


def get_torch_device() -> torch.device:
    """ComfyUI's compute device, else CUDA, MPS or CPU."""
    mm = _optional("comfy.model_management")
    if mm is not None:
        return mm.get_torch_device()
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def throw_if_interrupted() -> None:
    """Raise ComfyUI's interruption exception when the user pressed Cancel; no-op outside ComfyUI."""
    mm = _optional("comfy.model_management")
    if mm is not None:
        mm.throw_exception_if_processing_interrupted()


class _LoggingProgressBar:
    """Stand-in for ``comfy.utils.ProgressBar`` that logs progress."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.current = 0

    def update_absolute(self, value: int, total: int | None = None, preview: Any = None) -> None:
        if total is not None:
            self.total = total
        self.current = value
        logger.debug("progress %d/%d", self.current, self.total)

    def update(self, value: int) -> None:
        self.update_absolute(self.current + value)


def progress_bar(total: int) -> Any:
    """A progress bar over ``total`` steps: ComfyUI's (shown on the node) or a logging stand-in."""
    utils = _optional("comfy.utils")
    if utils is not None:
        return utils.ProgressBar(total)
    return _LoggingProgressBar(total)


def model_file_list(folder: str) -> list[str]:
    """File names in a ComfyUI model folder (``diffusion_models``, ``vae``...); outside ComfyUI, the files under
    ``$CF_MODELS_DIR/<folder>``."""
    fp = _optional("folder_paths")
    if fp is not None:
        return list(fp.get_filename_list(folder))
    root = os.environ.get("CF_MODELS_DIR")
    if not root or not (Path(root) / folder).is_dir():
        return []
    base = Path(root) / folder
    return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())


def model_file_path(folder: str, name: str) -> str:
    """Full path of ``name`` in a model folder; raises FileNotFoundError naming the folder when it is absent."""
    fp = _optional("folder_paths")
    if fp is not None:
        return fp.get_full_path_or_raise(folder, name)
    root = os.environ.get("CF_MODELS_DIR", "")
    path = Path(root) / folder / name
    if not root or not path.is_file():
        raise FileNotFoundError(f"Model file {name!r} not found in folder {folder!r} (CF_MODELS_DIR={root!r}).")
    return str(path)


def send_sync(event: str, data: dict[str, Any]) -> None:
    """Send a websocket message to the browser (``PromptServer.instance.send_sync``); no-op outside ComfyUI."""
    server = _optional("server")
    instance = getattr(getattr(server, "PromptServer", None), "instance", None)
    if instance is not None:
        instance.send_sync(event, data)
