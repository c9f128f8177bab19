"""ComfyUI entry point of the Causal Forcing node pack (V3 node API: ``comfy_entrypoint`` returns the extension).

Importing this module registers the pack's routes and nothing heavy: the model code loads when a node first runs.
ComfyUI 0.3.64 or newer (``comfy_api.latest``).
"""

if __package__:  # ComfyUI (and the tests' import_pack) load this folder as a package
    from comfy_api.latest import ComfyExtension, io

    from .nodes import DISPLAY_NAMES, NODE_CLASSES, NODE_LIST

    class CausalForcingExtension(ComfyExtension):
        """The pack's nodes, for ComfyUI's V3 loader."""

        async def get_node_list(self) -> list[type[io.ComfyNode]]:
            return list(NODE_LIST)

    async def comfy_entrypoint() -> CausalForcingExtension:
        """What ComfyUI calls to load the pack."""
        return CausalForcingExtension()

    __all__ = ["DISPLAY_NAMES", "NODE_CLASSES", "WEB_DIRECTORY", "comfy_entrypoint"]
else:  # pytest imports this file alone when the checkout's folder name is no valid package name: nothing to register
    NODE_CLASSES, DISPLAY_NAMES = {}, {}
    __all__ = ["DISPLAY_NAMES", "NODE_CLASSES", "WEB_DIRECTORY"]

WEB_DIRECTORY = "./js"
