"""A toy-model bundle for tests: the shipped one when it is there, else one with random weights.

:func:`write_random_toy_bundle` writes every file of a bundle (see :mod:`causal_forcing_core.toy.bundle`) with the
toy architectures and random weights, in the same formats the trained bundle uses, so the demo, the loaders and the
toy workflows run end to end before (and without) the trained weights.

Fixtures (imported by ``conftest.py``):

- ``toy_bundle_session``: the folder of a complete bundle, written once per session when the shipped one is absent;
- ``toy_bundle``: that folder, with ``$CAUSAL_FORCING_TOY_BUNDLE`` pointing at it for the test when it is not the
  shipped one (so ``bundle_available()`` and the loaders find it).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from causal_forcing_core.checkpoint_convert import dit_metadata
from causal_forcing_core.config import sampler_preset
from causal_forcing_core.dit import CausalWanModel
from causal_forcing_core.toy.bundle import BUNDLE_DIR, BUNDLE_ENV, ToyBundlePaths, bundle_available, write_bundle
from causal_forcing_core.toy.components import TOY_DIT, TOY_VAE, tiny_umt5_weights, write_toy_tokenizer
from causal_forcing_core.vae import WanVAE

#: the sampler the toy student is distilled for (chunk-wise, like the shipped one)
TOY_VARIANT = "chunkwise-4step"


def _random_dit(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = CausalWanModel(TOY_DIT)
    with torch.no_grad():  # non-zero biases, so modulation and projections matter as in trained weights
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.05)
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def write_random_toy_bundle(folder: Path, seed: int = 0) -> Path:
    """Write a complete bundle with random TOY_DIT / TOY_VAE weights and the toy umT5 + tokenizer into ``folder``.

    The DiT file carries ``dit_config`` and ``variant`` metadata like a converted student; the manifest says it is
    random. Returns ``folder``.
    """
    folder = Path(folder)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        save_file(_random_dit(seed), str(work / "dit.safetensors"), metadata=dit_metadata(
            TOY_DIT, sampler_preset(TOY_VARIANT), source="random toy bundle (tests/toy_bundle.py)", source_key=""))
        save_file({k: v.contiguous() for k, v in tiny_umt5_weights().items()}, str(work / "umt5.safetensors"))
        torch.manual_seed(seed)
        save_file({k: v.contiguous() for k, v in WanVAE(TOY_VAE).state_dict().items()}, str(work / "vae.safetensors"))
        write_bundle(
            folder, dit=work / "dit.safetensors", text_encoder=work / "umt5.safetensors",
            tokenizer=write_toy_tokenizer(work / "tokenizer"), vae=work / "vae.safetensors",
            manifest={"random": True, "variant": TOY_VARIANT, "seed": seed, "fps": 16},
        )
    return folder


@pytest.fixture(scope="session")
def toy_bundle_session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete bundle folder: the shipped one if present, else a random one written once per session."""
    if bundle_available(BUNDLE_DIR):
        return BUNDLE_DIR
    return write_random_toy_bundle(tmp_path_factory.mktemp("toy_bundle"))


@pytest.fixture
def toy_bundle(toy_bundle_session: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ToyBundlePaths]:
    """The bundle's paths; ``$CAUSAL_FORCING_TOY_BUNDLE`` points at it unless it is the shipped one."""
    if toy_bundle_session == BUNDLE_DIR:
        monkeypatch.delenv(BUNDLE_ENV, raising=False)
    else:
        monkeypatch.setenv(BUNDLE_ENV, str(toy_bundle_session))
    assert bundle_available()
    yield ToyBundlePaths.of()
