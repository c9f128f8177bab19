"""Import this repository as a ComfyUI custom node pack, the way ComfyUI's loader does.

ComfyUI imports ``<pack>/__init__.py`` with ``spec_from_file_location`` and the pack folder as its search path, so the
pack's relative imports (``from ..causal_forcing_core import ...``) work and nothing clashes with ComfyUI's own
top-level ``nodes`` module. Tests, scripts and benchmarks use this one helper so they all see the same modules, and
:func:`run_node` to run a node the way ComfyUI's executor does.

Outside ComfyUI, where ``comfy_api`` (the V3 node API the nodes are written in) does not import, the tests' stand-in
for it (``tests/stand_ins/comfy_api``) is put on ``sys.path`` first.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: the package name the pack is imported under outside ComfyUI
PACK_NAME = "causal_forcing_pack"
#: where the tests' stand-in for ComfyUI's ``comfy_api`` lives
STAND_INS = ROOT / "tests" / "stand_ins"


def use_comfy_api_stand_in() -> bool:
    """Put the stand-in ``comfy_api`` on ``sys.path`` unless a real one imports; True when the stand-in is used."""
    if importlib.util.find_spec("comfy_api") is not None:
        return str(STAND_INS) in sys.path
    sys.path.insert(0, str(STAND_INS))
    return True


def import_pack(name: str = PACK_NAME) -> ModuleType:
    """The repo root imported as package ``name`` (once per process); submodules are ``name + ".nodes..."``."""
    if name in sys.modules:
        return sys.modules[name]
    use_comfy_api_stand_in()
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


def run_node(cls: type, *args: Any, hidden: dict[str, Any] | None = None, **inputs: Any) -> Any:
    """Run node class ``cls`` once as ComfyUI does (``args`` fill its schema's inputs in order); its ``NodeOutput``.
    ``hidden`` gives hidden values by name (``{"unique_id": "7", "prompt": {...}}``); the node gets those its
    schema asks for.
    A V1 class (a stand-in for a core node) runs the V1 way: an instance's ``FUNCTION``, its tuple or dict."""
    from comfy_api.latest import io  # after import_pack (or use_comfy_api_stand_in) made it importable

    if not issubclass(cls, io.ComfyNode):
        out = getattr(cls(), cls.FUNCTION)(*args, **inputs)
        return io.NodeOutput.from_dict(out) if isinstance(out, dict) else io.NodeOutput(*out)
    schema = cls.GET_SCHEMA()
    names = [i.id for i in schema.inputs]
    if len(args) > len(names):
        raise TypeError(f"{schema.node_id} takes {len(names)} inputs, got {len(args)}")
    inputs.update(zip(names, args))
    values = hidden or {}
    clone = cls.PREPARE_CLASS_CLONE({h: values.get(h.name) for h in schema.hidden or ()})
    return getattr(clone, cls.FUNCTION)(**inputs)
