"""A small stand-in for ComfyUI's executor, as far as our nodes can tell: it runs API-format prompts, caches each
node's outputs under a signature of its inputs (literal values and the signatures of the nodes feeding it, and a
node's own ``fingerprint_inputs`` when it has one), runs only nodes whose signature changed, keeps no output of a
node that raised, and records what ran and what each node showed (``ui``).

Nodes run as ComfyUI 0.3.64 runs V3 nodes: on ``cls.PREPARE_CLASS_CLONE(hidden)`` (the hidden values the schema
asks for: the node's id, the prompt), through ``FUNCTION`` (``EXECUTE_NORMALIZED``), whose ``NodeOutput`` gives
the result tuple and the ``ui``. :func:`call` (``scripts.pack_import.run_node``) runs one node that way outside a
graph.

Bypassing a node in ComfyUI is done by the frontend, which rewires its links before queueing; tests do the same
with :func:`bypass`.
"""

from __future__ import annotations

import copy
from typing import Any

from comfy_api.latest import io

from scripts.pack_import import run_node as call  # one node run as ComfyUI runs it (re-exported for the tests)


def overrides(cls: type, name: str) -> bool:
    """Whether a node class defines the optional hook ``name`` itself (ComfyUI's ``first_real_override``)."""
    own, base = getattr(cls, name, None), getattr(io.ComfyNode, name)
    return own is not None and getattr(own, "__func__", own) is not getattr(base, "__func__", base)


def combo_choices(entry: tuple) -> list:
    """The options of a combo input in a V1 schema: ``("COMBO", {"options": [...]})`` (V3) or ``([...], {...})``."""
    kind = entry[0]
    return list(entry[1].get("options", [])) if kind == "COMBO" else list(kind)


class MiniComfy:
    def __init__(self, classes: dict[str, type]) -> None:
        self.classes = classes
        self.cache: dict[str, tuple[Any, tuple]] = {}
        self.executed: list[str] = []
        #: what each node that ran last showed (its NodeOutput's ui)
        self.ui: dict[str, Any] = {}

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
        cls = self.classes.get(node["class_type"])
        if cls is not None and overrides(cls, "fingerprint_inputs"):  # NaN never equals itself: always runs
            literals = {k: v for k, v in node["inputs"].items() if not isinstance(v, list)}
            parts.append(("fingerprint", cls.fingerprint_inputs(**literals)))
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
        self.cache.pop(node_id, None)
        out = call(cls, hidden={"unique_id": node_id, "prompt": prompt}, **inputs)
        result = tuple(out.result or ())
        self.ui[node_id] = out.ui
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
