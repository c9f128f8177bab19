"""Test set-up: the repo root and tests/ on sys.path, so tests import the core and the helpers directly.

Fixtures:

- ``parity_dir``: the reference parity fixture folder (``$CF_PARITY_FIXTURES``, else ``../shared/fixtures/parity``
  beside the repo). A test using it is skipped when the folder is absent, and FAILS instead under CI (``CI=true``),
  where the fixtures are always provided.
- ``pack``: the repo root imported as a package the way ComfyUI imports a custom node pack (under a made-up name,
  so relative imports inside the pack work and nothing clashes with ComfyUI's own top-level ``nodes`` module).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from scripts.pack_import import PACK_NAME, import_pack  # noqa: E402,F401 - the pack as ComfyUI imports it
from toy_bundle import toy_bundle, toy_bundle_session  # noqa: E402,F401 - shared toy-model fixtures

PARITY_ENV = "CF_PARITY_FIXTURES"


def running_in_ci() -> bool:
    """True when the ``CI`` environment variable is set to something other than empty/0/false/no."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def parity_fixture_path() -> Path:
    """Where the parity fixtures are expected (it may not exist)."""
    return Path(os.environ.get(PARITY_ENV) or ROOT.parent / "shared" / "fixtures" / "parity")


def require_parity_dir(folder: Path | None = None) -> Path:
    """``folder`` (default: :func:`parity_fixture_path`) if it is a directory; else fail under CI, skip elsewhere."""
    folder = parity_fixture_path() if folder is None else folder
    if folder.is_dir():
        return folder
    message = f"parity fixtures not found at {folder} (set {PARITY_ENV} to the folder holding them)"
    if running_in_ci():
        pytest.fail(f"{message}; CI must run the parity tests", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    """The parity fixture folder; skips the test when absent (fails under CI)."""
    return require_parity_dir()


@pytest.fixture(scope="session")
def pack() -> ModuleType:
    """The node pack imported like ComfyUI imports it; submodules are ``pack.__name__ + ".nodes..."``."""
    return import_pack()
