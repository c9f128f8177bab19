"""The toy model's components, built from the same classes as the real ones.

- a word-level tokenizer over the toy vocabulary, saved in the Hugging Face format the real umT5 tokenizer uses;
- a tiny umT5 encoder (frozen, seeded random weights in the reference key layout; :mod:`..text_encoder` loads it);
- the architectures of the tiny Wan VAE and the tiny causal DiT (:class:`..vae.VAEConfig`, :class:`..config.DiTConfig`).

Nothing here is trained: the VAE and the DiT are trained by :mod:`causal_forcing_core.training`; the text encoder
stays frozen at its seed, as the real umT5 stays frozen in Causal Forcing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import DiTConfig
from ..vae import VAEConfig

#: tokens of a toy prompt, EOS included ("a red square moves left quickly" is 7)
TOY_TEXT_LEN = 16


@dataclass(frozen=True)
class TinyUMT5Config:
    """Architecture of the tiny umT5 encoder (the real one: vocab 256384, dim 4096, 24 layers, 64 heads)."""

    dim: int = 64
    heads: int = 4
    layers: int = 2
    ffn: int = 128
    buckets: int = 32
    seed: int = 0


TOY_UMT5 = TinyUMT5Config()
#: 64x64 video -> 8x8 latents; 16 latent channels like the real Wan 2.1 VAE
TOY_VAE = VAEConfig(dim=8)
#: 16 tokens per latent frame at 64x64; 4 heads of 32
TOY_DIT = DiTConfig(dim=128, ffn_dim=384, num_heads=4, num_layers=4, text_dim=TOY_UMT5.dim, text_len=TOY_TEXT_LEN)
#: 8x8 latents for a toy DiT smoke run (micro configs in tests)
MICRO_DIT = DiTConfig(dim=32, ffn_dim=64, num_heads=2, num_layers=1, text_dim=TOY_UMT5.dim, text_len=TOY_TEXT_LEN)


#: the tokenizer's special tokens, ids 0, 1, 2
SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")


def toy_vocabulary() -> list[str]:
    """Special tokens, then every word of a toy caption, in a fixed order (ids are stable across releases)."""
    from .world import VOCABULARY

    return [*SPECIAL_TOKENS, *dict.fromkeys(VOCABULARY)]


def write_word_level_tokenizer(folder: str | Path, words: list[str], *, normalise: bool = True) -> Path:
    """A word-level tokenizer over ``words`` (pad 0, EOS 1, unknown 2, then the words in order) that
    ``transformers.AutoTokenizer`` loads from ``folder``; with ``normalise`` text is lower-cased and punctuation
    split off. Returns the folder."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate([*SPECIAL_TOKENS, *dict.fromkeys(words)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    if normalise:
        tok.normalizer = normalizers.Lowercase()
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    else:
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(folder))
    # transformers 5 records its own class name, which transformers 4 (ComfyUI's pin) cannot load; both read this
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=2))
    return folder


def write_toy_tokenizer(folder: str | Path) -> Path:
    """The toy model's tokenizer (:func:`write_word_level_tokenizer` over :func:`toy_vocabulary`, normalised)."""
    from .world import VOCABULARY

    return write_word_level_tokenizer(folder, list(VOCABULARY))


def tiny_umt5_weights(config: TinyUMT5Config = TOY_UMT5, vocab_size: int | None = None) -> dict[str, torch.Tensor]:
    """Seeded random umT5 encoder weights in the reference (``models_t5_umt5-xxl-enc``) key layout.

    Scales follow T5's initialisation (unit-variance token embeddings, 1/sqrt(fan-in) projections), so the frozen
    encoder gives distinct, well-conditioned embeddings for different toy prompts.
    """
    vocab = vocab_size or len(toy_vocabulary())
    g = torch.Generator().manual_seed(config.seed)

    def rnd(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    dim, ffn = config.dim, config.ffn
    sd = {"token_embedding.weight": rnd(vocab, dim), "norm.weight": torch.ones(dim)}
    for i in range(config.layers):
        p = f"blocks.{i}."
        sd[p + "norm1.weight"] = torch.ones(dim)
        sd[p + "norm2.weight"] = torch.ones(dim)
        for name in "qkvo":
            sd[p + f"attn.{name}.weight"] = rnd(dim, dim, scale=dim**-0.5)
        sd[p + "ffn.gate.0.weight"] = rnd(ffn, dim, scale=dim**-0.5)
        sd[p + "ffn.fc1.weight"] = rnd(ffn, dim, scale=dim**-0.5)
        sd[p + "ffn.fc2.weight"] = rnd(dim, ffn, scale=ffn**-0.5)
        sd[p + "pos_embedding.embedding.weight"] = rnd(config.buckets, config.heads, scale=0.5)
    return sd
