"""Where the tests run: whether this is CI, and where the reference parity fixtures are.

CI (``CI=true``, exported by ``.ci/run``) always has the fixtures, so a test that needs them fails there when they
are missing; elsewhere it is skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PARITY_ENV = "CF_PARITY_FIXTURES"


def running_in_ci() -> bool:
    """True when the ``CI`` environment variable is set to something other than empty/0/false/no."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def parity_fixture_path() -> Path:
    """Where the parity fixtures are expected (it may not exist): ``$CF_PARITY_FIXTURES``, else
    ``../shared/fixtures/parity`` beside the repo."""
    return Path(os.environ.get(PARITY_ENV) or ROOT.parent / "shared" / "fixtures" / "parity")


def require_fixture(path: Path, what: str = "parity fixture") -> Path:
    """``path`` if it exists; else fail under CI, skip elsewhere."""
    if path.exists():
        return path
    message = f"{what} not found at {path} (set {PARITY_ENV} to the folder holding the parity fixtures)"
    if running_in_ci():
        pytest.fail(f"{message}; CI must run the parity tests", pytrace=False)
    pytest.skip(message)


def require_parity_dir(folder: Path | None = None) -> Path:
    """``folder`` (default: :func:`parity_fixture_path`) if it is a directory; else fail under CI, skip elsewhere."""
    folder = parity_fixture_path() if folder is None else folder
    if not folder.is_dir():
        require_fixture(folder / "<missing folder>", "parity fixture folder")
    return folder
