"""The embedded toy model in the loaders' file lists.

When a complete toy bundle is available (the one shipped in ``causal_forcing_core/toy/bundle/``, or the folder named
by ``$CAUSAL_FORCING_TOY_BUNDLE``), the Model, Text Encoder and VAE loaders list one extra choice each, after the
user's files, and the Text Encoder loader's tokenizer list one more folder:

=================================================  =====================================
``[embedded toy] cf_toy_chunkwise.safetensors``    Causal Forcing Model Loader
``[embedded toy] cf_toy_umt5.safetensors``         Causal Forcing Text Encoder Loader
``[embedded toy] cf_toy_tokenizer``                its tokenizer list
``[embedded toy] cf_toy_vae.safetensors``          Causal Forcing VAE Loader
=================================================  =====================================

The names are stable (the toy workflows store them) and resolve to the bundle's files at load time; a user file of
the very same name is shadowed by the embedded entry. Nothing here touches ComfyUI.
"""

from __future__ import annotations

from pathlib import Path

from ..causal_forcing_core.errors import CheckpointError
from ..causal_forcing_core.toy.bundle import (
    BUNDLE_ENV,
    DIT_FILE,
    TEXT_ENCODER_FILE,
    TOKENIZER_DIR,
    VAE_FILE,
    ToyBundlePaths,
    bundle_available,
)
from ..causal_forcing_core.toy.components import TOY_TEXT_LEN

EMBEDDED_TAG = "[embedded toy]"


def entry_name(file_name: str) -> str:
    """The loader choice for a bundle file: ``"[embedded toy] <file>"``."""
    return f"{EMBEDDED_TAG} {file_name}"


MODEL_ENTRY = entry_name(DIT_FILE)
TEXT_ENCODER_ENTRY = entry_name(TEXT_ENCODER_FILE)
TOKENIZER_ENTRY = entry_name(TOKENIZER_DIR)
VAE_ENTRY = entry_name(VAE_FILE)
#: loader choice -> attribute of :class:`ToyBundlePaths` it resolves to
_ENTRIES = {MODEL_ENTRY: "dit", TEXT_ENCODER_ENTRY: "text_encoder", TOKENIZER_ENTRY: "tokenizer", VAE_ENTRY: "vae"}


def is_embedded(name: str) -> bool:
    """True for one of the embedded toy entries."""
    return name in _ENTRIES


def with_embedded(choices: list[str], entry: str) -> list[str]:
    """``choices`` with ``entry`` appended when the toy bundle is available (and not already listed)."""
    if entry in choices or not bundle_available():
        return list(choices)
    return [*choices, entry]


def embedded_path(name: str) -> Path:
    """The bundle file (or tokenizer folder) an embedded entry stands for; CheckpointError when the bundle is
    incomplete."""
    if name not in _ENTRIES:
        raise KeyError(name)
    paths = ToyBundlePaths.of()
    if paths.missing():
        raise CheckpointError(
            f"{name} is the embedded toy model, but its bundle in {paths.folder} is incomplete "
            f"({', '.join(paths.missing())} missing). Reinstall the pack, or point {BUNDLE_ENV} at a toy bundle "
            "folder (train one with `python -m causal_forcing_core train-toy`)."
        )
    return getattr(paths, _ENTRIES[name])


def embedded_text_len() -> int:
    """Text tokens of the toy model (from the bundle's manifest)."""
    return int(ToyBundlePaths.of().read_manifest().get("text_len", TOY_TEXT_LEN))
