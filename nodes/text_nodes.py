"""Prompts: the pack's own umT5 loader and encoder, and prompt schedules.

The usual prompt input is ComfyUI's native ``CONDITIONING`` (CLIPTextEncode with the Wan umT5 CLIP). The core's own
encoder (``CausalForcingTextEncoderLoader`` + ``CausalForcingTextEncode``) reads the reference
``models_t5_umt5-xxl-enc-bf16.pth`` and small test encoders, and makes the same ``CONDITIONING``.
``CausalForcingPromptSchedule`` encodes every prompt of a schedule (``0: prompt`` lines by chunk or second, or
``a | b | c``) once; ``CausalForcingGenerateSchedule`` follows it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from comfy_api.latest import io

from ..causal_forcing_core.config import WAN_TEXT_LEN
from ..causal_forcing_core.errors import CausalForcingError, InvalidInputError
from ..causal_forcing_core.prompt import MAX_SCHEDULE_CHARS, check_prompt_text
from ..causal_forcing_core.schedule import schedule_prompts
from ..causal_forcing_core.text_encoder import load_text_encoder
from . import comfy_runtime as rt
from . import toy_entries as toy
from .common import CATEGORY, resolve_text_encoder
from .payloads import (
    UNIT_CHUNKS,
    UNIT_SECONDS,
    UNITS,
    CFTextEncoder,
    PromptSchedule,
    ScheduleSocket,
    TextEncoderSocket,
)

logger = logging.getLogger(__name__)

TEXT_DTYPES = {"auto": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
TEXT_DEVICES = ("default", "cpu")
#: files that mark a folder as a tokenizer
_TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "tokenizer_config.json")
#: how many folders below models/text_encoders a tokenizer folder may be
_TOKENIZER_DEPTH = 3


def text_encoder_choices() -> list[str]:
    """Files in ``models/text_encoders``, then the embedded toy umT5 when its bundle is available."""
    return toy.with_embedded(rt.model_file_list("text_encoders"), toy.TEXT_ENCODER_ENTRY)


def tokenizer_choices() -> list[str]:
    """Tokenizer folders inside the ``text_encoders`` folders (relative POSIX paths), e.g. ``google/umt5-xxl``,
    then the embedded toy tokenizer when its bundle is available."""
    return toy.with_embedded(_user_tokenizers(), toy.TOKENIZER_ENTRY)


def _user_tokenizers() -> list[str]:
    found: list[str] = []
    for base in map(Path, rt.model_folder_paths("text_encoders")):
        if not base.is_dir():
            continue
        # a tokenizer sits a few folders down (google/umt5-xxl/); do not walk a big model folder on every
        # /object_info request
        markers = (m for depth in range(1, _TOKENIZER_DEPTH + 1) for name in _TOKENIZER_FILES
                   for m in base.glob("*/" * depth + name))
        for marker in markers:
            if marker.is_file():
                rel = marker.parent.relative_to(base).as_posix()
                if rel != "." and rel not in found:
                    found.append(rel)
    return sorted(found)


def tokenizer_path(name: str) -> Path:
    if toy.is_embedded(name):
        return toy.embedded_path(name)
    for base in map(Path, rt.model_folder_paths("text_encoders")):
        folder = (base / name).resolve()
        if folder.is_relative_to(base.resolve()) and folder.is_dir():
            return folder
    raise InvalidInputError(
        f"Tokenizer folder {name!r} not found in models/text_encoders. Put the google/umt5-xxl tokenizer files "
        "(tokenizer.json or spiece.model, tokenizer_config.json) in models/text_encoders/google/umt5-xxl/."
    )


def _encoder_files(text_encoder_name: str, tokenizer: str) -> tuple[Path, Path, int]:
    """(weights, tokenizer folder, text length) for the loader's choices. The embedded toy encoder always pairs
    with the embedded tokenizer (and the toy model's 16 tokens); the embedded tokenizer fits no other encoder."""
    if toy.is_embedded(text_encoder_name):
        if tokenizer != toy.TOKENIZER_ENTRY:
            logger.info("%s uses its own tokenizer (%s), not %r.", text_encoder_name, toy.TOKENIZER_ENTRY, tokenizer)
        return (toy.embedded_path(text_encoder_name), toy.embedded_path(toy.TOKENIZER_ENTRY),
                toy.embedded_text_len())
    if toy.is_embedded(tokenizer):
        raise InvalidInputError(
            f"{tokenizer} only fits the embedded toy text encoder ({toy.TEXT_ENCODER_ENTRY}); pick the umT5 "
            f"tokenizer folder (google/umt5-xxl) for {text_encoder_name}."
        )
    return Path(rt.model_file_path("text_encoders", text_encoder_name)), tokenizer_path(tokenizer), WAN_TEXT_LEN


class CausalForcingTextEncoderLoader(io.ComfyNode):
    """Load the umT5 text encoder with the pack's own loader."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CausalForcingTextEncoderLoader", display_name="Causal Forcing Text Encoder Loader",
            category=CATEGORY,
            description=(
                "Loads a umT5 encoder from models/text_encoders (the reference models_t5_umt5-xxl-enc-bf16.pth, "
                "transformers-layout or scaled-fp8 safetensors) and its tokenizer folder. The native Load CLIP "
                "(type wan) works as well; use this one for files it cannot read."
            ),
            inputs=[
                io.Combo.Input("text_encoder_name", options=text_encoder_choices(), tooltip=(
                    "umT5 weights in models/text_encoders; "
                    f"'{toy.TEXT_ENCODER_ENTRY}' is the toy model's encoder (it uses its own tokenizer).")),
                io.Combo.Input("tokenizer", options=tokenizer_choices(), tooltip=(
                    "A tokenizer folder inside models/text_encoders (the embedded toy encoder always uses "
                    f"'{toy.TOKENIZER_ENTRY}').")),
                io.Combo.Input("dtype", options=list(TEXT_DTYPES), default="auto", tooltip="auto: bf16 on GPU, fp32 on CPU."),
                io.Combo.Input("device", options=list(TEXT_DEVICES), default="default",
                               tooltip="cpu keeps GPU memory for the video model."),
            ],
            outputs=[TextEncoderSocket.Output(display_name="text_encoder")],
        )

    @classmethod
    def execute(cls, text_encoder_name: str, tokenizer: str, dtype: str, device: str) -> io.NodeOutput:
        target = torch.device("cpu") if device == "cpu" else rt.get_torch_device()
        chosen = TEXT_DTYPES.get(dtype) or (torch.float32 if target.type == "cpu" else torch.bfloat16)
        weights, tokenizer_folder, text_len = _encoder_files(text_encoder_name, tokenizer)
        encoder = load_text_encoder(
            weights, tokenizer_folder, device=torch.device("cpu") if device == "cpu" else rt.offload_device(),
            dtype=chosen, text_len=text_len,
        )
        patcher = None if device == "cpu" else rt.manage_model(encoder.model)
        return io.NodeOutput(CFTextEncoder(encoder, patcher, toy_vocabulary=toy.is_embedded(text_encoder_name)))


class CausalForcingTextEncode(io.ComfyNode):
    """Encode a prompt with the pack's umT5 encoder into a native CONDITIONING."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CausalForcingTextEncode", display_name="Causal Forcing Text Encode", category=CATEGORY,
            description="Encodes a prompt with a Causal Forcing text encoder into CONDITIONING (same as CLIPTextEncode).",
            inputs=[
                TextEncoderSocket.Input("text_encoder"),
                io.String.Input("text", multiline=True, dynamic_prompts=True, tooltip="What the video shows."),
            ],
            outputs=[io.Conditioning.Output(display_name="conditioning")],
        )

    @classmethod
    def execute(cls, text_encoder: CFTextEncoder, text: str) -> io.NodeOutput:
        return io.NodeOutput(text_encoder.encode(check_prompt_text(text)))


def validate_schedule_text(schedule: str, unit: str) -> str | bool:
    """True, or the message saying which line of the schedule is wrong."""
    try:
        check_prompt_text(schedule, "schedule", MAX_SCHEDULE_CHARS)
        schedule_prompts(schedule, chunk_seconds=1.0 if unit == UNIT_SECONDS else None)
    except CausalForcingError as err:
        return str(err)
    return True


class CausalForcingPromptSchedule(io.ComfyNode):
    """Encode a prompt schedule once: ``0: prompt`` lines (by chunk or second) or ``a | b | c`` segments."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CausalForcingPromptSchedule", display_name="Causal Forcing Prompt Schedule", category=CATEGORY,
            description=(
                "A prompt schedule for Causal Forcing Generate (Schedule). One line per prompt, 'start: prompt', "
                "where start counts chunks (or seconds) from the first chunk that node generates; or 'a | b | c' to "
                "split the video into equal parts. Encoded with a CLIP (type wan) or a Causal Forcing text encoder."
            ),
            inputs=[
                io.String.Input("schedule", multiline=True, default=(
                    "0: a red fox trots through fresh snow in a pine forest\n"
                    "4: the fox stops and looks at the camera\n"),
                    tooltip="'start: prompt' lines, or 'a | b | c' for equal segments."),
                io.Combo.Input("unit", options=list(UNITS), default=UNIT_CHUNKS, tooltip=(
                    "What the line numbers of the schedule count: chunks or seconds from the first chunk of the "
                    "Generate (Schedule) node (its own length has a unit of its own).")),
                io.Clip.Input("clip", optional=True, tooltip="Load CLIP with type wan (umT5-XXL)."),
                TextEncoderSocket.Input("text_encoder", optional=True, tooltip="Or a Causal Forcing text encoder."),
            ],
            outputs=[ScheduleSocket.Output(display_name="schedule")],
        )

    @classmethod
    def validate_inputs(cls, schedule: str | None) -> str | bool:
        """The schedule's syntax, before the run (line numbers as chunks or seconds; the unit is checked exactly
        when the node runs). Only ``schedule`` is named, so ComfyUI still checks ``unit`` against its options."""
        if schedule is None:  # linked from another node: checked when it runs
            return True
        return validate_schedule_text(schedule, UNIT_SECONDS)

    @classmethod
    def execute(
        cls, schedule: str, unit: str, clip: Any = None, text_encoder: CFTextEncoder | None = None
    ) -> io.NodeOutput:
        problem = validate_schedule_text(schedule, unit)
        if problem is not True:
            raise InvalidInputError(str(problem))
        encode = resolve_text_encoder(clip, text_encoder)
        prompts = schedule_prompts(schedule, chunk_seconds=1.0 if unit == UNIT_SECONDS else None)
        conds = {}
        for text in prompts:
            rt.throw_if_interrupted()
            conds[text] = encode(check_prompt_text(text))
        return io.NodeOutput(PromptSchedule(schedule, unit, conds))


#: the nodes of this module, registered by :mod:`nodes`
NODES: tuple[type[io.ComfyNode], ...] = (CausalForcingTextEncoderLoader, CausalForcingTextEncode, CausalForcingPromptSchedule)
