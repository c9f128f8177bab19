"""Checkpoint loading: every layout, dtypes, strict keys, unsafe pickles, the converter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from causal_forcing_core.checkpoint_convert import convert_release_to_safetensors
from causal_forcing_core.checkpoints import (
    download_from_hub,
    estimate_dit_bytes,
    load_dit,
    parameter_count,
    read_checkpoint,
)
from causal_forcing_core.config import TINY, WAN_1_3B
from causal_forcing_core.errors import CheckpointError, UnsafeCheckpointError
from parity_cases import fixture_dir
from tiny import tiny_model, tiny_prompt, tiny_stream

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = fixture_dir()
needs_fixtures = pytest.mark.skipif(
    not FIXTURES.is_dir() and not os.environ.get("CI"), reason="no parity fixtures here"
)


@pytest.fixture(scope="module")
def reference_sd() -> dict[str, torch.Tensor]:
    return tiny_model(seed=11).state_dict()


def _same_weights(model, sd) -> None:
    for k, v in model.state_dict().items():
        assert torch.equal(v.float(), sd[k].float()), k


def _write_safetensors(path: Path, sd, prefix: str = "", metadata: dict | None = None) -> Path:
    save_file({prefix + k: v.contiguous() for k, v in sd.items()}, str(path), metadata=metadata)
    return path


@pytest.mark.parametrize("prefix", ["", "model.diffusion_model.", "model."])
def test_single_safetensors_with_any_prefix(tmp_path, reference_sd, prefix) -> None:
    path = _write_safetensors(tmp_path / "w.safetensors", reference_sd, prefix,
                              metadata={"dit_config": json.dumps(TINY.to_dict())})
    loaded = load_dit(path)
    assert loaded.config == TINY
    assert loaded.model.compute_dtype == torch.float32
    _same_weights(loaded.model, reference_sd)


def test_num_heads_is_needed_without_config(tmp_path, reference_sd) -> None:
    path = _write_safetensors(tmp_path / "w.safetensors", reference_sd)
    with pytest.raises(CheckpointError, match="number of attention heads"):
        load_dit(path)
    assert load_dit(path, num_heads=2).config.num_heads == 2


@pytest.mark.parametrize("sharded", [False, True])
def test_diffusers_folder(tmp_path, reference_sd, sharded) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "WanModel", "model_type": "t2v", **TINY.to_dict()}))
    if sharded:
        keys = sorted(reference_sd)
        half = len(keys) // 2
        parts = {"diffusion_pytorch_model-00001-of-00002.safetensors": keys[:half],
                 "diffusion_pytorch_model-00002-of-00002.safetensors": keys[half:]}
        for name, ks in parts.items():
            _write_safetensors(tmp_path / name, {k: reference_sd[k] for k in ks})
        weight_map = {k: name for name, ks in parts.items() for k in ks}
        (tmp_path / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    else:
        _write_safetensors(tmp_path / "diffusion_pytorch_model.safetensors", reference_sd)
    loaded = load_dit(tmp_path)
    assert loaded.config == TINY
    _same_weights(loaded.model, reference_sd)


@pytest.mark.parametrize("dtype", ["bf16", "fp16", "fp8_e4m3fn"])
def test_storage_dtypes(tmp_path, reference_sd, dtype) -> None:
    path = _write_safetensors(tmp_path / "w.safetensors", reference_sd, metadata={"dit_config": json.dumps(TINY.to_dict())})
    loaded = load_dit(path, weight_dtype=dtype)
    stored = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp8_e4m3fn": torch.float8_e4m3fn}[dtype]
    assert loaded.model.blocks[0].self_attn.q.weight.dtype == stored
    assert loaded.model.compute_dtype == (torch.bfloat16 if dtype == "fp8_e4m3fn" else stored)
    # it runs, and stays close to the float32 model
    ref = tiny_stream(load_dit(path).model, "framewise-1step").generate(1).latents
    low = tiny_stream(loaded.model, "framewise-1step").generate(1).latents
    assert low.dtype == loaded.model.compute_dtype and torch.isfinite(low.float()).all()
    assert (low.float() - ref).abs().mean() < 0.5


def test_file_stored_in_fp8_stays_fp8(tmp_path, reference_sd) -> None:
    fp8 = {k: v.to(torch.float8_e4m3fn) for k, v in reference_sd.items()}
    path = _write_safetensors(tmp_path / "w8.safetensors", fp8, metadata={"dit_config": json.dumps(TINY.to_dict())})
    loaded = load_dit(path)
    assert loaded.model.head.head.weight.dtype == torch.float8_e4m3fn
    assert loaded.model.compute_dtype == torch.bfloat16


@needs_fixtures
@pytest.mark.parametrize("prefer_ema,bias_shift", [(None, 0.25), (True, 0.25), (False, 0.0)])
def test_release_pt_generator_and_ema(prefer_ema, bias_shift) -> None:
    reference = {k.removeprefix("model."): v for k, v in load_file(str(FIXTURES / "dit_tiny.safetensors")).items()}
    loaded = load_dit(FIXTURES / "dit_tiny_release.pt", prefer_ema=prefer_ema, num_heads=2, weight_dtype="fp32")
    assert loaded.metadata["release_key"] == ("generator" if prefer_ema is False else "generator_ema")
    # the EMA copy is stored in bf16, so +0.25 is rounded to bf16 spacing
    assert torch.allclose(loaded.model.head.head.bias, reference["head.head.bias"] + bias_shift, atol=2e-3, rtol=0)
    assert torch.equal(loaded.model.blocks[1].ffn[0].weight, reference["blocks.1.ffn.0.weight"])


@needs_fixtures
def test_converter_round_trip_and_cli(tmp_path) -> None:
    dst = convert_release_to_safetensors(
        FIXTURES / "dit_tiny_release.pt", tmp_path / "student.safetensors", variant="framewise-2step",
        prefer_ema=False, num_heads=2,
    )
    loaded = load_dit(dst, weight_dtype="fp32")
    assert loaded.sampler is not None and loaded.sampler.name == "framewise-2step"
    assert loaded.metadata["frames_per_block"] == 1 and loaded.metadata["first_chunk_steps"] == [1000, 750, 500, 250]
    assert loaded.metadata["source"] == "dit_tiny_release.pt"
    reference = {k.removeprefix("model."): v for k, v in load_file(str(FIXTURES / "dit_tiny.safetensors")).items()}
    _same_weights(loaded.model, reference)
    out = subprocess.run(
        [sys.executable, "-m", "causal_forcing_core", "convert", str(FIXTURES / "dit_tiny_release.pt"),
         str(tmp_path / "cli.safetensors"), "--variant", "chunkwise-4step", "--num-heads", "2", "--ema"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert load_dit(tmp_path / "cli.safetensors").sampler.frames_per_block == 3


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickle_that_runs_code_is_refused(tmp_path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"generator": _Evil()}, path)
    with pytest.raises(UnsafeCheckpointError, match="wants to run code"):
        load_dit(path)


def test_a_vae_is_not_a_dit(tmp_path) -> None:
    path = _write_safetensors(tmp_path / "vae.safetensors",
                              {"encoder.conv1.weight": torch.zeros(2, 3, 3, 3, 3), "decoder.conv1.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match=r"not a Wan DiT.*looks like a VAE"):
        load_dit(path)


def test_missing_and_unexpected_keys_are_named(tmp_path, reference_sd) -> None:
    sd = dict(reference_sd)
    del sd["blocks.1.norm3.bias"]
    sd["blocks.1.extra.weight"] = torch.zeros(3)
    sd["head.head.bias"] = torch.zeros(5)
    path = _write_safetensors(tmp_path / "w.safetensors", sd, metadata={"dit_config": json.dumps(TINY.to_dict())})
    with pytest.raises(CheckpointError) as err:
        load_dit(path)
    msg = str(err.value)
    assert "1 missing: blocks.1.norm3.bias" in msg
    assert "1 unexpected: blocks.1.extra.weight" in msg
    assert "head.head.bias: file [5] vs model [64]" in msg


def test_not_a_checkpoint_at_all(tmp_path) -> None:
    bad = tmp_path / "junk.safetensors"
    bad.write_bytes(b"not really")
    with pytest.raises(CheckpointError, match="Cannot read"):
        read_checkpoint(bad)
    with pytest.raises(CheckpointError, match="No checkpoint"):
        read_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="Unsupported checkpoint"):
        read_checkpoint(bad.with_suffix(".gguf").touch() or bad.with_suffix(".gguf"))


def test_sizes_of_the_real_model() -> None:
    assert parameter_count(WAN_1_3B) == 1_418_996_800
    assert estimate_dit_bytes(WAN_1_3B, torch.bfloat16) == 2 * 1_418_996_800


def test_download_error_says_where_to_put_the_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(CheckpointError, match="by hand"):
        download_from_hub("zhuhz22/Causal-Forcing", "chunkwise/causal_forcing.pt", tmp_path)


def test_loaded_model_generates(tmp_path, reference_sd) -> None:
    path = _write_safetensors(tmp_path / "w.safetensors", reference_sd, metadata={
        "dit_config": json.dumps(TINY.to_dict()), "variant": "chunkwise-4step"})
    loaded = load_dit(path)
    stream = tiny_stream(loaded.model, loaded.sampler.name, prompt=tiny_prompt(1)).generate(1)
    assert stream.latents.shape == (1, 3, 16, 8, 8)
