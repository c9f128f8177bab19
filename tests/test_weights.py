"""The one weight reader: safetensors + metadata, weights-only torch files, refused pickles, prefixes, bad files."""

from __future__ import annotations

import os
import pickle
import re
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from causal_forcing_core.errors import CheckpointError, UnsafeCheckpointError
from causal_forcing_core.weights import (
    load_torch_file,
    read_metadata,
    read_state_dict,
    read_weights,
    strip_prefix,
    weight_format,
)


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "blocks.0.weight": torch.randn(4, 3, generator=g),
        "blocks.0.bias": torch.randn(4, generator=g).to(torch.bfloat16),
        "head.weight": torch.randn(2, 4, generator=g).to(torch.float8_e4m3fn),
        "steps": torch.arange(5),
    }


def _assert_same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        assert got[key].dtype == value.dtype and got[key].shape == value.shape, key
        assert torch.equal(got[key].view(torch.uint8), value.view(torch.uint8)), key


def test_safetensors_tensors_and_metadata(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    meta = {"variant": "chunkwise-4step", "dit_config": '{"dim": 64}'}
    save_file(_tensors(), str(path), metadata=meta)
    loaded = read_weights(path)
    _assert_same(loaded.tensors, _tensors())
    assert loaded.metadata == meta and loaded.format == "safetensors" and loaded.path == path
    assert read_metadata(path) == meta
    _assert_same(read_state_dict(path), _tensors())
    save_file(_tensors(), str(tmp_path / "bare.safetensors"))
    assert read_metadata(tmp_path / "bare.safetensors") == {}


def test_weights_only_torch_files(tmp_path: Path) -> None:
    torch.save(_tensors(), tmp_path / "zip.pt")
    # torch's old non-zip format cannot be memory-mapped (read whole), nor hold float8 (a torch limitation)
    legacy = {k: v for k, v in _tensors().items() if v.dtype != torch.float8_e4m3fn}
    torch.save(legacy, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    torch.save({"state_dict": _tensors(), "epoch": 3}, tmp_path / "lightning.ckpt")
    for name, want in (("zip.pt", _tensors()), ("legacy.pth", legacy), ("lightning.ckpt", _tensors())):
        loaded = read_weights(tmp_path / name)
        _assert_same(loaded.tensors, want)
        assert loaded.metadata == {} and loaded.format == "torch"
    assert read_metadata(tmp_path / "zip.pt") == {}
    nested = {"generator_ema": _tensors(), "step": 7, "rng": torch.get_rng_state(), "names": ["a", "b"]}
    torch.save(nested, tmp_path / "release.pt")
    obj = load_torch_file(tmp_path / "release.pt")
    assert obj["step"] == 7 and obj["names"] == ["a", "b"] and torch.equal(obj["rng"], nested["rng"])
    _assert_same(obj["generator_ema"], _tensors())
    with pytest.raises(CheckpointError, match=r"not a flat dict of named tensors.*step \(int\)"):
        read_state_dict(tmp_path / "release.pt")


class _RunsCode:
    """Unpickling this calls ``os.getcwd()``: harmless, but code all the same."""

    def __reduce__(self):  # noqa: ANN204 - pickle protocol
        return (os.getcwd, ())


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_a_pickle_that_would_run_code_is_refused_without_running(tmp_path: Path, monkeypatch, layout: str) -> None:
    path = tmp_path / "evil.pt"
    if layout == "zip":
        torch.save({"weight": _RunsCode()}, path)
    else:
        with open(path, "wb") as f:
            pickle.dump({"weight": _RunsCode()}, f, protocol=2)
    calls: list[tuple] = []
    # the pickle names the function by module and name; unpickling looks it up there, so this stands in for it
    monkeypatch.setattr(sys.modules[os.getcwd.__module__], "getcwd", lambda *a: calls.append(a) or "ran")
    with pytest.raises(UnsafeCheckpointError, match="wants to run code") as err:
        read_state_dict(path)
    with pytest.raises(UnsafeCheckpointError):
        load_torch_file(path, mmap=False)
    assert calls == []  # refused before anything ran
    msg = str(err.value)
    assert "getcwd" in msg and "evil.safetensors" in msg  # names the global, says how to convert
    assert "weights_only` set to `False`" not in msg  # never relays torch's "retry unsafely" advice
    with open(path, "rb") as f:  # control: an unsafe load of the same file does call it
        unsafe = torch.load(path, weights_only=False) if layout == "zip" else pickle.load(f)  # noqa: S301
    assert unsafe["weight"] == "ran" and calls == [()]


def test_missing_unreadable_and_unsupported_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"The VAE file .*absent\.pth does not exist\. Expected a VAE\."):
        read_state_dict(tmp_path / "absent.pth", what="VAE file", expected="a VAE")
    with pytest.raises(CheckpointError, match="is a directory"):
        read_weights(tmp_path)
    (tmp_path / "junk.safetensors").write_bytes(b"not really")
    with pytest.raises(CheckpointError, match="Cannot read the weight file .*junk.safetensors as safetensors"):
        read_weights(tmp_path / "junk.safetensors")
    with pytest.raises(CheckpointError, match="as safetensors"):
        read_metadata(tmp_path / "junk.safetensors")
    torch.save(_tensors(), tmp_path / "ok.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "ok.pt").read_bytes()[:300])
    with pytest.raises(CheckpointError, match=r"cut\.pt as a torch file .*; download it again\.$") as err:
        read_weights(tmp_path / "cut.pt")
    assert not isinstance(err.value, UnsafeCheckpointError)
    with pytest.raises(CheckpointError, match=r"training state .*cut\.pt .*; delete it\.$"):
        load_torch_file(tmp_path / "cut.pt", what="training state", advice="delete it")
    (tmp_path / "model.gguf").write_bytes(b"GGUF\x03\x00\x00\x00")
    with pytest.raises(CheckpointError, match="Unsupported weight file model.gguf"):
        read_weights(tmp_path / "model.gguf")


def test_format_by_suffix_then_by_content(tmp_path: Path) -> None:
    save_file(_tensors(), str(tmp_path / "weights"))
    torch.save(_tensors(), tmp_path / "weights.torch")
    (tmp_path / "notes.txt").write_text("hello")
    assert weight_format(tmp_path / "weights") == "safetensors"
    assert weight_format(tmp_path / "weights.torch") == "torch"
    assert weight_format(tmp_path / "notes.txt") is None
    assert weight_format(tmp_path / "anything.SafeTensors") == "safetensors"  # suffix decides, file not opened
    assert weight_format(tmp_path / "x.bin") == "torch"
    _assert_same(read_state_dict(tmp_path / "weights"), _tensors())
    _assert_same(read_state_dict(tmp_path / "weights.torch"), _tensors())


def test_prefix_strip(tmp_path: Path) -> None:
    sd = {"first_stage_model.conv1.weight": torch.zeros(1), "vae.conv2.weight": torch.ones(1), "scale": torch.ones(2)}
    save_file(sd, str(tmp_path / "p.safetensors"))
    got = read_state_dict(tmp_path / "p.safetensors", prefix=("first_stage_model.", "vae."))
    assert sorted(got) == ["conv1.weight", "conv2.weight", "scale"]
    assert torch.equal(got["conv2.weight"], torch.ones(1))
    assert sorted(read_state_dict(tmp_path / "p.safetensors", prefix="vae.")) == [
        "conv2.weight", "first_stage_model.conv1.weight", "scale"]
    assert list(strip_prefix({"model.model.x": torch.zeros(1)}, ("model.",))) == ["model.x"]  # once, first match
    with pytest.raises(CheckpointError, match="'x' appears twice"):
        strip_prefix({"model.x": torch.zeros(1), "x": torch.zeros(1)}, "model.")


def test_an_empty_file_says_it_is_empty(tmp_path: Path) -> None:
    for name in ("student.pt", "student.safetensors"):
        (tmp_path / name).touch()
        shown = re.escape(str(tmp_path / name))
        with pytest.raises(CheckpointError, match=rf"^The student {shown} is empty \(0 bytes\): a download or copy "
                                                  r"that did not finish; download it again\.$"):
            read_weights(tmp_path / name, what="student")


def test_upper_case_suffixes_are_their_formats(tmp_path: Path) -> None:
    save_file({"x": torch.ones(2)}, str(tmp_path / "W.SAFETENSORS"))
    torch.save({"x": torch.ones(2)}, tmp_path / "W.PTH")
    assert weight_format(tmp_path / "W.SAFETENSORS") == "safetensors" and weight_format(tmp_path / "W.PTH") == "torch"
    assert torch.equal(read_state_dict(tmp_path / "W.SAFETENSORS")["x"], torch.ones(2))
    assert torch.equal(read_state_dict(tmp_path / "W.PTH")["x"], torch.ones(2))


def test_tensor_value_checks_name_the_tensors() -> None:
    from causal_forcing_core.weights import check_tensor_values, key_problems

    good = {"a": torch.ones(3), "b": torch.ones(2, dtype=torch.bfloat16), "c": torch.ones(2).to(torch.float8_e4m3fn)}
    check_tensor_values(good, what="DiT file x", floating_only=True)
    bad = dict(good, n=torch.tensor([1.0, float("nan")]), i=torch.tensor([float("-inf")], dtype=torch.float16),
               huge=torch.full((4,), 6e4, dtype=torch.float16))  # finite, though its fp16 sum would overflow
    with pytest.raises(CheckpointError, match=r"^The DiT file x has NaN or infinite values in 2 tensors: i, n\. "):
        check_tensor_values(bad, what="DiT file x")
    with pytest.raises(CheckpointError, match=r"holds 2 non-floating-point tensors where weights should be floats: "
                                              r"k \(int64\), m \(bool\)\."):
        check_tensor_values(dict(good, k=torch.arange(3), m=torch.ones(1, dtype=torch.bool)), what="DiT file x",
                            floating_only=True)
    assert key_problems({"a": torch.ones(3), "z": torch.ones(1)}, {"a": (4,), "b": (1,)}) == [
        "1 missing: b", "1 unexpected: z", "1 wrong shape: a: file [3] vs model [4]"]
