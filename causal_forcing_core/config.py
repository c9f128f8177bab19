"""Configs as data: the DiT architecture and the few-step sampler presets.

Nothing in the core hard-codes a model size: every shape comes from a :class:`DiTConfig`, either a named preset or
one inferred from a state dict's tensor shapes (:meth:`DiTConfig.from_state_dict`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import CheckpointError, InvalidInputError

# Every Wan 2.x DiT uses 128-wide attention heads; a state dict does not record the head count, so this is the
# fallback when no config or metadata gives it.
WAN_HEAD_DIM = 128
#: text tokens every Wan 2.x DiT attends to (umT5 output padded to this length); no tensor shape records it
WAN_TEXT_LEN = 512


@dataclass(frozen=True)
class DiTConfig:
    """Architecture of a (causal) Wan DiT. Field names follow Wan's ``config.json``."""

    dim: int = 1536
    ffn_dim: int = 8960
    num_heads: int = 12
    num_layers: int = 30
    in_dim: int = 16
    out_dim: int = 16
    text_dim: int = 4096
    text_len: int = WAN_TEXT_LEN
    freq_dim: int = 256
    patch_size: tuple[int, int, int] = (1, 2, 2)
    eps: float = 1e-6
    qk_norm: bool = True
    cross_attn_norm: bool = True

    def __post_init__(self) -> None:
        if self.dim % self.num_heads:
            raise InvalidInputError(f"DiT dim {self.dim} is not divisible by num_heads {self.num_heads}.")
        if (self.dim // self.num_heads) % 2:
            raise InvalidInputError(f"head_dim {self.dim // self.num_heads} must be even for RoPE.")
        object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    def tokens_per_frame(self, latent_height: int, latent_width: int) -> int:
        """Tokens one latent frame of size (latent_height, latent_width) becomes after patchify."""
        _, ph, pw = self.patch_size
        return (latent_height // ph) * (latent_width // pw)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["patch_size"] = list(self.patch_size)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DiTConfig":
        """Build from a Wan / diffusers ``config.json`` dict; unknown keys (``_class_name``, ``model_type``...) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        if "patch_size" in kwargs:
            kwargs["patch_size"] = tuple(kwargs["patch_size"])
        return cls(**kwargs)

    @classmethod
    def from_state_dict(
        cls, state_dict: Mapping[str, Any], num_heads: int | None = None, text_len: int = WAN_TEXT_LEN
    ) -> "DiTConfig":
        """Infer the architecture from bare Wan parameter names and shapes.

        ``num_heads`` is not visible in any shape; when not given, Wan's 128-wide heads are assumed.
        """
        shape = {k: tuple(v.shape) for k, v in state_dict.items()}
        required = ("patch_embedding.weight", "text_embedding.0.weight", "time_embedding.0.weight", "head.head.weight")
        missing = [k for k in required if k not in shape]
        if missing:
            raise CheckpointError(
                "This file is not a Wan DiT: expected keys such as "
                + ", ".join(required)
                + f" but did not find {', '.join(missing)}. Found keys like: {', '.join(sorted(shape)[:5]) or '(none)'}."
            )
        dim, in_dim, *patch = shape["patch_embedding.weight"]
        if len(patch) != 3:
            raise CheckpointError(f"patch_embedding.weight should be a Conv3d weight [dim, in, pt, ph, pw], got {list(shape['patch_embedding.weight'])}.")
        layer_ids = {int(m.group(1)) for k in shape if (m := re.match(r"blocks\.(\d+)\.", k))}
        if not layer_ids:
            raise CheckpointError("This file has no transformer blocks (keys 'blocks.N.*'); it is not a Wan DiT.")
        ffn_dim = shape["blocks.0.ffn.0.weight"][0] if "blocks.0.ffn.0.weight" in shape else 4 * dim
        head_out = shape["head.head.weight"][0]
        patch_volume = patch[0] * patch[1] * patch[2]
        if num_heads is None:
            if dim % WAN_HEAD_DIM:
                raise CheckpointError(
                    f"Cannot tell the number of attention heads of a DiT with dim {dim} (not a multiple of "
                    f"{WAN_HEAD_DIM}); pass num_heads or keep a config.json next to the weights."
                )
            num_heads = dim // WAN_HEAD_DIM
        return cls(
            dim=dim,
            ffn_dim=ffn_dim,
            num_heads=num_heads,
            num_layers=max(layer_ids) + 1,
            in_dim=in_dim,
            out_dim=head_out // patch_volume,
            text_dim=shape["text_embedding.0.weight"][1],
            text_len=text_len,
            freq_dim=shape["time_embedding.0.weight"][1],
            patch_size=tuple(patch),
            qk_norm="blocks.0.self_attn.norm_q.weight" in shape,
            cross_attn_norm="blocks.0.norm3.weight" in shape,
        )


#: Wan2.1-T2V-1.3B, the base of every released Causal Forcing student.
WAN_1_3B = DiTConfig()
#: Wan2.1-T2V-14B, the DMD real score.
WAN_14B = DiTConfig(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40)
#: The tiny configuration of the parity fixtures (and of fast tests).
TINY = DiTConfig(dim=64, ffn_dim=128, num_heads=2, num_layers=2, text_dim=32, text_len=16)

DIT_PRESETS: dict[str, DiTConfig] = {"wan2.1-1.3b": WAN_1_3B, "wan2.1-14b": WAN_14B, "tiny": TINY}


@dataclass(frozen=True)
class SamplerConfig:
    """Few-step sampling of a distilled student.

    ``denoising_steps`` are the raw config integers (unshifted sigma x 1000); with ``warp`` they are mapped through
    the shifted schedule (750 -> t 937.5 at shift 5). ``first_chunk_steps`` replaces them for the stream's first
    generated chunk (Causal Forcing++ 1/2-step students). ``rolling``: Rolling Forcing (:mod:`.rolling`), the
    sampler the long-video student was trained for: a window of ``num_steps`` blocks at staggered noise levels, one
    forward per window step.
    """

    name: str
    frames_per_block: int
    denoising_steps: tuple[int, ...]
    first_chunk_steps: tuple[int, ...] | None = None
    shift: float = 5.0
    warp: bool = True
    context_noise: float = 0.0
    rolling: bool = False

    def __post_init__(self) -> None:
        if self.frames_per_block < 1:
            raise InvalidInputError(f"frames_per_block must be >= 1, got {self.frames_per_block}.")
        for steps in (self.denoising_steps, self.first_chunk_steps or (1000,)):
            if not steps or any(not 0 < s <= 1000 for s in steps):
                raise InvalidInputError(f"denoising steps must lie in (0, 1000], got {list(steps)}.")
        if self.rolling and self.first_chunk_steps:
            raise InvalidInputError("Rolling Forcing takes one step list for every block, not a first-chunk list.")

    @property
    def supports_i2v(self) -> bool:
        """Only frame-wise students take an image as their own first block (reference §2.4)."""
        return self.frames_per_block == 1

    @property
    def num_steps(self) -> int:
        return len(self.denoising_steps)

    def steps_for_chunk(self, chunk_index: int) -> tuple[int, ...]:
        if chunk_index == 0 and self.first_chunk_steps:
            return self.first_chunk_steps
        return self.denoising_steps

    def progress_steps(self, chunk_index: int) -> int:
        """DiT passes that report progress while chunk ``chunk_index`` is made: its denoising steps, or for
        Rolling Forcing one window step per chunk (the first chunk fills the window: ``num_steps`` of them)."""
        if self.rolling:
            return self.num_steps if chunk_index == 0 else 1
        return len(self.steps_for_chunk(chunk_index))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_FOUR = (1000, 750, 500, 250)
SAMPLER_PRESETS: dict[str, SamplerConfig] = {
    "chunkwise-4step": SamplerConfig("chunkwise-4step", 3, _FOUR),
    "framewise-4step": SamplerConfig("framewise-4step", 1, _FOUR),
    "framewise-2step": SamplerConfig("framewise-2step", 1, (1000, 500), first_chunk_steps=_FOUR),
    "framewise-1step": SamplerConfig("framewise-1step", 1, (1000,), first_chunk_steps=_FOUR),
    "rolling-4step": SamplerConfig("rolling-4step", 3, _FOUR, rolling=True),
    # other students' own samplers (causal_forcing_core/students.py, docs/student_presets.md): Rolling Forcing's
    # release rolls a window of 5 blocks over 5 steps; CausVid feeds 3 raw timesteps (no warp) at shift 8
    "rolling-5step": SamplerConfig("rolling-5step", 3, (1000, 800, 600, 400, 200), rolling=True),
    "causvid-3step": SamplerConfig("causvid-3step", 3, (1000, 757, 522), shift=8.0, warp=False),
}


def sampler_kind(sampler: SamplerConfig) -> str:
    """"frame-wise" or "chunk-wise": what size of chunk a sampler makes."""
    return "frame-wise" if sampler.frames_per_block == 1 else "chunk-wise"


def check_sampler_fits(own: SamplerConfig | None, chosen: SamplerConfig, name: str, option: str) -> None:
    """Raise :class:`InvalidInputError` when ``chosen`` (asked for with ``option``, e.g. ``--steps`` or
    ``variant``) makes chunks of another size than the student ``name`` was trained on (``own``: what its metadata
    or release says; None when unknown, then nothing is checked), naming the presets that fit."""
    if own is None or own.frames_per_block == chosen.frames_per_block:
        return
    fitting = [p for p, c in SAMPLER_PRESETS.items() if c.frames_per_block == own.frames_per_block]
    raise InvalidInputError(
        f"{option} {chosen.name} is for {sampler_kind(chosen)} students ({chosen.frames_per_block}-frame chunks), but "
        f"{name} is a {sampler_kind(own)} model ({own.name}, {own.frames_per_block}-frame chunks); use {option} "
        f"{' or '.join(fitting)} (or auto)."
    )


def sampler_preset(name: str) -> SamplerConfig:
    """Look up a sampler preset by name, with a clear error listing the known ones."""
    try:
        return SAMPLER_PRESETS[name]
    except KeyError:
        raise InvalidInputError(
            f"Unknown sampler preset {name!r}; expected one of {', '.join(SAMPLER_PRESETS)}."
        ) from None
