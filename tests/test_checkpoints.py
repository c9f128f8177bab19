"""Checkpoint loading: every layout, dtypes, strict keys, unsafe pickles, the converter."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from causal_forcing_core.checkpoint_convert import convert_release_to_safetensors
from causal_forcing_core.checkpoints import count_parameters, estimate_dit_bytes, load_dit, read_checkpoint
from causal_forcing_core.config import TINY, WAN_1_3B
from causal_forcing_core.errors import CheckpointError, InvalidInputError, UnsafeCheckpointError
from causal_forcing_core.model_files import download_from_hub
from ci_env import running_in_ci
from parity_cases import fixture_dir
from tiny import tiny_model, tiny_prompt, tiny_stream

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = fixture_dir()
needs_fixtures = pytest.mark.skipif(
    not FIXTURES.is_dir() and not running_in_ci(), reason="no parity fixtures here (CI fails instead)"
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


#: (mean, max) abs difference of one framewise-1step chunk from the float32 model, measured on the CPU
#: (2026-12-03: bf16 0.0028 / 0.0116, fp16 0.00035 / 0.0018, fp8 0.0145 / 0.063; the chunk's std is 0.85);
#: bounded with about 2x margin for other CPUs' kernels
LOW_PRECISION_ERROR = {"bf16": (0.006, 0.025), "fp16": (0.0008, 0.004), "fp8_e4m3fn": (0.03, 0.13)}


@pytest.mark.parametrize("dtype", ["bf16", "fp16", "fp8_e4m3fn"])
def test_storage_dtypes(tmp_path, reference_sd, dtype) -> None:
    path = _write_safetensors(tmp_path / "w.safetensors", reference_sd, metadata={"dit_config": json.dumps(TINY.to_dict())})
    loaded = load_dit(path, weight_dtype=dtype)
    stored = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp8_e4m3fn": torch.float8_e4m3fn}[dtype]
    assert loaded.model.blocks[0].self_attn.q.weight.dtype == stored
    assert loaded.model.compute_dtype == (torch.bfloat16 if dtype == "fp8_e4m3fn" else stored)
    # it runs, and stays as close to the float32 model as measured
    ref = tiny_stream(load_dit(path).model, "framewise-1step").generate(1).latents
    low = tiny_stream(loaded.model, "framewise-1step").generate(1).latents
    assert low.dtype == loaded.model.compute_dtype and torch.isfinite(low.float()).all()
    error = (low.float() - ref).abs()
    mean_bound, max_bound = LOW_PRECISION_ERROR[dtype]
    assert error.mean() < mean_bound and error.max() < max_bound, (dtype, error.mean().item(), error.max().item())


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
         str(tmp_path / "cli.safetensors"), "--variant", "chunkwise-4step", "--num-heads", "2", "--text-len", "16",
         "--ema"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    from_cli = load_dit(tmp_path / "cli.safetensors")
    assert from_cli.sampler.frames_per_block == 3 and from_cli.config == TINY


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickle_that_runs_code_is_refused(tmp_path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"generator": _Evil()}, path)
    with pytest.raises(UnsafeCheckpointError, match="wants to run code") as err:
        load_dit(path)
    msg = str(err.value)
    assert "system" in msg and "refuse" in msg and "safetensors" in msg  # names the global, says how to convert
    assert "weights_only` set to `False`" not in msg  # never relays torch's "retry unsafely" advice


class _Harmless:  # any class, even one without __reduce__ tricks, needs code to rebuild
    def __init__(self) -> None:
        self.weights = torch.zeros(2)


def test_pickled_custom_object_is_refused(tmp_path) -> None:
    path = tmp_path / "object.pt"
    torch.save({"generator_ema": _Harmless()}, path)
    with pytest.raises(UnsafeCheckpointError, match="_Harmless"):
        read_checkpoint(path)


def test_garbage_pt_is_unreadable_not_unsafe(tmp_path) -> None:
    path = tmp_path / "garbage.pt"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(CheckpointError, match=r"Cannot read the checkpoint .*garbage\.pt as a torch file") as err:
        read_checkpoint(path)
    assert not isinstance(err.value, UnsafeCheckpointError)


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
    assert count_parameters(WAN_1_3B) == 1_418_996_800
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


# --------------------------------------------------------------------------------------------------- more layouts
def _write_pt(path: Path, obj, **kwargs) -> Path:
    torch.save(obj, path, **kwargs)
    return path


@pytest.mark.parametrize("layout", ["bare", "model.", "mixed", "generator_only", "legacy_format"])
def test_release_pt_layouts(tmp_path, reference_sd, layout) -> None:
    keys = sorted(reference_sd)
    if layout == "bare":
        obj = dict(reference_sd)
    elif layout == "model.":
        obj = {"generator": {f"model.{k}": v for k, v in reference_sd.items()}}
    elif layout == "mixed":  # one file, both prefixes
        obj = {"generator_ema": {("model._fsdp_wrapped_module." if i % 2 else "model.") + k: reference_sd[k]
                                 for i, k in enumerate(keys)}}
    else:
        obj = {"generator": {f"model.{k}": v for k, v in reference_sd.items()}}
    kwargs = {"_use_new_zipfile_serialization": False} if layout == "legacy_format" else {}  # cannot be mmapped
    loaded = load_dit(_write_pt(tmp_path / "s.pt", obj, **kwargs), num_heads=2)
    assert loaded.config == dataclasses.replace(TINY, text_len=512)  # shapes do not tell text_len
    assert loaded.sampler is None
    _same_weights(loaded.model, reference_sd)
    assert not loaded.model.training
    assert not any(p.requires_grad for p in loaded.model.parameters())


def test_prefer_ema_falls_back_with_a_warning(tmp_path, reference_sd, caplog) -> None:
    path = _write_pt(tmp_path / "chunkwise.pt", {"generator": {f"model.{k}": v for k, v in reference_sd.items()}})
    with caplog.at_level("WARNING", logger="causal_forcing_core.checkpoints"):
        raw = read_checkpoint(path, prefer_ema=True)
    assert raw.metadata["release_key"] == "generator"
    assert "has no generator_ema" in caplog.text


def test_key_twice_after_prefix_stripping(tmp_path, reference_sd) -> None:
    sd = {f"model.{k}": v for k, v in reference_sd.items()}
    sd["model._fsdp_wrapped_module.head.head.bias"] = reference_sd["head.head.bias"]
    with pytest.raises(CheckpointError, match="'head.head.bias' appears twice"):
        read_checkpoint(_write_pt(tmp_path / "dup.pt", {"generator": sd}))


def test_release_dict_without_weights(tmp_path) -> None:
    path = _write_pt(tmp_path / "lora.pt", {"generator_lora": {"a": {"b": torch.zeros(1)}}, "step": 3})
    with pytest.raises(CheckpointError, match=r"not a state dict of tensors.*generator_lora"):
        read_checkpoint(path)


@pytest.mark.parametrize("keys,guess", [
    (["token_embedding.weight", "blocks.0.attn.q.weight", "norm.weight"], "looks like a T5 text encoder"),
    (["input_blocks.0.0.weight", "out.2.weight"], "looks like a Stable Diffusion UNet"),
    (["foo.weight", "bar.bias"], ""),
])
def test_other_models_are_not_a_dit(tmp_path, keys, guess) -> None:
    path = _write_safetensors(tmp_path / "other.safetensors", {k: torch.zeros(2, 2) for k in keys},
                              prefix="model.diffusion_model.")
    with pytest.raises(CheckpointError) as err:
        load_dit(path)
    msg = str(err.value)
    assert "not a Wan DiT" in msg and "patch_embedding.weight" in msg and keys[0] in msg
    assert guess in msg


def test_diffusers_library_naming_is_explained(tmp_path) -> None:
    sd = {"patch_embedding.weight": torch.zeros(4, 16, 1, 2, 2), "condition_embedder.time_embedder.linear_1.weight":
          torch.zeros(4, 4), "blocks.0.attn1.to_q.weight": torch.zeros(4, 4), "scale_shift_table": torch.zeros(1, 2, 4)}
    with pytest.raises(CheckpointError, match=r"diffusers library's naming.*-Diffusers"):
        load_dit(_write_safetensors(tmp_path / "d.safetensors", sd))


def test_many_missing_keys_are_counted(tmp_path, reference_sd) -> None:
    sd = {k: v for k, v in reference_sd.items() if not k.startswith("blocks.1.")}
    sd["img_emb.proj.0.weight"] = torch.zeros(3)
    path = _write_safetensors(tmp_path / "w.safetensors", sd, metadata={"dit_config": json.dumps(TINY.to_dict())})
    with pytest.raises(CheckpointError) as err:
        load_dit(path)
    n_block = sum(k.startswith("blocks.1.") for k in reference_sd)
    msg = str(err.value)
    assert f"{n_block} missing: blocks.1." in msg and " ..." in msg
    assert "1 unexpected: img_emb.proj.0.weight" in msg and "Wan I2V" in msg


def test_sharded_folder_with_a_missing_shard(tmp_path, reference_sd) -> None:
    (tmp_path / "config.json").write_text(json.dumps(TINY.to_dict()))
    _write_safetensors(tmp_path / "diffusion_pytorch_model-00001-of-00002.safetensors", reference_sd)
    weight_map = {k: "diffusion_pytorch_model-00002-of-00002.safetensors" for k in reference_sd}
    (tmp_path / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(CheckpointError, match="lacks the shard.*00002-of-00002"):
        load_dit(tmp_path)


def test_config_json_that_contradicts_the_weights(tmp_path, reference_sd) -> None:
    (tmp_path / "config.json").write_text(json.dumps({**TINY.to_dict(), "ffn_dim": 96}))
    _write_safetensors(tmp_path / "diffusion_pytorch_model.safetensors", reference_sd)
    with pytest.raises(CheckpointError, match=r"wrong shape: blocks\.0\.ffn\.0\.bias: file \[128\] vs model \[96\]"):
        load_dit(tmp_path)


# --------------------------------------------------------------------------------------------------- dtypes
def test_fp8_storage_keeps_small_tensors_precise(tmp_path, reference_sd) -> None:
    path = _write_safetensors(tmp_path / "w.safetensors", reference_sd, metadata={"dit_config": json.dumps(TINY.to_dict())})
    model = load_dit(path, weight_dtype=torch.float8_e4m3fn).model
    assert model.patch_embedding.weight.dtype == torch.float8_e4m3fn
    assert model.blocks[1].ffn[2].weight.dtype == torch.float8_e4m3fn
    for small in (model.blocks[0].modulation, model.head.modulation, model.blocks[0].norm3.weight,
                  model.blocks[0].self_attn.norm_q.weight, model.blocks[0].ffn[0].bias):
        assert small.dtype == torch.bfloat16
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    assert total < 0.3 * estimate_dit_bytes(TINY, torch.float32)


def test_auto_keeps_a_mixed_file_mixed(tmp_path, reference_sd) -> None:
    """ComfyUI-style fp8 files keep norms/biases in higher precision; "auto" must not upcast the fp8 matrices."""
    sd = {k: v.to(torch.float8_e4m3fn) if v.ndim >= 2 and k.endswith(".weight") else v for k, v in reference_sd.items()}
    path = _write_safetensors(tmp_path / "mixed.safetensors", sd, prefix="model.diffusion_model.",
                              metadata={"dit_config": json.dumps(TINY.to_dict())})
    loaded = load_dit(path)
    assert loaded.model.blocks[0].self_attn.q.weight.dtype == torch.float8_e4m3fn
    assert loaded.model.blocks[0].self_attn.q.bias.dtype == torch.float32
    assert loaded.model.compute_dtype == torch.bfloat16
    assert load_dit(path, compute_dtype=torch.float32).model.compute_dtype == torch.float32


def test_bf16_file_computes_in_bf16_and_fp32_on_request(tmp_path, reference_sd) -> None:
    sd = {k: v.to(torch.bfloat16) for k, v in reference_sd.items()}
    path = _write_safetensors(tmp_path / "b.safetensors", sd, metadata={"dit_config": json.dumps(TINY.to_dict())})
    assert load_dit(path).model.compute_dtype == torch.bfloat16
    up = load_dit(path, weight_dtype="fp32").model
    assert up.compute_dtype == torch.float32 and up.head.head.weight.dtype == torch.float32
    with pytest.raises(CheckpointError, match="Unknown weight dtype 'int4'"):
        load_dit(path, weight_dtype="int4")


def test_variant_argument_and_unknown_metadata_variant(tmp_path, reference_sd) -> None:
    path = _write_safetensors(tmp_path / "w.safetensors", reference_sd,
                              metadata={"dit_config": json.dumps(TINY.to_dict()), "variant": "no-such-preset"})
    assert load_dit(path).sampler is None
    assert load_dit(path, variant="framewise-4step").sampler.frames_per_block == 1
    with pytest.raises(InvalidInputError, match="Unknown sampler preset"):
        load_dit(path, variant="sixstep")


# --------------------------------------------------------------------------------------------------- converter
@needs_fixtures
def test_converter_metadata_dtype_and_ema(tmp_path) -> None:
    dst = convert_release_to_safetensors(FIXTURES / "dit_tiny_release.pt", tmp_path / "out" / "s.safetensors",
                                         variant="chunkwise-4step", dtype="bf16", config=TINY)
    from safetensors import safe_open

    with safe_open(str(dst), framework="pt") as f:
        meta = f.metadata()
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
        assert all(not k.startswith("model.") for k in f.keys())
    assert json.loads(meta["dit_config"]) == TINY.to_dict()
    assert meta["variant"] == "chunkwise-4step" and meta["frames_per_block"] == "3"
    assert json.loads(meta["denoising_steps"]) == [1000, 750, 500, 250] and json.loads(meta["first_chunk_steps"]) is None
    assert meta["source"] == "dit_tiny_release.pt" and meta["source_key"] == "generator_ema"
    loaded = load_dit(dst)  # no num_heads needed any more: the metadata carries the config
    assert loaded.config == TINY and loaded.sampler.name == "chunkwise-4step"
    reference = {k.removeprefix("model."): v for k, v in load_file(str(FIXTURES / "dit_tiny.safetensors")).items()}
    assert torch.allclose(loaded.model.head.head.bias.float(), reference["head.head.bias"] + 0.25, atol=2e-3)
    assert [p.name for p in dst.parent.iterdir()] == ["s.safetensors"]  # no partial file left behind


def test_converter_validates_before_writing(tmp_path, reference_sd) -> None:
    src = _write_pt(tmp_path / "s.pt", {"generator": {f"model.{k}": v for k, v in reference_sd.items()}})
    with pytest.raises(InvalidInputError, match="Unknown sampler preset"):
        convert_release_to_safetensors(src, tmp_path / "a.safetensors", variant="3step")
    broken = _write_pt(tmp_path / "b.pt", {k: v for k, v in reference_sd.items() if k != "head.modulation"})
    with pytest.raises(CheckpointError, match="1 missing: head.modulation"):
        convert_release_to_safetensors(broken, tmp_path / "b.safetensors", variant="framewise-1step", num_heads=2)
    with pytest.raises(CheckpointError, match="should end in .safetensors"):
        convert_release_to_safetensors(src, tmp_path / "c.pt", variant="framewise-1step", num_heads=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.pt", "s.pt"]


def test_download_offline_names_repo_file_and_place(tmp_path, monkeypatch) -> None:
    pytest.importorskip("huggingface_hub")
    import socket

    from huggingface_hub import constants

    attempts = []

    def no_network(*args, **kwargs):
        attempts.append(args)
        raise OSError("tests never reach the network")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(CheckpointError) as err:
        download_from_hub("zhuhz22/Causal-Forcing", "framewise/causal_forcing.pt", tmp_path / "models")
    msg = str(err.value)
    assert "zhuhz22/Causal-Forcing" in msg and "framewise/causal_forcing.pt" in msg
    assert str(tmp_path / "models" / "framewise" / "causal_forcing.pt") in msg
    assert attempts == []  # offline mode stopped it before any connection


def test_all_in_one_checkpoint_gives_its_dit(tmp_path, reference_sd) -> None:
    """ComfyUI all-in-one files hold the DiT under model.diffusion_model. beside the VAE and text encoder."""
    sd = {f"model.diffusion_model.{k}": v for k, v in reference_sd.items()}
    sd["first_stage_model.decoder.conv1.weight"] = torch.zeros(3)
    sd["text_encoders.umt5xxl.transformer.shared.weight"] = torch.zeros(3)
    path = _write_safetensors(tmp_path / "aio.safetensors", sd)
    loaded = load_dit(path, num_heads=2)
    _same_weights(loaded.model, reference_sd)
    # without the DiT prefix, a stray key is still an error naming it
    bare = dict(reference_sd, **{"first_stage_model.decoder.conv1.weight": torch.zeros(3)})
    with pytest.raises(CheckpointError, match="first_stage_model.decoder.conv1.weight"):
        load_dit(_write_safetensors(tmp_path / "bare.safetensors", bare), num_heads=2)


def _failing_hub(monkeypatch) -> tuple[logging.Handler, list[logging.LogRecord]]:
    """A hub download that behaves like an offline one: it makes its folders, lock file and cache tag, logs a
    retry warning through the library's logger, then raises. Returns the library's own handler and what it got."""
    import huggingface_hub

    seen: list[logging.LogRecord] = []

    class Own(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    hub_logger = logging.getLogger("huggingface_hub")
    own = Own()
    hub_logger.addHandler(own)
    monkeypatch.setattr(hub_logger, "handlers", [own])

    def hf_hub_download(*, repo_id: str, filename: str, local_dir: str) -> str:
        cache = Path(local_dir) / ".cache" / "huggingface"
        (cache / "download" / Path(filename).parent).mkdir(parents=True)
        (cache / "download" / f"{filename}.lock").touch()
        if not (cache / "CACHEDIR.TAG").exists():
            (cache / "CACHEDIR.TAG").write_text("Signature: 8a477f597d28d172789f06886806bc55")
        (Path(local_dir) / Path(filename).parent).mkdir(parents=True, exist_ok=True)
        logging.getLogger("huggingface_hub.utils._http").warning("Retrying in 1s [Retry 1/5].")
        raise OSError("no network in tests")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    return own, seen


def test_a_failed_download_removes_the_folders_it_made_and_logs_once(tmp_path, monkeypatch, caplog) -> None:
    models = tmp_path / "models"
    own, seen = _failing_hub(monkeypatch)
    with caplog.at_level(logging.WARNING), pytest.raises(CheckpointError, match="Could not download chunkwise/"):
        download_from_hub("zhuhz22/Causal-Forcing", "chunkwise/causal_forcing.pt", models / "zhuhz22/Causal-Forcing")
    assert not models.exists()  # everything it made is gone, up to the models folder it created
    retries = [r for r in caplog.records if "Retrying" in r.getMessage()]
    assert len(retries) == 1 and seen == []  # once, through the application's handler only
    assert logging.getLogger("huggingface_hub").handlers == [own]  # given back after the download


def test_a_failed_download_keeps_what_was_there(tmp_path, monkeypatch) -> None:
    repo = tmp_path / "models" / "zhuhz22/Causal-Forcing"
    (repo / "chunkwise").mkdir(parents=True)
    (repo / "chunkwise" / "causal_forcing.pt").write_bytes(b"earlier")
    (repo / ".cache" / "huggingface").mkdir(parents=True)
    (repo / ".cache" / "huggingface" / "CACHEDIR.TAG").write_text("Signature: 8a477f597d28d172789f06886806bc55")
    _failing_hub(monkeypatch)
    with pytest.raises(CheckpointError):
        download_from_hub("zhuhz22/Causal-Forcing", "framewise/causal_forcing.pt", repo)
    left = sorted(str(p.relative_to(repo)) for p in repo.rglob("*"))
    assert left == [".cache", ".cache/huggingface", ".cache/huggingface/CACHEDIR.TAG", "chunkwise",
                    "chunkwise/causal_forcing.pt"]


# ------------------------------------------------------------------------------------------ bad values, odd names
def test_integer_tensors_in_a_dit_are_refused_by_name(tmp_path, reference_sd) -> None:
    sd = dict(reference_sd)
    sd["head.head.bias"] = sd["head.head.bias"].round().to(torch.int32)
    sd["blocks.0.norm3.weight"] = sd["blocks.0.norm3.weight"].to(torch.int64)
    path = _write_safetensors(tmp_path / "ints.safetensors", sd)
    with pytest.raises(CheckpointError, match=r"^The DiT file ints\.safetensors holds 2 non-floating-point tensors "
                                              r"where weights should be floats: blocks\.0\.norm3\.weight \(int64\), "
                                              r"head\.head\.bias \(int32\)\."):
        load_dit(path, num_heads=2)


def test_nan_weights_in_a_dit_are_refused_by_name(tmp_path, reference_sd) -> None:
    sd = {k: v.clone() for k, v in reference_sd.items()}
    sd["blocks.1.ffn.0.weight"][3, 4] = float("nan")
    path = _write_safetensors(tmp_path / "nan.safetensors", sd)
    with pytest.raises(CheckpointError, match=r"^The DiT file nan\.safetensors has NaN or infinite values in 1 "
                                              r"tensors: blocks\.1\.ffn\.0\.weight\. The file is corrupt"):
        load_dit(path, num_heads=2)
    with pytest.raises(CheckpointError, match="NaN or infinite"):  # and nothing is converted from it
        convert_release_to_safetensors(path, tmp_path / "out.safetensors", variant="chunkwise-4step", num_heads=2)
    assert not (tmp_path / "out.safetensors").exists()


def test_upper_case_safetensors_students_load(tmp_path, reference_sd) -> None:
    path = _write_safetensors(tmp_path / "STUDENT.SAFETENSORS", reference_sd,
                              metadata={"dit_config": json.dumps(TINY.to_dict()), "variant": "framewise-4step"})
    loaded = load_dit(path)
    assert loaded.config == TINY and loaded.sampler.name == "framewise-4step"
    folder = tmp_path / "folder"
    folder.mkdir()
    _write_safetensors(folder / "WEIGHTS.SAFETENSORS", reference_sd)
    _same_weights(load_dit(folder, num_heads=2).model, reference_sd)


def test_an_empty_release_file_says_so(tmp_path) -> None:
    (tmp_path / "causal_forcing.pt").touch()
    with pytest.raises(CheckpointError, match=r"causal_forcing\.pt is empty \(0 bytes\)"):
        load_dit(tmp_path / "causal_forcing.pt")


def test_converter_output_folders_and_permissions(tmp_path, reference_sd) -> None:
    src = _write_pt(tmp_path / "student.pt", {"generator": {f"model.{k}": v for k, v in reference_sd.items()}})
    old = os.umask(0o022)
    try:
        into_new = convert_release_to_safetensors(src, f"{tmp_path / 'new' / 'folder'}/", variant="chunkwise-4step",
                                                  num_heads=2)
        into_existing = convert_release_to_safetensors(src, tmp_path / "new", variant="chunkwise-4step", num_heads=2)
        upper = convert_release_to_safetensors(src, tmp_path / "S.SAFETENSORS", variant="chunkwise-4step",
                                               num_heads=2)
    finally:
        os.umask(old)
    assert into_new == tmp_path / "new" / "folder" / "student.safetensors"
    assert into_existing == tmp_path / "new" / "student.safetensors"
    for path in (into_new, into_existing, upper):
        assert path.stat().st_mode & 0o777 == 0o644  # readable by others, like any new file
        assert load_dit(path).sampler.name == "chunkwise-4step"
    with pytest.raises(CheckpointError, match=r"^Cannot create the folder .*student\.pt for x\.safetensors: .*"
                                              r"Choose another output path\.$"):
        convert_release_to_safetensors(src, tmp_path / "student.pt" / "x.safetensors", variant="chunkwise-4step",
                                       num_heads=2)
