"""ComfyUI adapters over :mod:`causal_forcing_core`: thin, one module per concern, no maths.

Each node module exports ``NODE_CLASS_MAPPINGS`` and ``NODE_DISPLAY_NAME_MAPPINGS``; adding its name to
``_NODE_MODULES`` registers it. Node ids start with ``CausalForcing`` and are never renamed once released.
Node modules import ComfyUI only through :mod:`.comfy_runtime`, and heavy libraries only inside functions. They
never import each other: what travels through the sockets is in :mod:`.payloads`, what they share in :mod:`.common`,
the names the browser uses in :mod:`.protocol`.
"""

from __future__ import annotations

import importlib

#: node modules of this package, registered in this order
_NODE_MODULES: tuple[str, ...] = ("model_nodes", "text_nodes", "vae_nodes", "stream_nodes", "live_nodes")

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}

for _name in _NODE_MODULES:
    _module = importlib.import_module(f".{_name}", __name__)
    _clash = NODE_CLASS_MAPPINGS.keys() & _module.NODE_CLASS_MAPPINGS.keys()
    if _clash:
        raise RuntimeError(f"node ids registered twice (second time by nodes/{_name}.py): {sorted(_clash)}")
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)

importlib.import_module(".live_routes", __name__).register()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
