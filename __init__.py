"""ComfyUI entry point of the Causal Forcing node pack (V1 node API).

Importing this module registers the nodes and nothing heavy: the model code loads when a node first runs.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./js"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
