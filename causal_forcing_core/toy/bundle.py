"""The embedded toy model: a trained DiT, text encoder + tokenizer and VAE that ship inside the package.

Layout of a bundle folder (the shipped one is ``causal_forcing_core/toy/bundle/``)::

    cf_toy_chunkwise.safetensors   causal DiT, bare Wan keys, metadata dit_config + variant (like `convert` writes)
    cf_toy_umt5.safetensors        tiny umT5 encoder, reference key layout
    cf_toy_tokenizer/              word-level tokenizer over the toy vocabulary (Hugging Face files)
    cf_toy_vae.safetensors         tiny Wan 2.1 VAE (16 latent channels, Wan's latent mean/std)
    manifest.json                  how it was trained and how it scored

Every file is an ordinary file of its kind: the DiT loads with :func:`..checkpoints.load_dit`, the encoder with
:func:`..text_encoder.load_text_encoder`, the VAE with :func:`..vae.load_vae`, so the ComfyUI loaders read them too.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..checkpoints import LoadedDiT, load_dit
from ..errors import CheckpointError
from ..text_encoder import TextEncoder, load_text_encoder
from ..vae import WanVAE, load_vae
from .components import TOY_TEXT_LEN

logger = logging.getLogger(__name__)

BUNDLE_DIR = Path(__file__).resolve().parent / "bundle"
DIT_FILE = "cf_toy_chunkwise.safetensors"
TEXT_ENCODER_FILE = "cf_toy_umt5.safetensors"
TOKENIZER_DIR = "cf_toy_tokenizer"
VAE_FILE = "cf_toy_vae.safetensors"
MANIFEST_FILE = "manifest.json"
#: environment variable that points the loaders at another bundle folder (e.g. one you trained yourself)
BUNDLE_ENV = "CAUSAL_FORCING_TOY_BUNDLE"


@dataclass(frozen=True)
class ToyBundlePaths:
    """Where the files of one bundle are."""

    folder: Path
    dit: Path
    text_encoder: Path
    tokenizer: Path
    vae: Path
    manifest: Path

    @classmethod
    def of(cls, folder: str | Path | None = None) -> ToyBundlePaths:
        """Paths of the bundle in ``folder`` (default: ``$CAUSAL_FORCING_TOY_BUNDLE``, else the shipped one)."""
        root = Path(folder or os.environ.get(BUNDLE_ENV) or BUNDLE_DIR)
        return cls(root, root / DIT_FILE, root / TEXT_ENCODER_FILE, root / TOKENIZER_DIR, root / VAE_FILE,
                   root / MANIFEST_FILE)

    def missing(self) -> list[str]:
        """Names of the bundle's files that are not there."""
        return [p.name for p in (self.dit, self.text_encoder, self.vae, self.manifest) if not p.is_file()] + (
            [] if (self.tokenizer / "tokenizer.json").is_file() else [self.tokenizer.name]
        )

    def check(self) -> ToyBundlePaths:
        missing = self.missing()
        if missing:
            raise CheckpointError(
                f"The toy model bundle in {self.folder} is incomplete: {', '.join(missing)} missing. Train one with "
                "`python -m causal_forcing_core train-toy --out runs/toy` and point "
                f"{BUNDLE_ENV} at runs/toy/bundle, or reinstall the pack."
            )
        return self

    def read_manifest(self) -> dict[str, Any]:
        return json.loads(self.manifest.read_text()) if self.manifest.is_file() else {}


def bundle_available(folder: str | Path | None = None) -> bool:
    """True when the bundle in ``folder`` (see :meth:`ToyBundlePaths.of`) has all its files."""
    return not ToyBundlePaths.of(folder).missing()


@dataclass
class ToyModel:
    """The loaded toy model: the student (with its sampler preset), the text encoder and the VAE."""

    student: LoadedDiT
    text_encoder: TextEncoder
    vae: WanVAE
    paths: ToyBundlePaths
    manifest: dict[str, Any] = field(default_factory=dict)


def load_toy_model(folder: str | Path | None = None, *, device: torch.device | str = "cpu") -> ToyModel:
    """Load every component of a bundle in float32 on ``device``; corrupt or incomplete files raise CheckpointError."""
    paths = ToyBundlePaths.of(folder).check()
    student = load_dit(paths.dit, weight_dtype="fp32", device=device)
    text_encoder = load_text_encoder(paths.text_encoder, paths.tokenizer, device=device, dtype=torch.float32,
                                     text_len=student.config.text_len)
    vae = load_vae(paths.vae, device=device)
    return ToyModel(student, text_encoder, vae, paths, paths.read_manifest())


def write_bundle(
    folder: str | Path, *, dit: Path, text_encoder: Path, tokenizer: Path, vae: Path, manifest: dict[str, Any],
) -> ToyBundlePaths:
    """Copy trained component files into a bundle folder (replacing what is there) and write its manifest."""
    paths = ToyBundlePaths.of(folder)
    paths.folder.mkdir(parents=True, exist_ok=True)
    for src, dst in ((dit, paths.dit), (text_encoder, paths.text_encoder), (vae, paths.vae)):
        shutil.copyfile(src, dst)
    if paths.tokenizer.exists():
        shutil.rmtree(paths.tokenizer)
    shutil.copytree(tokenizer, paths.tokenizer)
    paths.manifest.write_text(json.dumps({"text_len": TOY_TEXT_LEN, **manifest}, indent=2, sort_keys=True) + "\n")
    logger.info("Wrote the toy bundle to %s", paths.folder)
    return paths.check()
