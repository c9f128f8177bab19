"""The umT5-XXL text encoder of Wan2.1, run through ``transformers.UMT5EncoderModel``.

Wan encodes every prompt with the encoder half of umT5-XXL (reference §4.1): token embedding, 24 pre-norm blocks of
self-attention with a relative-position bias of its own per block (no 1/sqrt(d) scaling) and a gated-GELU (tanh)
feed-forward, RMS norms (eps 1e-6), a final RMS norm. ``transformers``' UMT5 implements exactly that; this module
builds it with the sizes read off the weights, loads every layout users keep, and adds Wan's wrapper semantics:
prompt cleaning, padding to ``text_len`` (512) and zeroing of the output rows past each prompt's true length
(reference §10 item 9: the DiT then still attends to all rows).

Weight layouts (all converted to the transformers names on load):

- the reference ``models_t5_umt5-xxl-enc-bf16.pth`` (``token_embedding.weight``, ``blocks.N.attn.q.weight``...), a
  torch pickle read with ``weights_only=True`` only; the same names inside a ``.safetensors`` file are accepted too;
- transformers names (``shared.weight``, ``encoder.block.N.layer.0.SelfAttention.q.weight``...) in a
  ``.safetensors`` file as ComfyUI keeps them under ``models/text_encoders/`` (``umt5_xxl_fp16.safetensors``,
  ``umt5_xxl_fp8_e4m3fn_scaled.safetensors``): fp32/bf16/fp16, or float8 e4m3fn with ComfyUI's per-tensor
  ``<module>.scale_weight`` (marker tensor ``scaled_fp8``), dequantised on load as ``weight.float() * scale``.

The tokenizer is the ``google/umt5-xxl`` one, read from a local folder (by default ``google/umt5-xxl`` next to the
weights); the hub is only asked when the caller allows a download.
"""

from __future__ import annotations

import gc
import html
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .checkpoints import read_checkpoint, resolve_weight_dtype
from .errors import CausalForcingError, CheckpointError, InvalidInputError

if TYPE_CHECKING:  # transformers is imported lazily: building the package must not need it
    from transformers import PreTrainedTokenizerBase, UMT5Config, UMT5EncoderModel

logger = logging.getLogger(__name__)

#: Hub repository of the umT5 tokenizer Wan uses; only contacted when the caller allows a download.
UMT5_TOKENIZER_REPO = "google/umt5-xxl"
#: Folders (relative to the weights' folder) searched for the tokenizer when no path is given.
TOKENIZER_SUBDIRS = ("google/umt5-xxl", "umt5-xxl", "tokenizer")
#: Files whose presence marks a folder as a tokenizer folder.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "spiece.model")
#: Wan's prompt length: every prompt is padded (and truncated) to this many tokens.
DEFAULT_TEXT_LEN = 512
#: umT5 relative-position bias: bidirectional buckets, logarithmic beyond 16 tokens, saturating at this distance.
UMT5_MAX_DISTANCE = 128
UMT5_EPS = 1e-6

T5_KEYS_HINT = (
    "umT5 encoder keys such as token_embedding.weight, blocks.0.attn.q.weight (Wan's "
    "models_t5_umt5-xxl-enc-bf16.pth) or shared.weight, encoder.block.0.layer.0.SelfAttention.q.weight "
    "(transformers / ComfyUI umt5_xxl_*.safetensors)"
)

# Reference (wan/modules/t5.py) name -> transformers UMT5 name. The reference FFN is fc2(fc1(x) * gelu(gate(x))),
# transformers' is wo(gelu(wi_0(x)) * wi_1(x)): the GELU branch gate.0 is wi_0, the linear branch fc1 is wi_1.
_BLOCK = "encoder.block.{i}."
_REFERENCE_TO_HF_BLOCK = {
    "norm1.weight": "layer.0.layer_norm.weight",
    "attn.q.weight": "layer.0.SelfAttention.q.weight",
    "attn.k.weight": "layer.0.SelfAttention.k.weight",
    "attn.v.weight": "layer.0.SelfAttention.v.weight",
    "attn.o.weight": "layer.0.SelfAttention.o.weight",
    "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
    "norm2.weight": "layer.1.layer_norm.weight",
    "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",
    "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",
    "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
}
_REFERENCE_TO_HF_TOP = {"token_embedding.weight": "shared.weight", "norm.weight": "encoder.final_layer_norm.weight"}
_HF_TO_REFERENCE_BLOCK = {v: k for k, v in _REFERENCE_TO_HF_BLOCK.items()}
_HF_TO_REFERENCE_TOP = {v: k for k, v in _REFERENCE_TO_HF_TOP.items()}
_HF_TO_REFERENCE_TOP["encoder.embed_tokens.weight"] = "token_embedding.weight"

# Tensors that ride along in ComfyUI files but are not weights of the encoder.
_FP8_MARKER = "scaled_fp8"
_SCALE_SUFFIXES = (".scale_weight", ".weight_scale")
_IGNORED_SUFFIXES = (".scale_input", ".input_scale")
_IGNORED_KEYS = ("spiece_model",)  # ComfyUI may embed the sentencepiece model; we read the tokenizer from files


# --------------------------------------------------------------------------------------------------- key layouts
def reference_to_hf_key(key: str) -> str | None:
    """Transformers UMT5 name of a reference (``wan/modules/t5.py``) encoder key, or None if it is not one."""
    if key in _REFERENCE_TO_HF_TOP:
        return _REFERENCE_TO_HF_TOP[key]
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)", key)
    if m and m.group(2) in _REFERENCE_TO_HF_BLOCK:
        return _BLOCK.format(i=m.group(1)) + _REFERENCE_TO_HF_BLOCK[m.group(2)]
    return None


def hf_to_reference_key(key: str) -> str:
    """Reference name of a transformers UMT5 key (for messages about reference-layout files); unknown keys as is."""
    if key in _HF_TO_REFERENCE_TOP:
        return _HF_TO_REFERENCE_TOP[key]
    m = re.fullmatch(r"encoder\.block\.(\d+)\.(.+)", key)
    if m and m.group(2) in _HF_TO_REFERENCE_BLOCK:
        return f"blocks.{m.group(1)}.{_HF_TO_REFERENCE_BLOCK[m.group(2)]}"
    return key


def detect_t5_layout(keys: Sequence[str]) -> tuple[str, str]:
    """``("reference" | "hf", prefix)`` of a state dict's keys; CheckpointError if they are not a T5 encoder.

    ``prefix`` is whatever precedes the encoder names (``""`` for bare files, e.g. ``text_encoders.umt5xxl.transformer.``
    in a combined checkpoint).
    """
    for key in keys:
        for marker, layout in (
            ("encoder.final_layer_norm.weight", "hf"),
            ("encoder.block.0.layer.0.SelfAttention.q.weight", "hf"),
            ("blocks.0.attn.q.weight", "reference"),
        ):
            if key.endswith(marker) and (key == marker or key[: -len(marker)].endswith(".")):
                return layout, key[: -len(marker)]
    found = sorted(keys)
    shown = ", ".join(found[:6]) or "no tensors"
    raise CheckpointError(
        f"This file is not a umT5 text encoder: expected {T5_KEYS_HINT}; found {shown}"
        f"{' ...' if len(found) > 6 else ''}.{_guess_other(found)} Pass the umT5-XXL encoder "
        "(models_t5_umt5-xxl-enc-bf16.pth from Wan-AI/Wan2.1-T2V-1.3B, or umt5_xxl_fp16.safetensors / "
        "umt5_xxl_fp8_e4m3fn_scaled.safetensors from ComfyUI's text_encoders folder)."
    )


def _guess_other(keys: Sequence[str]) -> str:
    if any(k.endswith("patch_embedding.weight") for k in keys):
        return " It looks like a Wan DiT."
    if any(k.startswith(("decoder.", "conv1.")) for k in keys) and any(k.startswith("encoder.") for k in keys):
        return " It looks like a VAE."
    if any("text_model.encoder.layers." in k for k in keys):
        return " It looks like a CLIP text encoder."
    return ""


def _strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Keys under ``prefix`` with it removed, plus the keys outside it (reported as unexpected later)."""
    if not prefix:
        return dict(state_dict), []
    inside = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    outside = [k for k in state_dict if not k.startswith(prefix) and k not in _IGNORED_KEYS and k != _FP8_MARKER]
    return inside, outside


def _dequantize(state_dict: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Fold ComfyUI's scaled-fp8 scales into the weights and cast every tensor to ``dtype`` (one at a time).

    A float8 weight ``<module>.weight`` with a ``<module>.scale_weight`` (per tensor, or per output row) becomes
    ``weight.float() * scale``; a float8 weight without a scale is upcast as is.
    """
    scales: dict[str, torch.Tensor] = {}
    for key in list(state_dict):
        for suffix in _SCALE_SUFFIXES:
            if key.endswith(suffix):
                scales[key[: -len(suffix)] + ".weight"] = state_dict.pop(key)
        if key.endswith(_IGNORED_SUFFIXES) or key in _IGNORED_KEYS or key == _FP8_MARKER:
            state_dict.pop(key, None)
    out: dict[str, torch.Tensor] = {}
    n_fp8 = 0
    for key in list(state_dict):
        tensor = state_dict.pop(key)
        if not tensor.is_floating_point():
            raise CheckpointError(
                f"{key} is stored as {tensor.dtype}, which is not a float weight. Packed / integer quantisations "
                "are not supported; use the fp16, bf16 or fp8_e4m3fn(_scaled) version of the umT5 encoder."
            )
        scale = scales.pop(key, None)
        if tensor.element_size() == 1:
            n_fp8 += 1
            value = tensor.float()
            if scale is not None:
                scale = scale.float()
                if scale.numel() == 1:
                    value.mul_(scale.reshape(()))
                elif value.ndim == 2 and scale.numel() == value.shape[0]:
                    value.mul_(scale.reshape(-1, 1))
                else:
                    raise CheckpointError(
                        f"The scale of {key} has shape {list(scale.shape)}; expected one value per tensor or one per "
                        f"output row ({value.shape[0]}) for a weight of shape {list(value.shape)}."
                    )
            tensor = value
        elif scale is not None:
            raise CheckpointError(
                f"{key} has a scale but is stored as {tensor.dtype}, not float8; the file mixes quantisation "
                "conventions we do not know. Use an fp16/bf16 version of the encoder."
            )
        out[key] = tensor.to(dtype)
    if scales:
        raise CheckpointError(
            f"Scales without a weight: {', '.join(sorted(scales)[:5])}. The file is not a ComfyUI scaled-fp8 "
            "umT5 encoder we understand."
        )
    if n_fp8:
        logger.info("Dequantised %d float8 umT5 weights to %s", n_fp8, dtype)
    return out


def to_hf_state_dict(
    state_dict: Mapping[str, torch.Tensor], dtype: torch.dtype = torch.float32
) -> tuple[dict[str, torch.Tensor], str, list[str]]:
    """Any supported umT5 encoder state dict -> transformers UMT5 names, dequantised and cast to ``dtype``.

    Returns ``(state_dict, layout, unexpected)``: ``layout`` is ``"reference"`` or ``"hf"`` and ``unexpected`` lists
    keys (in the file's naming) that belong to no encoder parameter. Decoder / LM-head weights of a full
    encoder-decoder checkpoint are dropped. The embedding appears under both ``shared.weight`` and
    ``encoder.embed_tokens.weight`` (one tensor, as transformers ties them).
    """
    layout, prefix = detect_t5_layout(list(state_dict))
    sd, unexpected = _strip_prefix(state_dict, prefix)
    converted: dict[str, torch.Tensor] = {}
    if layout == "reference":
        for key, value in sd.items():
            base = key
            for suffix in _SCALE_SUFFIXES:
                if key.endswith(suffix):  # keep a scale next to its (renamed) weight
                    base = key[: -len(suffix)] + ".weight"
            hf = reference_to_hf_key(base)
            if hf is None:
                if key == _FP8_MARKER or key in _IGNORED_KEYS or key.endswith(_IGNORED_SUFFIXES):
                    continue
                unexpected.append(prefix + key)
            else:
                converted[hf if base == key else hf[: -len(".weight")] + key[len(base) - len(".weight"):]] = value
    else:
        dropped = [k for k in sd if k.startswith(("decoder.", "lm_head."))]
        if dropped:
            logger.info("Ignoring %d decoder / lm_head tensors of a full T5 checkpoint", len(dropped))
        converted = {k: v for k, v in sd.items() if not k.startswith(("decoder.", "lm_head."))}
        embed = converted.pop("encoder.embed_tokens.weight", None)
        if embed is not None and "shared.weight" not in converted:
            converted["shared.weight"] = embed
    converted = _dequantize(converted, dtype)
    if "shared.weight" in converted:
        converted["encoder.embed_tokens.weight"] = converted["shared.weight"]
    return converted, layout, unexpected


# --------------------------------------------------------------------------------------------------- config
def umt5_config_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> "UMT5Config":
    """The encoder's architecture read off transformers-named tensors (see :func:`to_hf_state_dict`).

    vocab and d_model from ``shared.weight`` [vocab, d_model]; heads and buckets from a relative-position table
    [num_buckets, num_heads]; d_kv = q rows / heads; d_ff from ``wi_0`` [d_ff, d_model]; layers from the block ids.
    """
    from transformers import UMT5Config

    shape = {k: tuple(v.shape) for k, v in state_dict.items()}
    layers = sorted({int(m.group(1)) for k in shape if (m := re.match(r"encoder\.block\.(\d+)\.", k))})
    attn = "encoder.block.{}.layer.0.SelfAttention."
    need = ["shared.weight", attn.format(0) + "q.weight", attn.format(0) + "relative_attention_bias.weight"]
    missing = [k for k in need if k not in shape]
    if not layers or missing:
        raise CheckpointError(
            f"The umT5 encoder lacks {', '.join(missing) or 'transformer blocks'}; cannot tell its size. Expected "
            f"{T5_KEYS_HINT}. The file is incomplete or not a umT5 encoder."
        )
    if len(layers) > 1 and attn.format(layers[1]) + "relative_attention_bias.weight" not in shape:
        raise CheckpointError(
            "This T5 encoder has a relative-position bias in its first block only (T5 v1.1, e.g. t5xxl for Flux / "
            "SD3), but Wan needs umT5-XXL, which has one per block. Use umt5_xxl_fp16.safetensors (ComfyUI) or "
            "models_t5_umt5-xxl-enc-bf16.pth (Wan-AI/Wan2.1-T2V-1.3B)."
        )
    wi0 = "encoder.block.0.layer.1.DenseReluDense.wi_0.weight"
    if wi0 not in shape:
        raise CheckpointError(
            "This T5 encoder has no gated feed-forward (encoder.block.0.layer.1.DenseReluDense.wi_0.weight); it is an "
            "original T5, not umT5-XXL with gated GELU. Use the umT5-XXL encoder Wan was trained with."
        )
    vocab, d_model = shape["shared.weight"]
    num_buckets, num_heads = shape[attn.format(0) + "relative_attention_bias.weight"]
    inner = shape[attn.format(0) + "q.weight"][0]
    if inner % num_heads:
        raise CheckpointError(
            f"Attention width {inner} is not divisible by the {num_heads} heads of the relative-position table; the "
            "file is inconsistent (not a umT5 encoder)."
        )
    config = UMT5Config(
        vocab_size=vocab,
        d_model=d_model,
        d_kv=inner // num_heads,
        d_ff=shape[wi0][0],
        num_layers=len(layers),
        num_heads=num_heads,
        relative_attention_num_buckets=num_buckets,
        relative_attention_max_distance=UMT5_MAX_DISTANCE,
        dropout_rate=0.0,
        layer_norm_epsilon=UMT5_EPS,
        feed_forward_proj="gated-gelu",
        is_encoder_decoder=False,
        use_cache=False,
        pad_token_id=0,
        eos_token_id=1,
    )
    config._attn_implementation = "eager"  # explicit scores + bias + softmax, as the reference
    return config


def check_t5_keys(
    state_dict: Mapping[str, torch.Tensor], model: "UMT5EncoderModel", layout: str, unexpected: Sequence[str] = ()
) -> None:
    """Raise CheckpointError naming missing, unexpected and mis-shaped keys (in the file's naming, first 10 each)."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    name = hf_to_reference_key if layout == "reference" else (lambda k: k)
    missing = sorted({name(k) for k in set(expected) - set(state_dict)})
    extra = sorted({name(k) for k in set(state_dict) - set(expected)} | set(unexpected))
    shapes = sorted(
        f"{name(k)}: file {list(state_dict[k].shape)} vs model {list(expected[k])}"
        for k in set(expected) & set(state_dict) if tuple(state_dict[k].shape) != expected[k]
    )
    problems = [
        f"{len(items)} {label}: {', '.join(items[:10])}{' ...' if len(items) > 10 else ''}"
        for label, items in (("missing", missing), ("unexpected", extra), ("wrong shape", shapes)) if items
    ]
    if problems:
        cfg = model.config
        raise CheckpointError(
            f"umT5 encoder keys do not match the architecture read off the file (d_model {cfg.d_model}, "
            f"{cfg.num_layers} layers, {cfg.num_heads} heads, d_ff {cfg.d_ff}): " + "; ".join(problems)
            + ". The file is truncated, mixes two models, or is not a umT5 encoder; download it again."
        )


# --------------------------------------------------------------------------------------------------- loading
def _resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    resolved = resolve_weight_dtype(dtype)
    if resolved is None:
        return torch.bfloat16
    if resolved.itemsize == 1:
        raise InvalidInputError(
            f"The text encoder computes in fp32, bf16 or fp16, not {resolved}; float8 files are dequantised on "
            "load, so pass dtype=bf16 (the default) for them."
        )
    return resolved


def load_umt5_encoder(
    weights_path: str | Path, *, device: str | torch.device = "cpu", dtype: str | torch.dtype = torch.bfloat16
) -> "UMT5EncoderModel":
    """Read any supported umT5 weight file (see module doc) into an eval, no-grad ``UMT5EncoderModel``.

    The model is built on the meta device and takes the file's tensors (cast to ``dtype``) without a second copy;
    the embedding is shared between ``shared`` and ``encoder.embed_tokens``.
    """
    from transformers import UMT5EncoderModel

    path = Path(weights_path)
    dtype = _resolve_dtype(dtype)
    raw = read_checkpoint(path)
    state_dict, layout, unexpected = to_hf_state_dict(raw.state_dict, dtype)
    del raw
    config = umt5_config_from_state_dict(state_dict)
    with torch.device("meta"):
        model = UMT5EncoderModel(config)
    check_t5_keys(state_dict, model, layout, unexpected)
    model.load_state_dict(state_dict, strict=True, assign=True)
    model.set_input_embeddings(model.shared)  # one Parameter object: moved / freed once
    del state_dict
    model = model.to(device).eval().requires_grad_(False)
    logger.info(
        "Loaded umT5 encoder (%s layout, d_model %d, %d layers, %d heads, vocab %d, %.0fM params) from %s as %s",
        layout, config.d_model, config.num_layers, config.num_heads, config.vocab_size,
        sum(p.numel() for p in model.parameters()) / 1e6, path.name, dtype,
    )
    return model


def _is_tokenizer_dir(folder: Path) -> bool:
    return folder.is_dir() and any((folder / name).exists() for name in TOKENIZER_FILES)


def tokenizer_candidates(weights_path: str | Path) -> list[Path]:
    """Folders searched for the tokenizer when none is given: the weights folder itself (a transformers model
    folder), then ``google/umt5-xxl``, ``umt5-xxl`` and ``tokenizer`` next to the weights file."""
    weights = Path(weights_path)
    base = weights if weights.is_dir() else weights.parent
    return ([weights] if weights.is_dir() else []) + [base / sub for sub in TOKENIZER_SUBDIRS]


def load_tokenizer(
    tokenizer_path: str | Path | None = None, *, weights_path: str | Path | None = None, allow_download: bool = False
) -> "PreTrainedTokenizerBase":
    """The umT5 tokenizer from a local folder, the local Hugging Face cache, or (only if allowed) the hub.

    ``tokenizer_path`` None searches :func:`tokenizer_candidates` of ``weights_path`` first, then the hub id
    ``google/umt5-xxl`` (cache only unless ``allow_download``; a download is saved into the first candidate folder
    for the next offline run). A ``tokenizer_path`` that is not a folder is taken as a hub id.
    """
    from transformers import AutoTokenizer

    local: list[Path] = []
    hub_id = UMT5_TOKENIZER_REPO
    if tokenizer_path is not None:
        given = Path(tokenizer_path)
        if given.is_dir():
            local = [given]
        elif given.exists() or re.fullmatch(r"[\w.-]+/[\w.-]+", str(tokenizer_path)) is None:
            raise CheckpointError(
                f"The tokenizer path {given} is not a folder. Pass the folder holding the umT5 tokenizer files "
                f"({', '.join(TOKENIZER_FILES)}), e.g. a copy of https://huggingface.co/{UMT5_TOKENIZER_REPO}."
            )
        else:
            hub_id = str(tokenizer_path)
    elif weights_path is not None:
        local = tokenizer_candidates(weights_path)
    for folder in local:
        if _is_tokenizer_dir(folder):
            try:
                tokenizer = AutoTokenizer.from_pretrained(str(folder))
            except Exception as err:
                raise CheckpointError(
                    f"Cannot load the tokenizer in {folder} ({type(err).__name__}: {str(err)[:300]}). Replace its "
                    f"files with those of https://huggingface.co/{UMT5_TOKENIZER_REPO}."
                ) from None
            logger.info("Loaded tokenizer from %s", folder)
            return _checked_tokenizer(tokenizer, str(folder))
    if tokenizer_path is not None and local:
        raise CheckpointError(
            f"{local[0]} holds no tokenizer files ({', '.join(TOKENIZER_FILES)}). Copy the tokenizer of "
            f"https://huggingface.co/{UMT5_TOKENIZER_REPO} there, or allow the download (--download)."
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(hub_id, local_files_only=not allow_download)
    except Exception as err:
        where = ", ".join(str(p) for p in local) or "(no folder given)"
        target = local[1] if len(local) > 1 and local[0] == Path(weights_path or "") else (local[0] if local else None)
        put = f"Put them in {target}" if target else "Pass tokenizer_path= a folder holding them"
        reason = "it is not in the local Hugging Face cache" if not allow_download else (
            f"the download failed ({type(err).__name__}: {str(err)[:200]})"
        )
        raise CheckpointError(
            f"No umT5 tokenizer found: looked in {where} and for {hub_id}, but {reason}. The tokenizer files "
            f"({', '.join(TOKENIZER_FILES)}) come from https://huggingface.co/{hub_id}. {put} (or pass "
            "--tokenizer / tokenizer_path=FOLDER), or allow the download (--download)."
        ) from None
    logger.info("Loaded tokenizer %s from the Hugging Face %s", hub_id, "hub" if allow_download else "cache")
    if allow_download and local:
        target = next((p for p in local if not p.exists() or p.is_dir() and not any(p.iterdir())), None)
        if target is not None:
            try:
                tokenizer.save_pretrained(str(target))
                logger.info("Saved the tokenizer to %s for offline use", target)
            except OSError as err:
                logger.warning("Could not save the tokenizer to %s: %s", target, err)
    return _checked_tokenizer(tokenizer, hub_id)


def _checked_tokenizer(tokenizer: "PreTrainedTokenizerBase", source: str) -> "PreTrainedTokenizerBase":
    if tokenizer.pad_token_id is None:
        raise CheckpointError(
            f"The tokenizer from {source} has no padding token; umT5's pads with <pad> (id 0). Use the tokenizer "
            f"of https://huggingface.co/{UMT5_TOKENIZER_REPO}."
        )
    return tokenizer


# --------------------------------------------------------------------------------------------------- prompts
def clean_prompt(text: str) -> str:
    """Wan's prompt cleaning: fix mojibake (ftfy), unescape HTML twice, strip, collapse whitespace to one space."""
    import ftfy

    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


class TextEncoder:
    """umT5 encoder + tokenizer with Wan's wrapper semantics.

    :meth:`encode` maps prompts to ``[B, text_len, dim]`` float32 CPU embeddings in which the rows at and beyond
    each prompt's token count (``</s>`` included) are zero, exactly as ``WanTextEncoder`` returns them.
    """

    def __init__(
        self,
        model: "UMT5EncoderModel",
        tokenizer: "PreTrainedTokenizerBase | None" = None,
        text_len: int = DEFAULT_TEXT_LEN,
        source_path: Path | None = None,
    ) -> None:
        if text_len < 1:
            raise InvalidInputError(f"text_len must be >= 1, got {text_len}.")
        self.model: UMT5EncoderModel | None = model
        self.tokenizer = tokenizer
        self.text_len = int(text_len)
        self.source_path = source_path
        config = model.config
        self.dim: int = config.d_model
        self.vocab_size: int = config.vocab_size

    # ---- state
    @property
    def released(self) -> bool:
        return self.model is None

    def _model(self) -> "UMT5EncoderModel":
        if self.model is None:
            raise CausalForcingError(
                "The text encoder's weights were released; load it again with load_text_encoder() to encode more "
                "prompts (or keep the embeddings you already have)."
            )
        return self.model

    @property
    def device(self) -> torch.device:
        return self._model().shared.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self._model().shared.weight.dtype

    def to(self, device: str | torch.device) -> "TextEncoder":
        """Move the weights to ``device`` (in place); returns self."""
        self.model = self._model().to(device)
        return self

    def release(self) -> None:
        """Free the weights (the tokenizer stays); later encode calls raise. Safe to call twice."""
        if self.model is None:
            return
        on_cuda = self.model.shared.weight.is_cuda
        self.model = None
        gc.collect()
        if on_cuda:
            torch.cuda.empty_cache()
        logger.info("Released the umT5 text encoder weights")

    # ---- encoding
    def tokenize(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Cleaned prompts -> (ids [B, text_len] int64, mask [B, text_len] int64), padded with the pad id, ``</s>``
        appended, truncated to ``text_len``."""
        if self.tokenizer is None:
            raise CausalForcingError(
                "This TextEncoder has no tokenizer; build it with load_text_encoder() or pass token ids to encode_ids()."
            )
        if isinstance(prompts, str) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise InvalidInputError(f"encode() takes a non-empty list of strings, got {type(prompts).__name__}: {prompts!r:.80}.")
        batch = self.tokenizer(
            [clean_prompt(p) for p in prompts], padding="max_length", truncation=True, max_length=self.text_len,
            add_special_tokens=True, return_attention_mask=True, return_tensors="pt",
        )
        return batch["input_ids"].long(), batch["attention_mask"].long()

    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        """Prompts -> embeddings [B, text_len, dim] float32 on CPU, rows past each prompt's tokens zero."""
        ids, mask = self.tokenize(prompts)
        lengths = mask.sum(dim=1)
        for prompt, n in zip(prompts, lengths.tolist()):
            if n >= self.text_len and self.tokenizer is not None and len(self.tokenizer(clean_prompt(prompt))["input_ids"]) > self.text_len:
                logger.warning("Prompt truncated to %d tokens: %.60s...", self.text_len, prompt)
        return self.encode_ids(ids, mask)

    @torch.no_grad()
    def encode_ids(self, ids: torch.Tensor, mask: torch.Tensor, *, zero_padding: bool = True) -> torch.Tensor:
        """Token ids [B, L] and attention mask [B, L] (1 real, 0 padding) -> encoder output [B, L, dim] float32 CPU.

        With ``zero_padding`` (Wan's wrapper) rows at and beyond ``mask[b].sum()`` are set to 0; without it the raw
        encoder output is returned (padding rows are then not zero).
        """
        model = self._model()
        if ids.ndim != 2 or mask.shape != ids.shape:
            raise InvalidInputError(
                f"ids and mask must both be [batch, tokens]; got ids {list(ids.shape)} and mask {list(mask.shape)}."
            )
        if ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise InvalidInputError(f"Token ids must be integers, got {ids.dtype}.")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise InvalidInputError(
                f"Token ids must lie in [0, {self.vocab_size}) for this encoder; got range [{int(ids.min())}, "
                f"{int(ids.max())}]. The tokenizer does not belong to these weights."
            )
        device = self.device
        out = model(input_ids=ids.long().to(device), attention_mask=mask.long().to(device)).last_hidden_state
        out = out.float().cpu()
        if zero_padding:
            lengths = mask.gt(0).sum(dim=1)
            keep = torch.arange(ids.shape[1])[None, :] < lengths[:, None]
            out = out * keep[..., None]
        return out


def load_text_encoder(
    weights_path: str | Path,
    tokenizer_path: str | Path | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = torch.bfloat16,
    text_len: int = DEFAULT_TEXT_LEN,
    allow_download: bool = False,
) -> TextEncoder:
    """Tokenizer first (cheap, fails early when missing), then the umT5 weights of any supported layout.

    ``tokenizer_path`` None looks for ``google/umt5-xxl`` (or ``umt5-xxl``, ``tokenizer``) next to the weights, then
    the Hugging Face cache, then, only with ``allow_download``, the hub.
    """
    tokenizer = load_tokenizer(tokenizer_path, weights_path=weights_path, allow_download=allow_download)
    model = load_umt5_encoder(weights_path, device=device, dtype=dtype)
    return TextEncoder(model, tokenizer, text_len=text_len, source_path=Path(weights_path))
