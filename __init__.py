"""ComfyUI entry point of the Causal Forcing node pack (V1 node API).

Importing this module registers the nodes and nothing heavy: the model code loads when a node first runs.
"""

if __package__:  # ComfyUI (and the tests' import_pack) load this folder as a package
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:  # pytest imports this file alone when the checkout's folder name is no valid package name: nothing to register
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

WEB_DIRECTORY = "./js"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
