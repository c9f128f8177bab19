"""``comfy_api.latest`` of the stand-in: ``io`` (the node schema types) and ``ComfyExtension``."""

from __future__ import annotations

from abc import ABC, abstractmethod

from . import _io as io


class ComfyExtension(ABC):
    """What a pack's ``comfy_entrypoint()`` returns: ComfyUI awaits ``get_node_list()`` and registers each node class
    under its schema's ``node_id``."""

    async def on_load(self) -> None:
        """Called when the extension loads (ComfyUI 0.3.64 does not call it yet)."""

    @abstractmethod
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        """The node classes of the extension."""


__all__ = ["ComfyExtension", "io"]
