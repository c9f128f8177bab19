"""What the node modules share: the menu category, widget limits, and turning ComfyUI input values into core ones.

No maths here: the checks say what was wrong in ComfyUI terms and defer to :mod:`causal_forcing_core` (the prompt
checks to :mod:`~causal_forcing_core.prompt`, sizes and timing to :mod:`~causal_forcing_core.geometry`). Each
either-or input pair has one resolver: :func:`resolve_vae` (``vae`` / ``cf_vae``) and :func:`resolve_text_encoder`
(``clip`` / ``text_encoder``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..causal_forcing_core.errors import InvalidInputError
from ..causal_forcing_core.prompt import Prompt, check_prompt_embeds, trim_padding
from ..causal_forcing_core.vae import WanVAE, vae_from_state_dict
from . import comfy_runtime as rt
from .payloads import CFTextEncoder, CFVae

#: Add-Node menu path of every node of the pack
CATEGORY = "Causal Forcing"
#: the largest width/height widget value (a UI limit; the size rule itself is ``WAN21.size_problems``)
MAX_SIZE = 4096
#: the largest seed a widget takes (ComfyUI's convention)
MAX_SEED = 0xFFFFFFFFFFFFFFFF
#: what to do when a CONDITIONING does not come from the Wan 2.1 text encoder
_ENCODE_HINT = (
    "In ComfyUI: CLIPTextEncode with Load CLIP type 'wan' and umt5_xxl_fp8_e4m3fn_scaled.safetensors (or "
    "umt5_xxl_fp16), or the Causal Forcing Text Encoder nodes."
)
#: a key only the Wan 2.1 VAE's state dict has (tells it from other VAEs ComfyUI loads)
_WAN21_VAE_KEY = "decoder.middle.0.residual.0.gamma"


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
    # shape and width first (another model's CLIP is the usual mistake), at whatever length it was padded to
    tokens = cond.shape[1] if isinstance(cond, torch.Tensor) and cond.dim() == 3 else text_len
    try:
        check_prompt_embeds(cond, text_dim, max(tokens, text_len), batch=1)
    except InvalidInputError as err:
        raise InvalidInputError(f"The prompt CONDITIONING does not fit this model. {err} {_ENCODE_HINT}") from None
    return Prompt(trim_padding(cond, text_len).detach().float().cpu(), label=label)


def resolve_vae(vae: Any = None, cf_vae: CFVae | None = None, purpose: str = "") -> WanVAE:
    """The core VAE for the ``vae`` (native ``VAE``) / ``cf_vae`` (``CF_VAE``) input pair, loaded onto the compute
    device. Exactly one of them must be connected; ``purpose`` (e.g. ``" to encode the start image"``) goes into
    the error message."""
    if vae is not None and cf_vae is not None:
        raise InvalidInputError(
            f"Both vae and cf_vae are connected{purpose}; connect only one of them (they are two ways in for the "
            "same Wan 2.1 VAE)."
        )
    if cf_vae is not None:
        rt.load_models([cf_vae.patcher])
        return cf_vae.vae
    if vae is None:
        raise InvalidInputError(
            f"Connect a VAE{purpose}: vae (the native Load VAE node with wan_2.1_vae.safetensors) or cf_vae "
            "(Causal Forcing VAE Loader)."
        )
    module = rt.native_vae_module(vae)
    if module is None:
        raise InvalidInputError(f"The VAE input is a {type(vae).__name__}, not a ComfyUI VAE.")
    rt.load_models([rt.native_vae_patcher(vae)])
    state = module.state_dict()
    if _WAN21_VAE_KEY not in state:
        raise InvalidInputError(
            f"The connected VAE is not a Wan 2.1 VAE (its model is {type(module).__name__}). Causal Forcing students "
            "make Wan 2.1 latents: load wan_2.1_vae.safetensors with Load VAE."
        )
    first = next(iter(state.values()))
    return vae_from_state_dict(state, "The connected VAE", device=first.device, dtype=first.dtype)


def resolve_text_encoder(
    clip: Any = None, text_encoder: CFTextEncoder | None = None, purpose: str = ""
) -> Callable[[str], list]:
    """``encode(text) -> CONDITIONING`` for the ``clip`` (native ``CLIP``) / ``text_encoder``
    (``CF_TEXT_ENCODER``) input pair. Exactly one of them must be connected; ``purpose`` goes into the error
    message."""
    if clip is not None and text_encoder is not None:
        raise InvalidInputError(
            f"Both a CLIP and a Causal Forcing text encoder are connected{purpose}; connect only one of them."
        )
    if text_encoder is not None:
        return text_encoder.encode
    if clip is None:
        raise InvalidInputError(f"Connect a CLIP (Load CLIP, type wan) or a Causal Forcing text encoder{purpose}.")
    return lambda text: rt.clip_encode(clip, text)
