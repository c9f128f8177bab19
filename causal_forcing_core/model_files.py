"""Where model files come from: a path the user gave, the models folder, or (only when asked) the hub.

Folder layout, the same whether files were downloaded or put there by hand::

    <models_dir>/Wan-AI/Wan2.1-T2V-1.3B/models_t5_umt5-xxl-enc-bf16.pth
    <models_dir>/Wan-AI/Wan2.1-T2V-1.3B/Wan2.1_VAE.pth
    <models_dir>/Wan-AI/Wan2.1-T2V-1.3B/google/umt5-xxl/          (tokenizer files)
    <models_dir>/zhuhz22/Causal-Forcing/chunkwise/causal_forcing.pt (students)
    <models_dir>/Efficient-Large-Model/LongLive-1.3B/models/lora.pt  (other students: their own repos)

``models_dir`` defaults to ``$CF_MODELS_DIR`` or ``~/.cache/causal_forcing``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import CheckpointError
from .students import CAUSAL_FORCING_REPO
from .students import STUDENTS as STUDENTS  # re-exported: the released students used to live here
from .students import StudentRelease as StudentRelease

WAN_BASE_REPO = "Wan-AI/Wan2.1-T2V-1.3B"
TEXT_ENCODER_FILE = "models_t5_umt5-xxl-enc-bf16.pth"
VAE_FILE = "Wan2.1_VAE.pth"
TOKENIZER_DIR = "google/umt5-xxl"
#: the Causal Forcing release; every student names its own repo (:data:`.students.STUDENTS`)
STUDENT_REPO = CAUSAL_FORCING_REPO
#: the hub library's logger (its retries and warnings)
_HUB_LOGGER = "huggingface_hub"
#: what the hub leaves beside a download that never started: its lock files and cache tags (a partial
#: ``*.incomplete`` download is kept, so the next --download resumes it)
_HUB_LEFTOVERS = (".lock", "CACHEDIR.TAG", ".gitignore")


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


def download_from_hub(repo_id: str, filename: str, local_dir: str | Path) -> Path:
    """Fetch ``filename`` (or, for a pattern ending in ``/*``, that folder) from the Hugging Face hub into
    ``local_dir`` (plain layout: ``local_dir/filename``); only ever called when the user asked for a download.

    ``huggingface_hub`` is imported only here, so everything else works without it. Raises CheckpointError naming
    the repo, the file and where to put it by hand when huggingface_hub is missing, the hub is offline
    (HF_HUB_OFFLINE=1) or the download fails.
    """
    target = Path(local_dir) / filename.removesuffix("/*")
    by_hand = f"Download it by hand from https://huggingface.co/{repo_id} and put it at {target}."
    try:
        from huggingface_hub import hf_hub_download, snapshot_download
    except ImportError:
        raise CheckpointError(
            f"huggingface-hub is not installed, so {filename} from {repo_id} cannot be downloaded. "
            f"Install it (pip install huggingface-hub) or: {by_hand}"
        ) from None
    created = _missing_folders(Path(local_dir), target)
    try:
        with _hub_logs_once():
            if filename.endswith("/*"):
                snapshot_download(repo_id=repo_id, allow_patterns=[filename], local_dir=str(local_dir))
                return target
            return Path(hf_hub_download(repo_id=repo_id, filename=filename, local_dir=str(local_dir)))
    except Exception as err:  # noqa: BLE001 - any hub failure ends in the same advice
        _remove_created(created)
        raise CheckpointError(
            f"Could not download {filename} from {repo_id} ({type(err).__name__}: {str(err)[:300]}). "
            f"Check the network (and HF_HUB_OFFLINE). {by_hand}"
        ) from None


@contextlib.contextmanager
def _hub_logs_once() -> Iterator[None]:
    """The hub library logs through a handler of its own and, propagating, through the application's too: every
    retry printed twice. While the application has handlers (the command line, ComfyUI), the library's are set
    aside, so each line prints once, in the application's format."""
    hub = logging.getLogger(_HUB_LOGGER)
    own = list(hub.handlers)
    if not (logging.getLogger().handlers and hub.propagate):
        yield
        return
    for handler in own:
        hub.removeHandler(handler)
    try:
        yield
    finally:
        for handler in own:
            hub.addHandler(handler)


def _missing_folders(local_dir: Path, target: Path) -> tuple[Path | None, set[Path]]:
    """Before a download: the highest missing folder on the way to ``target`` (created by the download), and the
    folders already inside ``local_dir`` (a download adds its cache folders there)."""
    top = None
    for parent in [target, *target.parents]:
        if parent.exists():
            break
        top = parent
    existing = {Path(root) for root, _, _ in os.walk(local_dir)} if local_dir.is_dir() else set()
    return top, existing


def _remove_created(created: tuple[Path | None, set[Path]]) -> None:
    """After a failed download: the folders it created, with only the hub's lock files and tags in them, go (a
    partial ``*.incomplete`` file and anything else keeps its folder)."""
    top, existing = created
    roots = [top] if top is not None else []
    roots += [Path(r) for r in sorted(existing)]
    for root in roots:
        if not root.is_dir():
            continue
        for folder, dirs, files in os.walk(root, topdown=False):
            here = Path(folder)
            if here in existing:
                continue
            for name in files:
                if name.endswith(_HUB_LEFTOVERS):
                    (here / name).unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # not empty: it holds something worth keeping
                here.rmdir()
