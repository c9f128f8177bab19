"""A small stand-in for ComfyUI's executor, as far as our nodes can tell: it runs API-format prompts, caches each
node's outputs under a signature of its inputs (literal values and the signatures of the nodes feeding it), runs
only nodes whose signature changed, keeps no output of a node that raised, and records what ran.

Bypassing a node in ComfyUI is done by the frontend, which rewires its links before queueing; tests do the same
with :func:`bypass`.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any


class MiniComfy:
    def __init__(self, classes: dict[str, type]) -> None:
        self.classes = classes
        self.cache: dict[str, tuple[Any, tuple]] = {}
        self.executed: list[str] = []

    def run(self, prompt: dict[str, dict], *targets: str) -> dict[str, tuple]:
        """Execute what ``targets`` (node ids) need; returns each executed or cached node's result tuple."""
        self.executed = []
        done: dict[str, tuple] = {}
        for target in targets:
            self._eval(prompt, target, done)
        return done

    def _signature(self, prompt: dict[str, dict], node_id: str) -> Any:
        node = prompt[node_id]
        parts = []
        for name, value in sorted(node["inputs"].items()):
            if isinstance(value, list):
                parts.append((name, self._signature(prompt, value[0]), value[1]))
            else:
                parts.append((name, repr(value)))
        return (node["class_type"], tuple(parts))

    def _eval(self, prompt: dict[str, dict], node_id: str, done: dict[str, tuple]) -> tuple:
        if node_id in done:
            return done[node_id]
        node = prompt[node_id]
        signature = self._signature(prompt, node_id)
        cached = self.cache.get(node_id)
        if cached is not None and cached[1] == signature:
            done[node_id] = cached[0]
            return cached[0]
        inputs = {}
        for name, value in node["inputs"].items():
            inputs[name] = self._eval(prompt, value[0], done)[value[1]] if isinstance(value, list) else value
        cls = self.classes[node["class_type"]]
        function = getattr(cls(), cls.FUNCTION)
        if "unique_id" in inspect.signature(function).parameters:
            inputs["unique_id"] = node_id
        self.cache.pop(node_id, None)
        out = function(**inputs)
        result = tuple(out["result"]) if isinstance(out, dict) else tuple(out)
        self.executed.append(node_id)
        self.cache[node_id] = (result, signature)
        done[node_id] = result
        return result


def bypass(prompt: dict[str, dict], node_id: str, slot_map: dict[int, tuple[str, int]]) -> dict[str, dict]:
    """A copy of ``prompt`` without ``node_id``: links from its output slot k go to ``slot_map[k]`` (the source the
    frontend picks: the bypassed node's input of the same type)."""
    out = copy.deepcopy(prompt)
    del out[node_id]
    for node in out.values():
        for name, value in node["inputs"].items():
            if isinstance(value, list) and value[0] == node_id:
                node["inputs"][name] = list(slot_map[value[1]])
    return out
