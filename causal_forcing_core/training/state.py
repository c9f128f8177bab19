"""Training state: EMA shadows, resumable checkpoints, JSON-lines logs and the config guard.

A stage folder holds ``checkpoint.pt`` (models, optimisers, EMA, RNG, step; written atomically, read with
``torch.load(weights_only=True)``), ``log.jsonl`` and, once finished, its outputs and ``done.json``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, InvalidInputError
from ..weights import load_torch_file

logger = logging.getLogger(__name__)

_RESTART_ADVICE = "delete it to restart this stage from its last finished input"


class EMA:
    """Float32 shadow of a module's parameters, ``shadow = decay * shadow + (1 - decay) * param``."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.shadow = {k: v.detach().float().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        for k, v in module.state_dict().items():
            if v.is_floating_point():
                self.shadow[k].lerp_(v.detach().float(), 1.0 - self.decay)
            else:
                self.shadow[k].copy_(v)

    def reset_to(self, module: nn.Module) -> None:
        self.shadow = {k: v.detach().float().clone() for k, v in module.state_dict().items()}

    def copy_to(self, module: nn.Module) -> None:
        module.load_state_dict({k: v.to(module.state_dict()[k].dtype) for k, v in self.shadow.items()})


def save_checkpoint(path: Path, payload: Mapping[str, Any]) -> None:
    """Write ``payload`` (tensors, numbers, strings, nested dicts/lists) atomically: a crash never leaves half a file."""
    tmp = path.with_name(f".{path.name}.partial")
    torch.save(dict(payload), tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a training checkpoint; a truncated or foreign file raises CheckpointError naming it (nothing loaded)."""
    # read whole, not memory-mapped: the next save replaces this file, which an open mapping would block on Windows
    payload = load_torch_file(path, mmap=False, what="training checkpoint", advice=_RESTART_ADVICE)
    if not isinstance(payload, dict) or "step" not in payload or "models" not in payload:
        raise CheckpointError(f"The training checkpoint {path} lacks 'step'/'models'; it was not written by this trainer.")
    return payload


def config_difference(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Human-readable differences between two JSON-like configs, e.g. ``stage1.steps: 2000 -> 3000``."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in old:
                out.append(f"{name}: (absent) -> {new[key]!r}")
            elif key not in new:
                out.append(f"{name}: {old[key]!r} -> (absent)")
            else:
                out.extend(config_difference(old[key], new[key], name))
        return out
    return [] if old == new else [f"{prefix or 'config'}: {old!r} -> {new!r}"]


def guard_config(folder: Path, config: Mapping[str, Any]) -> None:
    """Record ``config`` in ``folder/config.json``, or refuse to resume a run that was started with another one."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.json"
    new = json.loads(json.dumps(config))
    if path.is_file():
        old = json.loads(path.read_text())
        diff = config_difference(old, new)
        if diff:
            raise InvalidInputError(
                f"{folder} holds a run started with a different config; refusing to resume it. Differences:\n  "
                + "\n  ".join(diff) + "\nUse another --out folder, or restore the old config."
            )
        return
    path.write_text(json.dumps(new, indent=2, sort_keys=True) + "\n")


class JsonLog:
    """Appends one JSON object per line to ``log.jsonl`` and mirrors a short line to the logger."""

    def __init__(self, path: Path, stage: str) -> None:
        self.path, self.stage, self.start = path, stage, time.monotonic()

    def write(self, step: int, total: int, **metrics: float) -> None:
        record = {"stage": self.stage, "step": step, "elapsed_s": round(time.monotonic() - self.start, 2), **metrics}
        with self.path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
        logger.info("[%s] step %d/%d %s", self.stage, step, total, shown)
