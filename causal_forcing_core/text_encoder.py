"""umT5 text encoder (reference §4.1) through ``transformers.UMT5EncoderModel``.

Weights load from:

- the reference ``models_t5_umt5-xxl-enc-bf16.pth`` layout (``token_embedding``, ``blocks.N.attn.q`` ...; also inside
  a safetensors file), converted to the transformers layout, read only with ``torch.load(weights_only=True)``;
- transformers-layout safetensors as ComfyUI keeps them under ``text_encoders/`` (``encoder.block.N.layer.0...``,
  ``shared.weight``), in fp32/fp16/bf16 or "scaled fp8" (float8_e4m3fn weights with a per-tensor ``.scale_weight``
  and a ``scaled_fp8`` marker).

Prompts are cleaned like the reference (ftfy, double HTML unescape, whitespace collapse), padded to ``text_len``
tokens with EOS added, encoded with the padding masked out, and every row at or past a prompt's true length is set
to zero: ``encode`` returns [B, text_len, dim] float32.
"""

from __future__ import annotations

import gc
import html
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .config import WAN_TEXT_LEN
from .errors import CheckpointError, InvalidInputError
from .prompt import too_many_tokens
from .weights import check_tensor_values, key_problems, read_state_dict

logger = logging.getLogger(__name__)

TOKENIZER_HUB_ID = "google/umt5-xxl"
#: a tokenizer folder holds one of these (the fast tokenizer's JSON, or a sentencepiece model)
TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "tokenizer.model", "sentencepiece.bpe.model")
#: characters of a prompt quoted in messages
_QUOTED = 40
#: key prefixes of umT5 weights inside other files (ComfyUI's text-encoder layout, wrapped state dicts)
_FILE_PREFIXES = ("text_encoders.umt5xxl.transformer.", "model.")
_REFERENCE_RENAMES = (
    (r"^token_embedding\.weight$", "shared.weight"),
    (r"^norm\.weight$", "encoder.final_layer_norm.weight"),
    (r"^blocks\.(\d+)\.norm1\.weight$", r"encoder.block.\1.layer.0.layer_norm.weight"),
    (r"^blocks\.(\d+)\.attn\.([qkvo])\.weight$", r"encoder.block.\1.layer.0.SelfAttention.\2.weight"),
    (r"^blocks\.(\d+)\.pos_embedding\.embedding\.weight$",
     r"encoder.block.\1.layer.0.SelfAttention.relative_attention_bias.weight"),
    (r"^blocks\.(\d+)\.norm2\.weight$", r"encoder.block.\1.layer.1.layer_norm.weight"),
    (r"^blocks\.(\d+)\.ffn\.gate\.0\.weight$", r"encoder.block.\1.layer.1.DenseReluDense.wi_0.weight"),
    (r"^blocks\.(\d+)\.ffn\.fc1\.weight$", r"encoder.block.\1.layer.1.DenseReluDense.wi_1.weight"),
    (r"^blocks\.(\d+)\.ffn\.fc2\.weight$", r"encoder.block.\1.layer.1.DenseReluDense.wo.weight"),
)


def clean_prompt(text: str) -> str:
    """The reference's cleaning: ftfy.fix_text, HTML-unescape twice, collapse whitespace."""
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return re.sub(r"\s+", " ", text).strip()


# --------------------------------------------------------------------------------------------------- weights
def _convert_reference(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in sd.items():
        for pattern, repl in _REFERENCE_RENAMES:
            new, hits = re.subn(pattern, repl, key)
            if hits:
                out[new] = value
                break
        else:
            raise CheckpointError(f"Unexpected key {key!r} in a reference-layout umT5 file.")
    return out


def _dequantize_scaled_fp8(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ComfyUI scaled fp8: weight (float8) x its ``.scale_weight`` -> bfloat16; drop the marker and scales."""
    out = {}
    for key, value in sd.items():
        if key == "scaled_fp8" or key.endswith((".scale_weight", ".scale_input")):
            continue
        scale = sd.get(key[: -len("weight")] + "scale_weight") if key.endswith(".weight") else None
        if scale is not None:
            value = (value.float() * scale.float()).to(torch.bfloat16)
        elif value.dtype == torch.float8_e4m3fn:
            value = value.to(torch.bfloat16)
        out[key] = value
    return out


def read_text_encoder_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Any supported umT5 file -> transformers-layout encoder state dict (``shared.weight``, ``encoder.*``)."""
    path = Path(path)
    sd = read_state_dict(path, prefix=_FILE_PREFIXES, what="umT5 text encoder file")  # refuses code-running pickles
    if "token_embedding.weight" in sd:
        sd = _convert_reference(sd)
    sd = _dequantize_scaled_fp8(dict(sd))
    if "shared.weight" not in sd and "encoder.embed_tokens.weight" in sd:
        sd["shared.weight"] = sd["encoder.embed_tokens.weight"]
    sd.pop("encoder.embed_tokens.weight", None)
    if "shared.weight" not in sd or not any(k.startswith("encoder.block.") for k in sd):
        keys = sorted(sd)[:5]
        raise CheckpointError(
            f"{path.name} is not a umT5 text encoder: expected keys like token_embedding.weight / blocks.N.attn.q.weight "
            f"(reference) or shared.weight / encoder.block.N.layer.0.SelfAttention.q.weight (transformers); found "
            f"{', '.join(keys) or 'no tensors'}."
        )
    return sd


def config_from_weights(sd: Mapping[str, torch.Tensor]) -> Any:
    """A ``UMT5Config`` for an encoder-only model with these weights."""
    from transformers import UMT5Config

    vocab, d_model = sd["shared.weight"].shape
    buckets, heads = sd["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"].shape
    inner = sd["encoder.block.0.layer.0.SelfAttention.q.weight"].shape[0]
    layers = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("encoder.block."))
    return UMT5Config(
        vocab_size=vocab, d_model=d_model, d_kv=inner // heads, d_ff=sd["encoder.block.0.layer.1.DenseReluDense.wi_0.weight"].shape[0],
        num_layers=layers, num_decoder_layers=0, num_heads=heads, relative_attention_num_buckets=buckets,
        relative_attention_max_distance=128, dropout_rate=0.0, layer_norm_epsilon=1e-6,
        feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False, tie_word_embeddings=False,
    )


def build_encoder(
    sd: dict[str, torch.Tensor], dtype: torch.dtype, device: torch.device | str, name: str = "state dict"
) -> torch.nn.Module:
    """UMT5EncoderModel with exactly these weights: keys and shapes checked strictly and NaN / inf refused, both
    reported by tensor name (``name``, the file's, is used in messages)."""
    from transformers import UMT5EncoderModel

    with torch.device("meta"):
        model = UMT5EncoderModel(config_from_weights(sd))
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    sd = dict(sd)
    if "encoder.embed_tokens.weight" in expected:
        sd["encoder.embed_tokens.weight"] = sd["shared.weight"]
    problems = key_problems(sd, expected)
    if problems:
        config = model.config
        raise CheckpointError(
            f"umT5 weights of {name} do not match the encoder (d_model {config.d_model}, {config.num_layers} layers, "
            f"{config.num_heads} heads, read from their shapes): {'; '.join(problems)}."
        )
    check_tensor_values({k: v for k, v in sd.items() if k != "encoder.embed_tokens.weight"}, what=f"umT5 text encoder {name}")
    model.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, strict=True, assign=True)
    return model.to(device).eval().requires_grad_(False)


# --------------------------------------------------------------------------------------------------- tokenizer
def load_tokenizer(path: str | Path | None, *, allow_download: bool = False) -> Any:
    """AutoTokenizer from a local folder, or from the hub (``google/umt5-xxl``) only when allowed."""
    from transformers import AutoTokenizer

    if path is not None:
        folder = Path(path)
        put = ("Put the google/umt5-xxl tokenizer files (tokenizer.json / spiece.model, tokenizer_config.json) there, "
               "or pass --download.")
        if not folder.is_dir():
            raise CheckpointError(f"The umT5 tokenizer folder {folder} does not exist. {put}")
        if not any((folder / name).is_file() for name in TOKENIZER_FILES):
            found = ", ".join(sorted(p.name for p in folder.iterdir())[:5]) or "nothing"
            raise CheckpointError(f"The umT5 tokenizer folder {folder} has no tokenizer files (found: {found}). {put}")
        try:
            return AutoTokenizer.from_pretrained(str(folder))
        except Exception as err:  # noqa: BLE001 - transformers raises OSError / ValueError / its own for bad files
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
            raise CheckpointError(f"Cannot load the umT5 tokenizer from {folder} ({first}). {put}") from None
    if not allow_download:
        raise CheckpointError(
            "No umT5 tokenizer given. Keep the google/umt5-xxl tokenizer files in a folder (the Wan2.1-T2V-1.3B "
            "repo ships them as google/umt5-xxl/) and pass it, or pass --download."
        )
    try:
        return AutoTokenizer.from_pretrained(TOKENIZER_HUB_ID)
    except Exception as err:  # noqa: BLE001 - offline, no such repo
        raise CheckpointError(f"Could not get the {TOKENIZER_HUB_ID} tokenizer from the hub: {err}") from None


# --------------------------------------------------------------------------------------------------- encoder
class TextEncoder:
    """umT5 encoder + tokenizer producing the prompt embeddings the Wan DiT expects."""

    def __init__(self, model: torch.nn.Module | None, tokenizer: Any, text_len: int = WAN_TEXT_LEN) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.text_len = text_len

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: torch.device | str) -> "TextEncoder":
        self.model = self.model.to(device)
        return self

    def check_prompts(self, prompts: list[str]) -> None:
        """Raise :class:`InvalidInputError` naming the first prompt longer than :attr:`text_len` tokens (EOS
        included); only the tokenizer runs, so a caller can check prompts before any weights load."""
        cleaned = [clean_prompt(p) for p in prompts]
        if not cleaned:
            return
        counts = [len(ids) for ids in self.tokenizer(cleaned, add_special_tokens=True)["input_ids"]]
        for prompt, count in zip(prompts, counts):
            if count > self.text_len:
                shown = prompt if len(prompt) <= _QUOTED else prompt[:_QUOTED] + "..."
                raise InvalidInputError(too_many_tokens(count, self.text_len, shown))

    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Cleaned, EOS-terminated, padded ids and mask, both [B, text_len] int64; a prompt longer than
        :attr:`text_len` tokens is refused (:meth:`check_prompts`), never cut short."""
        self.check_prompts(prompts)
        batch = self.tokenizer(
            [clean_prompt(p) for p in prompts], padding="max_length", max_length=self.text_len,
            add_special_tokens=True, return_tensors="pt",
        )
        return batch["input_ids"], batch["attention_mask"]

    @torch.no_grad()
    def encode_ids(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids, mask [B, L] -> embeddings [B, L, dim] float32 on CPU, zero at and past each true length."""
        if self.model is None:
            raise CheckpointError("This text encoder was released; load it again to encode more prompts.")
        out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).last_hidden_state
        out = out.float().cpu()
        lengths = mask.gt(0).sum(dim=1)
        keep = torch.arange(out.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)
        return out * keep.unsqueeze(-1)

    def encode(self, prompts: list[str]) -> torch.Tensor:
        """Prompts -> [B, text_len, dim] float32 embeddings (padding rows zero)."""
        return self.encode_ids(*self.tokenize(prompts))

    def release(self) -> None:
        """Free the weights (the command line encodes every prompt before the DiT is loaded)."""
        self.model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def load_text_encoder(
    weights_path: str | Path,
    tokenizer_path: str | Path | None = None,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.bfloat16,
    text_len: int = WAN_TEXT_LEN,
    allow_download: bool = False,
    tokenizer: Any = None,
) -> TextEncoder:
    """Load the umT5 encoder from any supported file and its tokenizer (``tokenizer``, one already loaded with
    :func:`load_tokenizer`, is used as is)."""
    if tokenizer is None:
        tokenizer = load_tokenizer(tokenizer_path, allow_download=allow_download)
    model = build_encoder(read_text_encoder_weights(weights_path), dtype, device, Path(weights_path).name)
    logger.info("Loaded umT5 encoder from %s (%s on %s)", Path(weights_path).name, dtype, device)
    return TextEncoder(model, tokenizer, text_len)
