"""ComfyUI adapters over :mod:`causal_forcing_core`: thin, one module per concern, no maths.

Each node module exports ``NODE_CLASS_MAPPINGS`` and ``NODE_DISPLAY_NAME_MAPPINGS``; list it in
``_NODE_MODULES`` to register it. Node ids start with ``CausalForcing`` and are never renamed once released.
"""

from __future__ import annotations

import importlib
import logging

logger = logging.getLogger(__name__)

#: node modules of this package, registered in this order (the nodes arrive with the node pack issue)
_NODE_MODULES: tuple[str, ...] = ()

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}

for _name in _NODE_MODULES:
    _module = importlib.import_module(f".{_name}", __name__)
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
