"""A resumable training stage on top of ``accelerate``: the same code runs on one CPU and under
``accelerate launch`` on many GPUs or CPU processes (each process draws its own batches; gradients are averaged
across processes after every backward pass).

Modules are not wrapped in DDP: the stages call methods other than ``forward`` (teacher-forcing forwards, text
embedding, rollouts with a K/V prefix), which DDP's wrapper would bypass, so the gradients are averaged explicitly.

A stage owns its trainable modules, their AdamW optimisers (grad-clip, weight decay) and EMA shadows, a torch
generator for every random draw, a JSON-lines log and a checkpoint written every ``save_every`` steps. Running a
stage again resumes from its checkpoint; a finished stage (``done.json``) is skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .state import EMA, JsonLog, load_checkpoint, save_checkpoint

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OptimConfig:
    """AdamW settings of one trainable module (reference: weight decay 0.01, grad-clip 10)."""

    lr: float
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.01
    grad_clip: float = 10.0


def make_accelerator(cpu: bool | None = None) -> Any:
    """An ``accelerate.Accelerator`` (CPU when no CUDA device is visible, or when ``cpu``)."""
    from accelerate import Accelerator

    acc = Accelerator(cpu=bool(cpu) if cpu is not None else not torch.cuda.is_available())
    if acc.is_main_process:
        logger.info("accelerate: %d process(es), device %s", acc.num_processes, acc.device)
    return acc


def stage_seed(seed: int, name: str, rank: int = 0) -> int:
    digest = hashlib.sha256(f"{seed}:{name}:{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class Stage:
    """One resumable training stage (see the module docstring)."""

    def __init__(
        self, name: str, folder: Path, accelerator: Any, *, total_steps: int, seed: int, log_every: int = 50,
        save_every: int = 500,
    ) -> None:
        self.name, self.folder, self.acc = name, Path(folder), accelerator
        self.total_steps, self.log_every, self.save_every = int(total_steps), max(1, log_every), max(1, save_every)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.rng = torch.Generator().manual_seed(stage_seed(seed, name, accelerator.process_index))
        self.modules: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.clips: dict[str, float] = {}
        self.emas: dict[str, EMA] = {}
        self.step = 0
        self.log = JsonLog(self.folder / "log.jsonl", name)

    # ------------------------------------------------------------------------------------------- set-up
    @property
    def done(self) -> bool:
        return (self.folder / "done.json").is_file()

    def add(self, key: str, module: nn.Module, optim: OptimConfig | None = None, ema_decay: float | None = None) -> nn.Module:
        """Register a module; with ``optim`` it is trained (returned prepared by accelerate), else kept frozen."""
        if optim is None:
            module.eval().requires_grad_(False)
            self.modules[key] = module
            return module
        module = module.to(self.acc.device).train().requires_grad_(True)
        opt = torch.optim.AdamW(module.parameters(), lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay)
        self.modules[key], self.optimizers[key], self.clips[key] = module, opt, optim.grad_clip
        if ema_decay is not None:
            self.emas[key] = EMA(self.unwrap(key), ema_decay)
        return module

    def unwrap(self, key: str) -> nn.Module:
        return self.modules[key]

    def on_main(self, write: Callable[[], object]) -> None:
        """Run ``write`` (saving outputs) on the main process only; every process waits until it is done."""
        if self.acc.is_main_process:
            write()
        self.acc.wait_for_everyone()

    # ------------------------------------------------------------------------------------------- steps
    def optimise(self, key: str, loss: torch.Tensor) -> float:
        """Backward ``loss`` into module ``key``, clip, step, zero; returns the gradient norm before clipping."""
        opt = self.optimizers[key]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in self.modules[key].parameters() if p.grad is not None]
        if self.acc.num_processes > 1:
            for p in params:
                p.grad = self.acc.reduce(p.grad, reduction="mean")
        norm = torch.nn.utils.clip_grad_norm_(params, self.clips[key])
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(norm)

    def update_ema(self, key: str, start_step: int = 0) -> None:
        """EMA update after a step of ``key``; before ``start_step`` the shadow just follows the weights."""
        ema = self.emas[key]
        if self.step < start_step:
            ema.reset_to(self.unwrap(key))
        else:
            ema.update(self.unwrap(key))

    def run(self, step_fn: Callable[[int], dict[str, float]]) -> None:
        """Resume if a checkpoint exists, call ``step_fn(step)`` until ``total_steps``, checkpoint and log on the way."""
        if self.done:
            logger.info("[%s] already finished; skipping", self.name)
            return
        self._resume()
        while self.step < self.total_steps:
            metrics = step_fn(self.step)
            self.step += 1
            due = self.step % self.log_every == 0 or self.step == self.total_steps
            if due and self.acc.is_main_process:
                self.log.write(self.step, self.total_steps, **metrics)
            if self.step % self.save_every == 0 and self.step < self.total_steps:
                self._save()
        self._save()

    def finish(self, outputs: dict[str, Any]) -> None:
        """Mark the stage finished with a record of its outputs (paths, figures)."""
        self.on_main(lambda: (self.folder / "done.json").write_text(json.dumps({"step": self.step, **outputs},
                                                                                  indent=2) + "\n"))

    # ------------------------------------------------------------------------------------------- checkpoints
    @property
    def checkpoint_path(self) -> Path:
        return self.folder / "checkpoint.pt"

    def _save(self) -> None:
        self.acc.wait_for_everyone()
        if not self.acc.is_main_process:
            return
        save_checkpoint(self.checkpoint_path, {
            "step": self.step,
            "models": {k: self.unwrap(k).state_dict() for k in self.optimizers},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "ema": {k: e.shadow for k, e in self.emas.items()},
            "rng": self.rng.get_state(),
        })

    def _resume(self) -> None:
        if not self.checkpoint_path.is_file():
            return
        payload = load_checkpoint(self.checkpoint_path)
        for key, sd in payload["models"].items():
            self.unwrap(key).load_state_dict(sd)
        for key, sd in payload["optimizers"].items():
            self.optimizers[key].load_state_dict(sd)
        for key, shadow in payload.get("ema", {}).items():
            self.emas[key].shadow = shadow
        self.rng.set_state(payload["rng"])
        self.step = int(payload["step"])
        logger.info("[%s] resumed at step %d/%d from %s", self.name, self.step, self.total_steps, self.checkpoint_path)
