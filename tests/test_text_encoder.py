"""umT5 text encoder: parity with the reference fixtures, every weight layout, tokenizer, cleaning, errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from causal_forcing_core.errors import CheckpointError, InvalidInputError
from causal_forcing_core.text_encoder import (
    TextEncoder,
    build_encoder,
    clean_prompt,
    load_text_encoder,
    read_text_encoder_weights,
)
from ci_env import require_parity_dir
from parity_cases import fixture_dir
from tiny_text import tiny_reference_t5, write_tiny_text_encoder, write_tiny_tokenizer

FOLDER = fixture_dir()


def _t5_cases() -> list:
    if not FOLDER.is_dir():
        return []
    return [p for p in sorted(FOLDER.glob("*.json")) if "t5_config" in json.loads(p.read_text())]


def test_t5_fixture_cases_exist() -> None:
    require_parity_dir(FOLDER)
    assert _t5_cases(), f"{FOLDER} has no text-encoder case"


@pytest.mark.parametrize("case", _t5_cases(), ids=lambda p: p.stem)
def test_t5_parity(case) -> None:
    t = load_file(str(case.with_suffix(".safetensors")))
    candidates = []
    for path in sorted(FOLDER.glob("t5_*.safetensors")):
        try:
            candidates.append(build_encoder(read_text_encoder_weights(path), torch.float32, "cpu"))
        except CheckpointError:
            continue  # the case tensors themselves
    assert candidates, "no umT5 weights in the fixture folder"
    vocab = int(t["ids"].max()) + 1
    model = next(m for m in candidates if m.config.vocab_size >= vocab)
    encoder = TextEncoder(model, tokenizer=None, text_len=t["ids"].shape[1])
    with torch.no_grad():
        raw = model(input_ids=t["ids"], attention_mask=t["mask"]).last_hidden_state
    torch.testing.assert_close(raw, t["encoder_out"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(encoder.encode_ids(t["ids"], t["mask"]), t["prompt_embeds"], atol=1e-5, rtol=1e-5)


def _hf_layout(sd_ref: dict) -> dict:
    from causal_forcing_core.text_encoder import _convert_reference

    return _convert_reference(sd_ref)


@pytest.mark.parametrize("layout", ["reference_pth", "reference_safetensors", "hf_fp16", "hf_scaled_fp8"])
def test_every_layout_encodes_the_same(tmp_path, layout) -> None:
    ref = tiny_reference_t5()
    tokenizer = write_tiny_tokenizer(tmp_path / "tok")
    baseline = load_text_encoder(_write(tmp_path, "base", "reference_pth", ref), tokenizer, dtype=torch.float32,
                                 text_len=16).encode(["a cat walks", "a dog runs at night"])
    path = _write(tmp_path, "w", layout, ref)
    enc = load_text_encoder(path, tokenizer, dtype=torch.float32, text_len=16)
    out = enc.encode(["a cat walks", "a dog runs at night"])
    assert out.shape == (2, 16, 32) and out.dtype == torch.float32
    assert torch.all(out[0, 4:] == 0) and torch.all(out[1, 6:] == 0) and out[1, 5].abs().sum() > 0
    tol = {"reference_pth": 0, "reference_safetensors": 0, "hf_fp16": 5e-2, "hf_scaled_fp8": 0.5}[layout]
    assert (out - baseline).abs().max() <= tol + 1e-6


def _write(tmp_path, name, layout, ref):
    if layout == "reference_pth":
        path = tmp_path / f"{name}.pth"
        torch.save(ref, path)
        return path
    path = tmp_path / f"{name}.safetensors"
    if layout == "reference_safetensors":
        save_file(ref, str(path))
    elif layout == "hf_fp16":
        save_file({k: v.half() for k, v in _hf_layout(ref).items()}, str(path))
    else:
        sd = {}
        for k, v in _hf_layout(ref).items():
            if v.dim() == 2 and ".layer." in k:
                scale = v.abs().max() / 448
                sd[k] = (v / scale).to(torch.float8_e4m3fn)
                sd[k[: -len("weight")] + "scale_weight"] = scale.reshape(1)
            else:
                sd[k] = v.half()
        sd["scaled_fp8"] = torch.zeros(0, dtype=torch.float8_e4m3fn)
        save_file(sd, str(path))
    return path


def test_release_frees_the_weights(tmp_path) -> None:
    weights, tok = write_tiny_text_encoder(tmp_path)
    enc = load_text_encoder(weights, tok, dtype=torch.float32, text_len=8)
    enc.release()
    with pytest.raises(CheckpointError, match="released"):
        enc.encode(["a cat"])


def test_cleaning_like_the_reference() -> None:
    assert clean_prompt("  a   cat &amp;amp; a\tdog\n") == "a cat & a dog"
    assert clean_prompt("cafÃ©") == "café"


def test_missing_tokenizer_says_where_to_put_it(tmp_path) -> None:
    weights, _ = write_tiny_text_encoder(tmp_path)
    with pytest.raises(CheckpointError, match="google/umt5-xxl.*--download"):
        load_text_encoder(weights, tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="--download"):
        load_text_encoder(weights, None)


def test_a_dit_is_not_a_text_encoder(tmp_path) -> None:
    path = tmp_path / "dit.safetensors"
    save_file({"patch_embedding.weight": torch.zeros(4, 16, 1, 2, 2)}, str(path))
    with pytest.raises(CheckpointError, match="not a umT5 text encoder"):
        read_text_encoder_weights(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_text_encoder_weights(tmp_path / "absent.pth")


def test_a_wrong_shaped_tensor_is_named(tmp_path) -> None:
    sd = tiny_reference_t5()
    sd["blocks.1.attn.k.weight"] = sd["blocks.1.attn.k.weight"][:, :16].clone()
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=r"^umT5 weights of bad\.pth do not match the encoder \(d_model 32, 2 "
                                              r"layers, 4 heads, read from their shapes\): 1 wrong shape: "
                                              r"encoder\.block\.1\.layer\.0\.SelfAttention\.k\.weight: file \[32, 16\] "
                                              r"vs model \[32, 32\]\.$"):
        load_text_encoder(path, write_tiny_tokenizer(tmp_path / "tok"), dtype=torch.float32)


def test_nan_weights_are_refused_by_name(tmp_path) -> None:
    sd = tiny_reference_t5()
    sd["norm.weight"][0] = float("inf")
    path = tmp_path / "inf.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=r"^The umT5 text encoder inf\.pth has NaN or infinite values in 1 "
                                              r"tensors: encoder\.final_layer_norm\.weight\."):
        load_text_encoder(path, write_tiny_tokenizer(tmp_path / "tok"), dtype=torch.float32)


def test_an_empty_tokenizer_folder_says_what_belongs_there(tmp_path) -> None:
    from causal_forcing_core.text_encoder import load_tokenizer

    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "README").write_text("not a tokenizer")
    with pytest.raises(CheckpointError, match=r"^The umT5 tokenizer folder .*tok has no tokenizer files \(found: "
                                              r"README\)\. Put the google/umt5-xxl tokenizer files .* there, or pass "
                                              r"--download\.$"):
        load_tokenizer(tmp_path / "tok")


def test_a_prompt_longer_than_text_len_is_refused_not_cut(tmp_path) -> None:
    weights, tok = write_tiny_text_encoder(tmp_path)
    enc = load_text_encoder(weights, tok, dtype=torch.float32, text_len=16)
    long = " ".join(["a red cat walks"] * 4)  # 16 words + EOS = 17 tokens
    fits = " ".join(["a red cat walks"] * 3) + " left up down"  # 15 words + EOS = 16 tokens
    enc.check_prompts(["a cat", fits])
    assert enc.encode([fits]).shape == (1, 16, 32)
    message = (r"^The prompt 'a red cat walks a red cat walks a red ca\.\.\.' has 17 tokens; this model reads at most "
               r"16\. Shorten it\.$")  # the first 40 characters
    for call in (enc.check_prompts, enc.tokenize, enc.encode):
        with pytest.raises(InvalidInputError, match=message):
            call(["a cat", long])
    tokenizer_only = TextEncoder(None, enc.tokenizer, text_len=16)  # no model needed to check
    with pytest.raises(InvalidInputError, match="has 17 tokens"):
        tokenizer_only.check_prompts([long])
