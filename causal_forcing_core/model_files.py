"""Where model files come from: a path the user gave, the models folder, or (only when asked) the hub.

Folder layout, the same whether files were downloaded or put there by hand::

    <models_dir>/Wan-AI/Wan2.1-T2V-1.3B/models_t5_umt5-xxl-enc-bf16.pth
    <models_dir>/Wan-AI/Wan2.1-T2V-1.3B/Wan2.1_VAE.pth
    <models_dir>/Wan-AI/Wan2.1-T2V-1.3B/google/umt5-xxl/          (tokenizer files)
    <models_dir>/zhuhz22/Causal-Forcing/chunkwise/causal_forcing.pt (students)

``models_dir`` defaults to ``$CF_MODELS_DIR`` or ``~/.cache/causal_forcing``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .checkpoints import download_from_hub
from .errors import CheckpointError

WAN_BASE_REPO = "Wan-AI/Wan2.1-T2V-1.3B"
TEXT_ENCODER_FILE = "models_t5_umt5-xxl-enc-bf16.pth"
VAE_FILE = "Wan2.1_VAE.pth"
TOKENIZER_DIR = "google/umt5-xxl"
STUDENT_REPO = "zhuhz22/Causal-Forcing"


@dataclass(frozen=True)
class StudentRelease:
    """A released student: its file in the Causal Forcing repo, sampler preset and which weights to take."""

    filename: str
    variant: str
    prefer_ema: bool


#: Released students by short name (reference §3.2).
STUDENTS: dict[str, StudentRelease] = {
    "chunkwise": StudentRelease("chunkwise/causal_forcing.pt", "chunkwise-4step", prefer_ema=False),
    "framewise": StudentRelease("framewise/causal_forcing.pt", "framewise-4step", prefer_ema=True),
    "framewise-2step": StudentRelease("causal-forcing++/framewise-2step.pt", "framewise-2step", prefer_ema=True),
    "framewise-1step": StudentRelease("causal-forcing++/framewise-1step.pt", "framewise-1step", prefer_ema=True),
    "longvideo": StudentRelease("chunkwise/longvideo.pt", "chunkwise-4step", prefer_ema=True),
}


def default_models_dir() -> Path:
    return Path(os.environ.get("CF_MODELS_DIR") or Path.home() / ".cache" / "causal_forcing")


def resolve(
    given: str | Path | None, repo_id: str, filename: str, models_dir: Path, *, download: bool, what: str
) -> Path:
    """A file (or folder, for ``filename`` ending in ``/*``) the user gave, found in ``models_dir``, or downloaded.

    Raises CheckpointError saying where to put the file, or to pass ``--download``, when it is nowhere.
    """
    if given is not None:
        path = Path(given).expanduser()
        if not path.exists():
            raise CheckpointError(f"The {what} file {path} does not exist.")
        return path
    name = filename.removesuffix("/*")
    local = models_dir / repo_id / name
    if local.exists():
        return local
    if download:
        return download_from_hub(repo_id, filename, models_dir / repo_id)
    raise CheckpointError(
        f"No {what} found: expected {local}. Put the file there (from huggingface.co/{repo_id}, file {name}), "
        f"give its path, or pass --download to fetch it."
    )
