"""A tiny umT5 encoder and tokenizer written to disk, for end-to-end tests of loaders and the command line."""

from __future__ import annotations

from pathlib import Path

import torch

from causal_forcing_core.toy.components import write_word_level_tokenizer

WORDS = ("a cat dog walks runs jumps red blue square circle moves left right up down at night the in snow "
         "surfing skiing , .").split()


def write_tiny_tokenizer(folder: Path) -> Path:
    """A word-level tokenizer (pad 0, eos 1, unk 2) that AutoTokenizer loads from ``folder``."""
    return write_word_level_tokenizer(folder, list(WORDS), normalise=False)


def tiny_reference_t5(seed: int = 0, vocab: int = 384, dim: int = 32, heads: int = 4, layers: int = 2,
                      ffn: int = 64, buckets: int = 32) -> dict[str, torch.Tensor]:
    """Random umT5 encoder weights in the reference (models_t5_umt5-xxl-enc) key layout."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    sd = {"token_embedding.weight": rnd(vocab, dim), "norm.weight": 1 + rnd(dim, scale=0.1)}
    for i in range(layers):
        p = f"blocks.{i}."
        sd[p + "norm1.weight"] = 1 + rnd(dim, scale=0.1)
        sd[p + "norm2.weight"] = 1 + rnd(dim, scale=0.1)
        for name in "qkvo":
            sd[p + f"attn.{name}.weight"] = rnd(dim, dim, scale=dim**-0.5)
        sd[p + "ffn.gate.0.weight"] = rnd(ffn, dim, scale=dim**-0.5)
        sd[p + "ffn.fc1.weight"] = rnd(ffn, dim, scale=dim**-0.5)
        sd[p + "ffn.fc2.weight"] = rnd(dim, ffn, scale=ffn**-0.5)
        sd[p + "pos_embedding.embedding.weight"] = rnd(buckets, heads, scale=0.5)
    return sd


def write_tiny_text_encoder(folder: Path) -> tuple[Path, Path]:
    """Tiny reference-layout weights (.pth) and a tokenizer folder; output width 32 = the tiny DiT's text_dim."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / "tiny_umt5.pth"
    torch.save(tiny_reference_t5(), weights)
    return weights, write_tiny_tokenizer(folder / "tokenizer")


def tiny_wide_t5(width: int = 4096, seed: int = 0, vocab: int = 384, heads: int = 2, head_dim: int = 16,
                 ffn: int = 32, layers: int = 1) -> dict[str, torch.Tensor]:
    """Random umT5 encoder weights in the transformers layout, as wide as the real one (4096) but with narrow
    attention and FFN: its embeddings fit a DiT whose text width is Wan's while the file stays small (~10 MB)."""
    from transformers import UMT5Config, UMT5EncoderModel

    config = UMT5Config(
        vocab_size=vocab, d_model=width, d_kv=head_dim, d_ff=ffn, num_layers=layers, num_decoder_layers=0,
        num_heads=heads, relative_attention_num_buckets=32, feed_forward_proj="gated-gelu", is_encoder_decoder=False,
        use_cache=False, tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    state = UMT5EncoderModel(config).state_dict()
    state.pop("encoder.embed_tokens.weight", None)  # tied to shared.weight
    return {k: v.contiguous() for k, v in state.items()}
