"""Prompts: the embeddings a stream is conditioned on, and the one set of checks for prompt text and embeddings.

A :class:`Prompt` holds text-encoder output [B or 1, L, text_dim] (umT5-XXL: 4096 wide for Wan 2.1). Encoders pad
to a fixed length (ComfyUI's CLIPTextEncode to 512 tokens); :func:`trim_padding` is the one place that cuts such
padding down to what the DiT reads, and :func:`check_prompt_embeds` the one place that checks the result.
:func:`check_prompt_text` is the one check of prompt text typed by a person (nodes, live control, command line).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import InvalidInputError

#: the longest prompt text accepted anywhere (characters); a schedule of several prompts may be longer
MAX_PROMPT_CHARS = 2000
#: the longest schedule text (several ``chunk: prompt`` lines)
MAX_SCHEDULE_CHARS = 20_000


@dataclass(frozen=True, eq=False)
class Prompt:
    """One prompt's embeddings [B or 1, L <= text_len, text_dim]; identity, not value, tells prompts apart."""

    embeds: torch.Tensor
    label: str = ""


def check_prompt_text(text: object, what: str = "prompt", max_chars: int = MAX_PROMPT_CHARS) -> str:
    """``text`` stripped of surrounding white space; raises :class:`InvalidInputError` when it is not a string,
    is empty, or is longer than ``max_chars`` characters."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInputError(f"The {what} is empty; write what the video should show.")
    text = text.strip()
    if len(text) > max_chars:
        raise InvalidInputError(f"The {what} has {len(text)} characters; keep it under {max_chars}.")
    return text


def trim_padding(embeds: torch.Tensor, text_len: int) -> torch.Tensor:
    """Encoder output [B, L, D] -> [B, min(L, text_len), D]; rows past ``text_len`` must be padding (zero),
    otherwise the prompt is too long for the model and :class:`InvalidInputError` says so."""
    if embeds.dim() != 3 or embeds.shape[1] <= text_len:
        return embeds
    used = embeds.abs().amax(dim=(0, 2)).nonzero()  # token rows that are not padding
    tokens = int(used[-1]) + 1 if used.numel() else 0
    if tokens > text_len:
        raise InvalidInputError(too_many_tokens(tokens, text_len))
    return embeds[:, :text_len]


def too_many_tokens(tokens: int, text_len: int, prompt: str | None = None) -> str:
    """The one message for a prompt longer than the model reads (``prompt``: its text, quoted when given)."""
    which = f"The prompt {prompt!r}" if prompt is not None else "The prompt"
    return f"{which} has {tokens} tokens; this model reads at most {text_len}. Shorten it."


def check_prompt_embeds(embeds: torch.Tensor, text_dim: int, text_len: int, batch: int = 1) -> None:
    """Raise :class:`InvalidInputError` unless ``embeds`` is [1 or batch, L <= text_len, text_dim]."""
    if not isinstance(embeds, torch.Tensor) or embeds.dim() != 3:
        shape = list(embeds.shape) if isinstance(embeds, torch.Tensor) else type(embeds).__name__
        raise InvalidInputError(f"Prompt embeddings must be a tensor [B, tokens, {text_dim}], got {shape}.")
    if embeds.shape[-1] != text_dim:
        raise InvalidInputError(
            f"Prompt embeddings are {embeds.shape[-1]} wide but this model reads {text_dim}-wide umT5 embeddings "
            "(umT5-XXL gives 4096 for Wan 2.1). Encode the prompt with the Wan 2.1 text encoder."
        )
    if embeds.shape[1] > text_len:
        raise InvalidInputError(too_many_tokens(embeds.shape[1], text_len))
    if embeds.shape[0] not in (1, batch):
        raise InvalidInputError(f"Prompt batch {embeds.shape[0]} does not match the stream batch {batch} (or 1).")
