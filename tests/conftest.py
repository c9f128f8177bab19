"""Test set-up: the repo root and tests/ on sys.path, so tests import the core and the helpers directly, and
``comfy_api`` importable (ComfyUI's, or the stand-in in ``tests/stand_ins``) for the V3 nodes.

Fixtures:

- ``pack``: the repo root imported as a package the way ComfyUI imports a custom node pack (under a made-up name,
  so relative imports inside the pack work and nothing clashes with ComfyUI's own top-level ``nodes`` module).
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from scripts.pack_import import PACK_NAME, import_pack, use_comfy_api_stand_in  # noqa: E402,F401 - the pack as ComfyUI imports it

use_comfy_api_stand_in()  # ComfyUI's V3 node API, or the tests' stand-in for it (tests/stand_ins/comfy_api)
from toy_bundle import toy_bundle, toy_bundle_session  # noqa: E402,F401 - shared toy-model fixtures


@pytest.fixture(scope="session")
def pack() -> ModuleType:
    """The node pack imported like ComfyUI imports it; submodules are ``pack.__name__ + ".nodes..."``."""
    return import_pack()
