"""Import this repository as a ComfyUI custom node pack, the way ComfyUI's loader does.

ComfyUI imports ``<pack>/__init__.py`` with ``spec_from_file_location`` and the pack folder as its search path, so the
pack's relative imports (``from ..causal_forcing_core import ...``) work and nothing clashes with ComfyUI's own
top-level ``nodes`` module. Tests, scripts and benchmarks use this one helper so they all see the same modules.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
#: the package name the pack is imported under outside ComfyUI
PACK_NAME = "causal_forcing_pack"


def import_pack(name: str = PACK_NAME) -> ModuleType:
    """The repo root imported as package ``name`` (once per process); submodules are ``name + ".nodes..."``."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
