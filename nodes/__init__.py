"""ComfyUI adapters over :mod:`causal_forcing_core`: thin, one module per concern, no maths.

The nodes are V3 nodes (``comfy_api.latest``: ``io.ComfyNode`` with ``define_schema`` / ``execute``). Each node module
lists its node classes in ``NODES``; adding its name to ``_NODE_MODULES`` registers it, and the pack's
``comfy_entrypoint`` hands :data:`NODE_LIST` to ComfyUI. Node ids start with ``CausalForcing`` and are never renamed
once released. Node modules import ComfyUI's node API (``comfy_api.latest.io``) directly, as ComfyUI's own nodes
do, and everything else of ComfyUI only through :mod:`.comfy_runtime`; heavy libraries only inside functions. They
never import each other: what travels through the sockets (and its V3 socket type) is in :mod:`.payloads`, what
they share in :mod:`.common`, the names the browser uses in :mod:`.protocol`.
"""

from __future__ import annotations

import importlib

#: node modules of this package, registered in this order
_NODE_MODULES: tuple[str, ...] = ("model_nodes", "text_nodes", "vae_nodes", "stream_nodes", "live_nodes")

#: every node class, in registration order
NODE_LIST: list[type] = []
#: node id -> class, and node id -> display name (from each node's schema)
NODE_CLASSES: dict[str, type] = {}
DISPLAY_NAMES: dict[str, str] = {}

for _name in _NODE_MODULES:
    for _cls in importlib.import_module(f".{_name}", __name__).NODES:
        _schema = _cls.define_schema()
        if _schema.node_id in NODE_CLASSES:
            raise RuntimeError(f"node id {_schema.node_id} registered twice (second time by nodes/{_name}.py)")
        NODE_LIST.append(_cls)
        NODE_CLASSES[_schema.node_id] = _cls
        DISPLAY_NAMES[_schema.node_id] = _schema.display_name or _schema.node_id

importlib.import_module(".live_routes", __name__).register()

__all__ = ["DISPLAY_NAMES", "NODE_CLASSES", "NODE_LIST"]
