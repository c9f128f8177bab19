"""Starting and extending a stream: ``CausalForcingStart``, ``CausalForcingGenerate`` and
``CausalForcingGenerateSchedule``.

Each node takes a ``CF_STREAM`` snapshot and returns a new one (see :mod:`.stream_state`), so a chain of Generate
nodes with different prompts is a prompt switch, and editing one of them re-generates only from that node on.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from comfy_api.latest import io

from ..causal_forcing_core.errors import InvalidInputError
from ..causal_forcing_core.geometry import WAN21
from ..causal_forcing_core.image_io import RESIZE_MODES, fit_image_tensor
from ..causal_forcing_core.kv_cache import Recache
from ..causal_forcing_core.latent_space import from_raw_latents
from ..causal_forcing_core.schedule import parse_schedule
from ..causal_forcing_core.stream import cache_frames_for, start_stream
from . import stream_state
from .common import CATEGORY, MAX_SEED, MAX_SIZE, prompt_from_conditioning, resolve_vae
from .payloads import (
    UNIT_CHUNKS,
    UNIT_SECONDS,
    UNITS,
    CFModel,
    CFModelSocket,
    CFVae,
    PromptSchedule,
    ScheduleSocket,
    StreamHandle,
    StreamSocket,
    VAESocket,
)

logger = logging.getLogger(__name__)

#: the most latent frames a window may hold (the released long-video students use 12 + 3 sink)
MAX_WINDOW = 1024
#: the Start node's re-cache modes (a stream re-caches one way: what ``recache`` on Generate / Live switches do)
RECACHE_FRAMES = [Recache.RECENT.value, Recache.WINDOW.value]
#: the step of the width/height widgets (VAE x8 and DiT 2x2 patches)
SIZE_STEP = WAN21.size_multiple()


def size_problem(width: int, height: int) -> str | None:
    """None, or one message about the whole size naming the nearest valid sides (multiples of 16 up to the widgets'
    maximum), e.g. ``"size 70 x 480 (width x height): width 70 is not a multiple of 16 (try 64 or 80)"``. ComfyUI
    lists a validate_inputs message under each input it takes, so it reads right under "width" and under "height"."""
    problems = WAN21.size_problems(height, width, SIZE_STEP, MAX_SIZE)
    return f"size {width} x {height} (width x height): {'; '.join(problems)}" if problems else None


def _context(
    model: CFModel, width: int, height: int, start_image: torch.Tensor | None, image_fit: str, vae: Any,
    cf_vae: CFVae | None, continue_latent: dict | None,
) -> torch.Tensor | None:
    """Clean latents [1, n, 16, h, w] the stream starts from: an I2V image, or a video to continue."""
    if start_image is not None and continue_latent is not None:
        raise InvalidInputError("Give either a start image (image-to-video) or a LATENT to continue, not both.")
    if start_image is not None:
        if not model.sampler.supports_i2v:
            raise InvalidInputError(
                f"Image-to-video needs a frame-wise student; {model.name} uses the {model.sampler.name} sampler "
                "(3-frame chunks). Load a frame-wise Causal Forcing model, or pick its variant on the loader."
            )
        wan = resolve_vae(vae, cf_vae, purpose=" to encode the start image (image-to-video)")
        pixels = fit_image_tensor(start_image, height, width, image_fit)
        return wan.encode(pixels.to(wan.device, wan.dtype)).float()
    if continue_latent is not None:
        if not isinstance(continue_latent, dict) or "samples" not in continue_latent:
            raise InvalidInputError("The LATENT to continue holds no 'samples'.")
        latents = from_raw_latents(continue_latent["samples"])
        h, w = latents.shape[-2:]
        if (h * 8, w * 8) != (height, width):
            raise InvalidInputError(
                f"The LATENT to continue is {w * 8}x{h * 8} pixels but the stream is set to {width}x{height}; "
                "set width and height to match it."
            )
        return latents[:1]
    return None


class CausalForcingStart(io.ComfyNode):
    """Open a stream: model, first prompt, size, seed, cache window; optionally an image (I2V) or a video to continue."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CausalForcingStart", display_name="Causal Forcing Start", category=CATEGORY,
            description=(
                "Starts a Causal Forcing video stream. Nothing is generated yet: chain Causal Forcing Generate nodes "
                "after it (one per prompt segment). window_frames 0 attends to the whole video (up to 81 frames for "
                "the released students); set a window (e.g. 12) and sink (e.g. 3) for long videos with flat memory."
            ),
            inputs=[
                CFModelSocket.Input("model"),
                io.Conditioning.Input("positive", tooltip="The first prompt (CLIPTextEncode with the Wan umT5 CLIP)."),
                io.Int.Input("width", default=832, min=SIZE_STEP, max=MAX_SIZE, step=SIZE_STEP),
                io.Int.Input("height", default=480, min=SIZE_STEP, max=MAX_SIZE, step=SIZE_STEP),
                io.Int.Input("seed", default=0, min=0, max=MAX_SEED, control_after_generate=True, tooltip=(
                    "Chunk k's noise comes from (seed, k): the same video however the chunks are split over nodes. "
                    "Set 'control after generate' to fixed, so that editing a later prompt re-generates only from "
                    "that node.")),
                io.Int.Input("window_frames", default=0, min=0, max=MAX_WINDOW, tooltip=(
                    "Latent frames the attention sees (0 = the whole video). 12 with 3 sink frames for long videos.")),
                io.Int.Input("sink_frames", default=0, min=0, max=MAX_WINDOW,
                             tooltip="First frames kept in the window forever (attention sink)."),
                io.Image.Input("start_image", optional=True, tooltip="Image-to-video (frame-wise students): the first frame."),
                io.Vae.Input("vae", optional=True, tooltip="Native Wan 2.1 VAE, to encode the start image."),
                VAESocket.Input("cf_vae", optional=True, tooltip="Or a Causal Forcing VAE."),
                io.Latent.Input("continue_latent", optional=True, tooltip="A Wan video LATENT to continue (whole chunks)."),
                io.Combo.Input("image_fit", options=list(RESIZE_MODES), default="crop", optional=True,
                               tooltip="How the start image is fitted to width x height."),
                io.Combo.Input("recache_frames", options=RECACHE_FRAMES, default=Recache.RECENT.value, optional=True,
                               tooltip=(
                    "What a prompt switch with re-cache re-encodes under the new prompt. recent: the frames after the "
                    "sink (the sink keeps the video's first frames). window: the whole window, whose oldest frames "
                    "become the new sink (how LongLive trains).")),
            ],
            outputs=[StreamSocket.Output(display_name="stream")],
        )

    @classmethod
    def validate_inputs(cls, width: int | None, height: int | None) -> str | bool:
        """Sizes, before the run. Only these two are named: ComfyUI still range-checks every other input (it
        skips that for inputs a validate_inputs takes, and for all of them when it takes **kwargs)."""
        if width is None or height is None:  # linked from another node: checked when it runs
            return True
        return size_problem(int(width), int(height)) or True

    @classmethod
    def execute(
        cls, model: CFModel, positive: list, width: int, height: int, seed: int, window_frames: int,
        sink_frames: int, start_image: torch.Tensor | None = None, vae: Any = None, cf_vae: CFVae | None = None,
        continue_latent: dict | None = None, image_fit: str = "crop", recache_frames: str = Recache.RECENT.value,
    ) -> io.NodeOutput:
        problem = size_problem(width, height)
        if problem is not None:
            raise InvalidInputError(f"Width and height must be multiples of {SIZE_STEP}: {problem}.")
        cfg = model.config
        prompt = prompt_from_conditioning(positive, cfg.text_dim, cfg.text_len, label="start")
        window = window_frames or None
        if sink_frames and not window:
            raise InvalidInputError("sink_frames needs a window: set window_frames (e.g. 12) or set sink_frames to 0.")
        context = _context(model, width, height, start_image, image_fit, vae, cf_vae, continue_latent)
        lat_h, lat_w = height // 8, width // 8
        model.prepare(model.cache_bytes(lat_h, lat_w, cache_frames_for(model.sampler, window, model.max_frames)))
        if context is not None and not window and context.shape[1] > model.max_frames:
            raise InvalidInputError(
                f"The LATENT to continue has {context.shape[1]} latent frames, more than the {model.max_frames} "
                f"{model.name} attends to; set window_frames (e.g. 12) and sink_frames (e.g. 3)."
            )
        stream = start_stream(
            model.dit, model.sampler, height=height, width=width, prompt=prompt, seed=seed, window_frames=window,
            sink_frames=sink_frames, context=context,
            capacity_frames=None if window else model.max_frames, recache=recache_frames,
        )
        return io.NodeOutput(StreamHandle(stream, model, width, height))


def _length_inputs(default: int) -> list[Any]:
    return [
        io.Int.Input("length", default=default, min=1, max=100_000, tooltip=(
            "How much to generate, in chunks (3 latent frames = 12 video frames for chunk-wise models, 4 for "
            "frame-wise) or seconds (rounded up to whole chunks).")),
        io.Combo.Input("unit", options=list(UNITS), default=UNIT_CHUNKS, tooltip="What length counts: chunks or seconds."),
        io.Boolean.Input("recache", default=True, tooltip=(
            "On a prompt switch, re-encode the cached frames under the new prompt (LongLive re-cache): the video "
            "follows the new prompt sooner. Which frames: recache_frames on Causal Forcing Start.")),
    ]


def _generated_outputs() -> list[Any]:
    return [StreamSocket.Output(display_name="stream", tooltip="The stream after these chunks."),
            io.Latent.Output(display_name="latent", tooltip="Every frame so far, raw Wan 2.1 latents.")]


def _num_chunks(handle: StreamHandle, length: int, unit: str) -> int:
    if unit == UNIT_SECONDS:
        return WAN21.seconds_to_chunks(length, handle.frames_per_block)
    return int(length)


def _output(handle: StreamHandle, reporter: Any) -> io.NodeOutput:
    return io.NodeOutput(handle, handle.latent(), ui=reporter.ui())


class CausalForcingGenerate(io.ComfyNode):
    """Generate more chunks of a stream, optionally switching the prompt from here on."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CausalForcingGenerate", display_name="Causal Forcing Generate", category=CATEGORY,
            description=(
                "Generates the next chunks of a stream with the KV cache. Connect positive to switch the prompt from "
                "this point (chain several Generate nodes for a prompt switch). Outputs the stream (for the next "
                "Generate) and the whole video so far as a LATENT (native VAE Decode works on it)."
            ),
            inputs=[
                StreamSocket.Input("stream"),
                *_length_inputs(3),
                io.Conditioning.Input("positive", optional=True, tooltip="Switch to this prompt from the first new chunk."),
            ],
            outputs=_generated_outputs(),
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(
        cls, stream: StreamHandle, length: int, unit: str, recache: bool, positive: list | None = None,
    ) -> io.NodeOutput:
        unique_id = cls.hidden.unique_id
        num_chunks = _num_chunks(stream, length, unit)
        cfg = stream.model.config
        prompt = None
        if positive is not None:
            prompt = prompt_from_conditioning(positive, cfg.text_dim, cfg.text_len, label=f"node {unique_id}")
        return _output(*stream_state.generate(stream, [(num_chunks, prompt)], recache, unique_id))


class CausalForcingGenerateSchedule(io.ComfyNode):
    """Generate chunks following a prompt schedule (prompt switches at the chunks the schedule names)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CausalForcingGenerateSchedule", display_name="Causal Forcing Generate (Schedule)",
            category=CATEGORY,
            description=(
                "Generates chunks of a stream following a Causal Forcing Prompt Schedule: each prompt starts at its "
                "chunk (or second), counted from this node's first chunk."
            ),
            inputs=[StreamSocket.Input("stream"), ScheduleSocket.Input("schedule"), *_length_inputs(7)],
            outputs=_generated_outputs(),
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(
        cls, stream: StreamHandle, schedule: PromptSchedule, length: int, unit: str, recache: bool,
    ) -> io.NodeOutput:
        num_chunks = _num_chunks(stream, length, unit)
        stream.check_length(num_chunks)
        entries = parse_schedule(
            schedule.text, num_chunks, chunk_seconds=schedule.chunk_seconds(stream.frames_per_block)
        )
        cfg = stream.model.config
        prompts = {
            text: prompt_from_conditioning(cond, cfg.text_dim, cfg.text_len, label=text[:40])
            for text, cond in schedule.conditionings.items()
        }
        bounds = [e.start for e in entries] + [num_chunks]
        segments = [(end - e.start, prompts[e.prompt]) for e, end in zip(entries, bounds[1:])]
        return _output(*stream_state.generate(stream, segments, recache, cls.hidden.unique_id))


#: the nodes of this module, registered by :mod:`nodes`
NODES: tuple[type[io.ComfyNode], ...] = (CausalForcingStart, CausalForcingGenerate, CausalForcingGenerateSchedule)
