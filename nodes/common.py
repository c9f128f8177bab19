"""What the node modules share: socket type names, the menu category, and turning ComfyUI values into core ones.

No maths here: the checks say what was wrong in ComfyUI terms and defer to :mod:`causal_forcing_core`.
"""

from __future__ import annotations

from typing import Any

import torch

from ..causal_forcing_core.errors import InvalidInputError
from ..causal_forcing_core.stream import Prompt

#: Add-Node menu path of every node of the pack
CATEGORY = "Causal Forcing"
#: socket types of the pack (custom types are few and prefixed)
CF_MODEL = "CF_MODEL"
CF_STREAM = "CF_STREAM"
CF_SCHEDULE = "CF_SCHEDULE"
CF_TEXT_ENCODER = "CF_TEXT_ENCODER"
CF_VAE = "CF_VAE"
#: frames per second of Wan 2.1 video (the students' training rate)
WAN_FPS = 16
#: pixel frames per latent frame after the first (Wan 2.1 VAE)
VAE_TEMPORAL_STRIDE = 4
#: the size step of width/height widgets: VAE x8 and DiT 2x2 patches
SIZE_STEP = 16
#: the largest width/height widget value
MAX_SIZE = 4096
#: the largest seed a widget takes (ComfyUI's convention)
MAX_SEED = 0xFFFFFFFFFFFFFFFF


def prompt_from_conditioning(conditioning: Any, text_dim: int, text_len: int, label: str = "") -> Prompt:
    """A native ``CONDITIONING`` (``[[cond [1, L, D], {...}], ...]``, the first entry is used) -> a core Prompt.

    ``cond`` must be ``text_dim`` wide (4096 = umT5-XXL for Wan 2.1). Rows past ``text_len`` must be padding
    (CLIPTextEncode pads with zeros to at least 512 tokens); they are dropped.
    """
    try:
        cond = conditioning[0][0]
    except (TypeError, IndexError, KeyError):
        raise InvalidInputError(
            f"Expected a CONDITIONING (from CLIPTextEncode with the Wan umT5 CLIP), got {type(conditioning).__name__}."
        ) from None
    if not isinstance(cond, torch.Tensor) or cond.dim() != 3:
        shape = list(cond.shape) if isinstance(cond, torch.Tensor) else type(cond).__name__
        raise InvalidInputError(f"The CONDITIONING holds {shape}, expected a tensor [1, tokens, {text_dim}].")
    if cond.shape[-1] != text_dim:
        raise InvalidInputError(
            f"The prompt CONDITIONING is {cond.shape[-1]} wide, but this model reads {text_dim}-wide umT5 embeddings. "
            "Encode the prompt with the Wan 2.1 text encoder: Load CLIP with type 'wan' and "
            "umt5_xxl_fp8_e4m3fn_scaled.safetensors (or umt5_xxl_fp16), or the Causal Forcing Text Encoder nodes."
        )
    if cond.shape[0] != 1:
        raise InvalidInputError(f"Expected one prompt per CONDITIONING, got a batch of {cond.shape[0]}.")
    if cond.shape[1] > text_len:
        if cond[:, text_len:].abs().amax() > 0:
            raise InvalidInputError(
                f"The prompt is longer than the {text_len} tokens this model reads; shorten it."
            )
        cond = cond[:, :text_len]
    return Prompt(cond.detach().float().cpu(), label=label)


def seconds_to_chunks(seconds: float, frames_per_block: int, fps: int = WAN_FPS) -> int:
    """Whole chunks covering at least ``seconds`` of video (each chunk = 4 x frames_per_block pixel frames)."""
    frames = seconds * fps
    per_chunk = VAE_TEMPORAL_STRIDE * frames_per_block
    return max(1, int(-(-frames // per_chunk)))
