"""What travels through the pack's sockets: the custom socket type names and the payload class of each.

=====================  ==========================  ===========================================================
socket type            payload                     made by
=====================  ==========================  ===========================================================
``CF_MODEL``           :class:`CFModel`            Causal Forcing Model Loader
``CF_STREAM``          :class:`StreamHandle`       Start, Generate, Generate (Schedule), Live
``CF_SCHEDULE``        :class:`PromptSchedule`     Causal Forcing Prompt Schedule
``CF_TEXT_ENCODER``    :class:`CFTextEncoder`      Causal Forcing Text Encoder Loader
``CF_VAE``             :class:`CFVae`              Causal Forcing VAE Loader
=====================  ==========================  ===========================================================

Every payload class lives here, with its V3 socket type (``CFModelSocket``...), so node modules import them from here
and never from each other. Payloads are
data with small accessors; what nodes do with them lives in the node modules. The names are part of saved
workflows: never rename one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from comfy_api.latest import io

from ..causal_forcing_core.config import DiTConfig, SamplerConfig
from ..causal_forcing_core.dit import CausalWanModel
from ..causal_forcing_core.errors import InvalidInputError
from ..causal_forcing_core.geometry import WAN21
from ..causal_forcing_core.kv_cache import KVCache
from ..causal_forcing_core.latent_space import to_raw_latents
from ..causal_forcing_core.lora import Lora, use_loras
from ..causal_forcing_core.preview_fallback import Previewer
from ..causal_forcing_core.stream import Stream
from ..causal_forcing_core.text_encoder import TextEncoder
from ..causal_forcing_core.vae import WanVAE
from . import comfy_runtime as rt

#: socket types of the pack (custom types are few and prefixed)
CF_MODEL = "CF_MODEL"
CF_STREAM = "CF_STREAM"
CF_SCHEDULE = "CF_SCHEDULE"
CF_TEXT_ENCODER = "CF_TEXT_ENCODER"
CF_VAE = "CF_VAE"
#: the values a schedule's line numbers (and a Generate node's length) count in
UNIT_CHUNKS, UNIT_SECONDS = "chunks", "seconds"
UNITS = (UNIT_CHUNKS, UNIT_SECONDS)


@dataclass(eq=False)
class CFModel:
    """What ``CF_MODEL`` carries: the student, its sampler, limits and preview decoder, and ComfyUI's handle."""

    dit: CausalWanModel
    sampler: SamplerConfig
    name: str
    #: latent frames the student attends to without a window
    max_frames: int
    previewer: Previewer | None
    patcher: Any = None
    #: the DiT borrows a native MODEL's layers (:class:`.model_nodes.CausalForcingNativeModel`): ComfyUI patches
    #: its weights, and our own weight changes (a core LoRA merge) must not touch them
    native: bool = False
    #: LoRAs of the Causal Forcing LoRA node, merged into ``dit`` while this model runs (see :meth:`prepare`)
    loras: tuple[tuple[Lora, float], ...] = ()
    #: apply the LoRAs' layers that match, ignoring the others
    ignore_unmatched: bool = False

    @property
    def config(self) -> DiTConfig:
        return self.dit.config

    def cache_bytes(self, latent_height: int, latent_width: int, frames: int) -> int:
        """Bytes of a self-attention KV cache holding ``frames`` latent frames at this latent size."""
        cfg = self.config
        return KVCache.estimate_bytes(
            num_layers=cfg.num_layers, batch=1, num_heads=cfg.num_heads, head_dim=cfg.head_dim,
            frame_tokens=cfg.tokens_per_frame(latent_height, latent_width), capacity_frames=frames,
            dtype=self.dit.compute_dtype,
        )

    def prepare(self, extra_bytes: int = 0) -> None:
        """Load the weights onto the compute device (through ComfyUI) with room for ``extra_bytes`` more, holding
        this model's LoRAs. A native model's weights then hold this MODEL's patches (another MODEL on the same base
        may have held its own), and our own DiT exactly this model's LoRA set (:func:`~.lora.use_loras`; a branch
        without them unmerges them). The DiT's ``weights_version`` says which weights it holds (for a native model,
        read from ComfyUI at each use), so a stream made under other weights refuses to go on."""
        rt.load_models([self.patcher], memory_required=extra_bytes)
        if not self.native:  # one loaded DiT may feed branches with other LoRA sets: this model's set, exactly
            use_loras(self.dit, self.loras, ignore_unmatched=self.ignore_unmatched)


@dataclass(eq=False)
class CFVae:
    """What ``CF_VAE`` carries: the core's Wan 2.1 VAE and ComfyUI's handle on it."""

    vae: WanVAE
    patcher: Any = None


@dataclass(eq=False)
class CFTextEncoder:
    """What ``CF_TEXT_ENCODER`` carries: the core's umT5 encoder and ComfyUI's handle on it."""

    encoder: TextEncoder
    patcher: Any = None
    #: the embedded toy encoder knows only the toy vocabulary: its prompts are checked word by word
    toy_vocabulary: bool = False

    def encode(self, text: str) -> list:
        """``text`` -> a native-format ``CONDITIONING`` ``[[embeds [1, text_len, D], {"pooled_output": None}]]``.

        For the toy encoder an unknown word raises InvalidInputError listing the vocabulary (instead of silently
        becoming an unknown token)."""
        if self.toy_vocabulary:
            from ..causal_forcing_core.toy.world import parse_caption

            parse_caption(text)
        rt.load_models([self.patcher])
        embeds = self.encoder.encode([text])
        return [[embeds.to(rt.intermediate_device()), {"pooled_output": None}]]


@dataclass(frozen=True, eq=False)
class PromptSchedule:
    """What ``CF_SCHEDULE`` carries: the schedule text, its unit and the CONDITIONING of each distinct prompt."""

    text: str
    #: :data:`UNIT_CHUNKS` or :data:`UNIT_SECONDS`
    unit: str
    conditionings: dict[str, list]

    def chunk_seconds(self, frames_per_block: int) -> float | None:
        """Seconds per chunk when the schedule counts in seconds, else None."""
        return WAN21.chunk_seconds(frames_per_block) if self.unit == UNIT_SECONDS else None


@dataclass(frozen=True, eq=False)
class StreamHandle:
    """What ``CF_STREAM`` carries: an immutable stream snapshot and the model it runs on (generating from it is
    :func:`.stream_state.generate`)."""

    stream: Stream
    model: CFModel
    width: int
    height: int

    @property
    def frames_per_block(self) -> int:
        return self.stream.settings.sampler.frames_per_block

    def with_stream(self, stream: Stream) -> "StreamHandle":
        return replace(self, stream=stream)

    def latent(self) -> dict[str, torch.Tensor]:
        """The whole video so far as a ComfyUI ``LATENT`` (raw VAE space [1, 16, F, H/8, W/8])."""
        return {"samples": to_raw_latents(self.stream.latents).to(rt.intermediate_device())}

    def check_length(self, num_chunks: int) -> None:
        """Refuse going past the frames a global-attention model was trained for (no window set; Rolling Forcing
        keeps its own)."""
        settings = self.stream.settings
        if settings.window_frames or settings.sampler.rolling:
            return
        n = self.frames_per_block
        after = self.stream.num_frames + num_chunks * n
        limit = self.model.max_frames
        if after > limit:
            room = max(0, (limit - self.stream.num_frames) // n)
            raise InvalidInputError(
                f"This would make {after} latent frames ({WAN21.pixel_frames(after)} video frames), but "
                f"{self.model.name} attends to at most {limit} latent frames without a window ({room} more chunk(s) "
                f"fit). For longer videos set window_frames (e.g. 12) and sink_frames (e.g. 3) on Causal Forcing "
                "Start; the cache then rolls and memory stays flat."
            )


# --------------------------------------------------------------------------------------------------- V3 socket types
# Each socket type declared for the V3 schema (``io.comfytype``): ``XSocket.Input(...)`` / ``XSocket.Output(...)``.
@io.comfytype(io_type=CF_MODEL)
class CFModelSocket(io.ComfyTypeIO):
    Type = CFModel


@io.comfytype(io_type=CF_STREAM)
class StreamSocket(io.ComfyTypeIO):
    Type = StreamHandle


@io.comfytype(io_type=CF_SCHEDULE)
class ScheduleSocket(io.ComfyTypeIO):
    Type = PromptSchedule


@io.comfytype(io_type=CF_TEXT_ENCODER)
class TextEncoderSocket(io.ComfyTypeIO):
    Type = CFTextEncoder


@io.comfytype(io_type=CF_VAE)
class VAESocket(io.ComfyTypeIO):
    Type = CFVae
