"""Configuration of the toy recipe (:mod:`.toy_recipe`): one frozen dataclass per stage and the whole-run config,
recorded in a run's ``config.json`` (resuming compares them field by field)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from ..config import DiTConfig
from ..toy.components import MICRO_DIT, TOY_DIT


@dataclass(frozen=True)
class VAEStageConfig:
    """Odd steps train on ``batch`` clips of ``frames`` frames (``long_frames`` from step ``long_from`` on, so the
    causal memory is trained in its steady state, not only on the first two latent frames), even steps on
    ``image_batch`` single frames (cheap, and what the spatial layers need most); the learning rate decays
    linearly to a tenth."""

    steps: int = 1800
    batch: int = 2
    frames: int = 5
    long_frames: int = 13
    long_from: int = 1000
    image_batch: int = 8
    lr: float = 1e-3
    object_weight: float = 20.0
    warmup_steps: int = 300
    #: then the decoder alone (encoder frozen, so the latent space the DiT learns stays put) on longer clips: the
    #: causal decoder's steady state, many latent frames in, is what long videos need
    decoder_steps: int = 300
    decoder_frames: int = 21
    decoder_batch: int = 2
    decoder_lr: float = 3e-4


@dataclass(frozen=True)
class DiffusionStageConfig:
    steps: int = 1200
    batch: int = 8
    lr: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass(frozen=True)
class ODEStageConfig:
    clips: int = 192
    ode_steps: int = 48
    guidance: float = 6.0
    steps: int = 600
    batch: int = 8
    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass(frozen=True)
class CDStageConfig:
    steps: int = 600
    batch: int = 8
    lr: float = 2e-4
    betas: tuple[float, float] = (0.0, 0.999)
    ema_decay: float = 0.99
    discretisation: int = 48
    guidance: float = 3.0


@dataclass(frozen=True)
class DMDStageConfig:
    steps: int = 300
    batch: int = 4
    generator_lr: float = 3e-5
    critic_lr: float = 6e-5
    betas: tuple[float, float] = (0.0, 0.999)
    critic_per_generator: int = 5
    real_guidance: float = 3.0
    ema_decay: float = 0.95
    ema_start: int = 100


@dataclass(frozen=True)
class ToyRecipeConfig:
    """Everything that determines a toy training run (recorded in ``config.json``; resuming checks it)."""

    seed: int = 0
    size: int = 64
    num_frames: int = 33
    dataset_clips: int = 512
    sampler: str = "chunkwise-4step"
    dit: dict[str, Any] = field(default_factory=TOY_DIT.to_dict)
    vae_dim: int = 8
    text_dropout: float = 0.1
    threads: int = 2
    vae: VAEStageConfig = VAEStageConfig()
    bidirectional: DiffusionStageConfig = DiffusionStageConfig()
    ar_teacher: DiffusionStageConfig = DiffusionStageConfig(steps=500, lr=2e-4)
    ode: ODEStageConfig = ODEStageConfig()
    cd: CDStageConfig = CDStageConfig()
    dmd: DMDStageConfig = DMDStageConfig()
    log_every: int = 50
    save_every: int = 200

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ToyRecipeConfig:
        nested = {"vae": VAEStageConfig, "bidirectional": DiffusionStageConfig, "ar_teacher": DiffusionStageConfig,
                  "ode": ODEStageConfig, "cd": CDStageConfig, "dmd": DMDStageConfig}
        kwargs = dict(data)
        for key, kind in nested.items():
            if key in kwargs:
                sub = dict(kwargs[key])
                if "betas" in sub:
                    sub["betas"] = tuple(sub["betas"])
                kwargs[key] = kind(**sub)
        return cls(**kwargs)

    @property
    def dit_config(self) -> DiTConfig:
        return DiTConfig.from_dict(self.dit)

    def shared_part(self) -> dict[str, Any]:
        d = self.to_dict()
        return {k: d[k] for k in ("seed", "size", "num_frames", "dataset_clips", "sampler", "dit", "vae_dim",
                                  "text_dropout", "vae", "bidirectional", "ar_teacher")}

    def distill_part(self, init: str) -> dict[str, Any]:
        """What a distillation run depends on besides the shared run it starts from (guarded in its own folder)."""
        d = self.to_dict()
        return {"init": init, "seed": d["seed"], "sampler": d["sampler"], "ode": d["ode"], "cd": d["cd"],
                "dmd": d["dmd"]}


def micro_config(seed: int = 0) -> ToyRecipeConfig:
    """Two steps of every stage on a 1-layer DiT and a handful of clips: for tests."""
    two = {"steps": 2, "batch": 2}
    return ToyRecipeConfig(
        seed=seed, num_frames=25, dataset_clips=4, dit=MICRO_DIT.to_dict(), vae_dim=4,
        vae=VAEStageConfig(steps=2, batch=1, frames=5, image_batch=1, warmup_steps=1, decoder_steps=2, decoder_frames=9,
                           decoder_batch=1), bidirectional=DiffusionStageConfig(**two),
        ar_teacher=DiffusionStageConfig(**two), ode=ODEStageConfig(clips=2, ode_steps=4, **two),
        cd=CDStageConfig(discretisation=4, **two), dmd=DMDStageConfig(steps=2, batch=1, critic_per_generator=1, ema_start=0),
        log_every=1, save_every=1,
    )
