"""The command line end to end on tiny random weights written to disk."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from causal_forcing_core.config import TINY
from causal_forcing_core.geometry import WAN21
from causal_forcing_core.video_io import read_video_frames
from test_vae import tiny_vae
from tiny import tiny_model
from tiny_text import write_tiny_text_encoder

ROOT = Path(__file__).resolve().parents[1]
#: a device this machine lacks: MPS off macOS, else (on a Mac) CUDA
ABSENT_DEVICE = "cuda:99" if torch.backends.mps.is_available() else "mps"


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tiny_weights")
    encoder, tokenizer = write_tiny_text_encoder(folder / "text")
    out = {"text": encoder, "tokenizer": tokenizer}
    for variant in ("chunkwise-4step", "framewise-2step"):
        path = folder / f"student_{variant}.safetensors"
        sd = {k: v.contiguous() for k, v in tiny_model(seed=5).state_dict().items()}
        save_file(sd, str(path), metadata={"dit_config": json.dumps(TINY.to_dict()), "variant": variant})
        out[variant] = path
    out["vae"] = folder / "vae.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_vae().state_dict().items()}, str(out["vae"]))
    return out


def _generate_args(weights: dict[str, Path], *args: str, model: str = "chunkwise-4step") -> list[str]:
    return ["generate", "--model", str(weights[model]), "--text-encoder", str(weights["text"]),
            "--tokenizer", str(weights["tokenizer"]), "--vae", str(weights["vae"]), "--height", "64", "--width", "64",
            "--device", "cpu", *args]


def run_cli(weights: dict[str, Path], *args: str, model: str = "chunkwise-4step") -> subprocess.CompletedProcess:
    """The real command, ``python -m causal_forcing_core generate ...``, in a process of its own."""
    cmd = [sys.executable, "-m", "causal_forcing_core", *_generate_args(weights, *args, model=model)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def run_main(argv: list[str], caplog: pytest.LogCaptureFixture) -> tuple[int, str]:
    """The command's ``main`` in this process (no interpreter start): its exit code and what it logged."""
    from causal_forcing_core.__main__ import main

    with caplog.at_level(logging.INFO):
        code = main(argv)
    return code, caplog.text


def run_main_without_weights(argv: list[str], caplog: pytest.LogCaptureFixture) -> tuple[int, str]:
    """:func:`run_main` with the weight reader's tensor readers (looked up at call time) refusing to read tensor
    data: only headers and shapes (the meta device) may be read before the input is checked."""
    from causal_forcing_core import weights as weight_reader

    real = {name: getattr(weight_reader, name) for name in ("_read_safetensors", "_load_torch")}

    def header_only(name: str):
        def read(file, device, *rest):
            if str(device) != "meta":
                raise AssertionError(f"weights of {file.path.name} were read before the input was checked")
            return real[name](file, device, *rest)
        return read

    with pytest.MonkeyPatch.context() as mp:
        for name in real:
            mp.setattr(weight_reader, name, header_only(name))
        return run_main(argv, caplog)


def test_generate_with_a_schedule_writes_a_video(weights, tmp_path) -> None:
    out = tmp_path / "video.mp4"
    result = run_cli(weights, "--schedule", "0: a red square moves left\n2: a blue circle moves up", "--frames", "33",
                     "--seed", "3", "--recache", "--output", str(out), "--report", str(tmp_path / "report.json"))
    assert result.returncode == 0, result.stderr
    frames = read_video_frames(out)
    assert frames.shape == (33, 64, 64, 3)
    assert frames.std() > 1 and np.abs(np.diff(frames.astype(float), axis=0)).mean() > 0.1
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["latent_frames"] == 9 and report["pixel_frames"] == 33
    assert report["first_chunk_s"] > 0 and report["pixel_fps_without_decode"] > 0
    assert "first chunk" in result.stderr
    assert re.search(rf"INFO Wrote {re.escape(str(out))}: 33 frames 64x64 h264 at 16 fps, \d+\.\d kB\n", result.stderr)
    assert "VideoWriteResult" not in result.stderr


def test_image_to_video_with_a_framewise_model(weights, tmp_path) -> None:
    image = tmp_path / "start.png"
    Image.fromarray((np.random.default_rng(0).random((40, 90, 4)) * 255).astype(np.uint8), "RGBA").save(image)
    out = tmp_path / "i2v.webp"
    result = run_cli(weights, "--prompt", "a cat walks", "--image", str(image), "--frames", "13",
                     "--output", str(out), model="framewise-2step")
    assert result.returncode == 0, result.stderr
    assert read_video_frames(out).shape == (13, 64, 64, 3)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--prompt", "a cat", "--frames", "30"], "1 \\+ 4k"),
        (["--prompt", "a cat", "--frames", "29"], "not a whole number of 3-frame chunks"),
        (["--schedule", "0: a cat\n9: a dog", "--frames", "33"], "starts at chunk 9"),
        (["--prompt", "a cat", "--height", "70"], "multiples of 16"),
        (["--prompt", "a cat", "--output", "/proc/nope/video.mp4"], "Cannot write the output"),
        (["--prompt", "a cat", "--device", "tpu"], "not a device this command runs on"),
        (["--prompt", "a cat", "--device", ABSENT_DEVICE], "has no (MPS|CUDA) device|only \\d+ CUDA devices"),
    ],
)
def test_bad_input_is_one_clear_line(weights, args, message, caplog) -> None:
    """Refused before any weights are read (only the student's header), with exit code 2 and one line."""
    code, logged = run_main_without_weights(_generate_args(weights, *args), caplog)
    assert code == 2
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and re.search(message, errors[0].getMessage()), logged


def test_bad_input_exits_2_without_a_traceback_from_the_real_command(weights) -> None:
    result = run_cli(weights, "--prompt", "a cat", "--frames", "29")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "not a whole number of 3-frame chunks" in result.stderr


def test_missing_weights_point_to_download(tmp_path, caplog) -> None:
    code, logged = run_main(["generate", "--prompt", "a cat", "--models-dir", str(tmp_path),
                             "--output", str(tmp_path / "v.mp4")], caplog)
    assert code == 2
    assert "--download" in logged and "zhuhz22/Causal-Forcing" in logged


def test_recache_takes_a_mode_and_a_bare_flag_means_recent() -> None:
    import argparse

    from causal_forcing_core.cli import add_generate_arguments

    parser = argparse.ArgumentParser()
    add_generate_arguments(parser)
    assert parser.parse_args([]).recache is None  # the release's own (tests/test_student_presets.py), else off
    assert parser.parse_args(["--recache"]).recache == "recent"
    assert parser.parse_args(["--recache", "window"]).recache == "window"
    with pytest.raises(SystemExit):
        parser.parse_args(["--recache", "sink"])


@pytest.mark.slow  # two whole command-line runs; the mode itself is checked in test_longlive_recache.py
def test_generate_with_a_window_recache(weights, tmp_path) -> None:
    """The LongLive-training re-cache (the window, sink included) through the command line: another video than the
    default re-cache from the switch on, the same before it. PNG frames, not mp4: x264's rate control looks ahead,
    so the same frames before the switch encode differently when the frames after it differ."""
    schedule = "0: a red square moves left\n2: a blue circle moves up"
    videos = {}
    for mode in ("recent", "window"):
        out = tmp_path / mode
        result = run_cli(weights, "--schedule", schedule, "--frames", "33", "--seed", "3", "--window", "6",
                         "--sink", "3", "--recache", mode, "--output", f"{out}/")
        assert result.returncode == 0, result.stderr
        videos[mode] = read_video_frames(out).astype(float)
    switch = WAN21.pixel_frames(2 * 3)  # pixel frames of the first 2 chunks (decoded identically)
    assert np.array_equal(videos["recent"][:switch - 3], videos["window"][:switch - 3])
    # the tiny random VAE decodes near white, so the modes' latents (compared with LongLive's in
    # test_longlive_recache.py) part by one level in 667 of 147,456 values here; the mp4 this test once read hid that
    # under the encoder's own differences
    assert not np.array_equal(videos["recent"][switch:], videos["window"][switch:])


def _tiny_lora(path: Path, dim: int = TINY.dim, scale: float = 0.5) -> Path:
    """A kohya-style LoRA on two of the tiny student's layers."""
    gen = torch.Generator().manual_seed(0)
    tensors = {}
    for name in ("blocks.0.self_attn.q", "blocks.1.cross_attn.v"):
        tensors[f"diffusion_model.{name}.lora_down.weight"] = torch.randn(4, dim, generator=gen) * scale
        tensors[f"diffusion_model.{name}.lora_up.weight"] = torch.randn(dim, 4, generator=gen) * scale
    save_file(tensors, str(path))
    return path


@pytest.mark.parametrize("lora,message", [
    ("missing.safetensors", "no LoRA file .*missing.safetensors"),
    ("{lora}:nan", "finite number"),
    ("{big}", r"does not fit this model's layers: .*\(LoRA 1536x1536, model 64x64\)"),
])
def test_a_bad_lora_is_refused_before_the_student_loads(weights, tmp_path, caplog, lora: str, message: str) -> None:
    arg = lora.format(lora=_tiny_lora(tmp_path / "ok.safetensors"), big=_tiny_lora(tmp_path / "big.safetensors", 1536))
    code, logged = run_main_without_weights(_generate_args(weights, "--prompt", "a cat", "--lora", arg), caplog)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert code == 2 and len(errors) == 1 and re.search(message, errors[0].getMessage()), logged


def test_generate_with_a_lora(weights, tmp_path, caplog) -> None:
    """--lora FILE:0 makes the plain video bit for bit (PNG frames), --lora FILE another one."""
    lora = _tiny_lora(tmp_path / "style.safetensors")
    videos = {}
    for name, extra in (("plain", []), ("zero", ["--lora", f"{lora}:0"]), ("lora", ["--lora", str(lora)])):
        code, logged = run_main(_generate_args(weights, "--prompt", "a cat", "--frames", "9", "--seed", "1",
                                               "--output", str(tmp_path / name) + "/", *extra), caplog)
        assert code == 0, logged
        videos[name] = read_video_frames(tmp_path / name)
    assert np.array_equal(videos["zero"], videos["plain"]) and not np.array_equal(videos["lora"], videos["plain"])
