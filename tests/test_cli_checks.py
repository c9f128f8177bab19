"""``generate`` refuses every user mistake before it loads or generates anything, with one line saying what to do
(exit code 2, no traceback); ``convert`` likewise. Tiny weights from test_cli's fixture; the weight reader may read
only headers and shapes (meta tensors) until the input is checked."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from causal_forcing_core import cli
from causal_forcing_core.config import SAMPLER_PRESETS, TINY
from causal_forcing_core.kv_cache import KVCache
from test_cli import _generate_args, run_main, run_main_without_weights, weights  # noqa: F401 - weights: fixture
from tiny import tiny_model

GIB = 2**30


def _one_error(argv: list[str], caplog: pytest.LogCaptureFixture) -> str:
    code, logged = run_main_without_weights(argv, caplog)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert code == 2 and len(errors) == 1, logged
    return errors[0]


def _student(path: Path, variant: str | None = "chunkwise-4step", **changes: torch.Tensor) -> Path:
    sd = {k: v.contiguous() for k, v in tiny_model(seed=5).state_dict().items()}
    sd.update(changes)
    metadata = {"dit_config": json.dumps(TINY.to_dict())}
    if variant:
        metadata["variant"] = variant
    save_file(sd, str(path), metadata=metadata)
    return path


@pytest.mark.parametrize(
    "args, message",
    [
        (["--output", "{tmp}/clip.avi"], r"^Cannot write clip\.avi: unknown video suffix '\.avi'\. Use \.mp4, \.webp, "
                                          r"\.gif, a directory or a PNG pattern like frames_%05d\.png\.$"),
        (["--output", "{tmp}/clip.MOV"], r"unknown video suffix '\.mov'"),
        (["--fps", "0"], r"^fps must be a positive number of frames per second up to 1000 \(e\.g\. 16\), got 0\.$"),
        (["--fps", "5000"], r"got 5000\.$"),
        (["--report", "{tmp}"], r"^Cannot write the timing report .*: a directory with that name exists\. Choose "
                                r"another name\.$"),
        (["--report", "{tmp}/a_file/report.json"], r"^Cannot write .*report\.json: a part of its folder .*a_file "
                                                   r"exists as a file\. Choose another output path\.$"),
        (["--output", "{tmp}/a_file/video.mp4"], r"a part of its folder .*a_file exists as a file"),
    ],
)
def test_outputs_fps_and_report_are_checked_first(weights, tmp_path, args, message, caplog) -> None:  # noqa: F811
    (tmp_path / "a_file").write_text("x")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    argv = _generate_args(weights, "--prompt", "a cat", "--output", str(tmp_path / "v.mp4"), *args)
    assert re.search(message, _one_error(argv, caplog))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--schedule", "a cat | a dog | a cat walks | a dog runs", "--frames", "33"],
         r"^4 segments do not fit into 3 chunks \(each segment needs at least one\); use at most 3 segments, or a "
         r"longer video\.$"),
        (["--schedule", "0: a cat\nthe dog\n5: a dog\n4: a cat", "--frames", "33"],
         r"^Schedule line 2 \('the dog'\) is not of the form 'chunk: prompt'\.\nSchedule line 3 starts at chunk 5, "
         r"but the video has 3 chunks \(0 to 2\)\.\nSchedule line 4: chunk 4 comes after chunk 5 \(line 3\); sort the "
         r"lines by chunk\.\nSchedule line 4 starts at chunk 4, but the video has 3 chunks \(0 to 2\)\.$"),
        (["--prompt", "a cat", "--window", "2"], r"window_frames=2 is smaller than one chunk \(3 latent frames\)"),
    ],
)
def test_schedule_and_window_are_checked_against_the_length(weights, args, message, caplog) -> None:  # noqa: F811
    assert re.search(message, _one_error(_generate_args(weights, *args), caplog))


def test_a_schedule_file_that_is_missing_or_not_utf8(weights, tmp_path, caplog) -> None:  # noqa: F811
    message = _one_error(_generate_args(weights, "--schedule-file", str(tmp_path / "none.txt")), caplog)
    assert message == (f"--schedule-file {tmp_path / 'none.txt'} does not exist; give a text file with lines like "
                       "'0: a cat walks'.")
    caplog.clear()
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("0: a caf\xe9 at night\n".encode("latin-1"))
    message = _one_error(_generate_args(weights, "--schedule-file", str(latin1)), caplog)
    assert message == f"--schedule-file {latin1} is not UTF-8 text (byte 0xe9 at position 8); save it as UTF-8."


def test_image_to_video_needs_a_framewise_student_and_a_readable_image(weights, tmp_path, caplog) -> None:  # noqa: F811
    from PIL import Image

    image = tmp_path / "start.png"
    Image.new("RGB", (64, 64), (200, 10, 10)).save(image)
    message = _one_error(_generate_args(weights, "--prompt", "a cat", "--image", str(image), "--frames", "13"), caplog)
    assert message == (
        "--image needs a frame-wise student (image-to-video starts from the image as the first 1-frame chunk), but "
        "student_chunkwise-4step.safetensors runs chunk-wise (chunkwise-4step, 3-frame chunks). Use --model framewise "
        "(or framewise-2step / framewise-1step) or a frame-wise file."
    )
    caplog.clear()
    unknown = _student(tmp_path / "no_kind.safetensors", variant=None)
    argv = _generate_args(weights, "--prompt", "a cat", "--image", str(image), "--frames", "13")
    argv[argv.index("--model") + 1] = str(unknown)
    assert _one_error(argv, caplog).endswith(
        "The file does not say its kind; if it is frame-wise, say so with --steps framewise-4step (or -2step / -1step).")
    caplog.clear()
    missing = _one_error(_generate_args(weights, "--prompt", "a cat", "--image", str(tmp_path / "no.png"),
                                        "--frames", "13", model="framewise-2step"), caplog)
    assert missing.startswith(f"Image {tmp_path / 'no.png'} does not exist")
    caplog.clear()
    (tmp_path / "junk.png").write_bytes(b"not an image")
    junk = _one_error(_generate_args(weights, "--prompt", "a cat", "--image", str(tmp_path / "junk.png"),
                                     "--frames", "13", model="framewise-2step"), caplog)
    assert junk.startswith(f"Cannot read {tmp_path / 'junk.png'} as an image")


@pytest.mark.parametrize(
    "model, steps, message",
    [
        ("chunkwise-4step", "framewise-4step",
         "--steps framewise-4step is for frame-wise students (1-frame chunks), but student_chunkwise-4step.safetensors "
         "is a chunk-wise model (chunkwise-4step, 3-frame chunks); use --steps chunkwise-4step or rolling-4step or "
         "rolling-5step or causvid-3step (or auto)."),
        ("framewise-2step", "chunkwise-4step",
         "--steps chunkwise-4step is for chunk-wise students (3-frame chunks), but "
         "student_framewise-2step.safetensors is a frame-wise model (framewise-2step, 1-frame chunks); use --steps "
         "framewise-4step or framewise-2step or framewise-1step (or auto)."),
    ],
)
def test_a_preset_of_the_other_kind_is_refused(weights, model, steps, message, caplog) -> None:  # noqa: F811
    argv = _generate_args(weights, "--prompt", "a cat", "--steps", steps, "--frames", "13", model=model)
    assert _one_error(argv, caplog) == message


def test_a_size_whose_cache_cannot_fit_is_refused_with_the_estimate(weights, monkeypatch, caplog) -> None:  # noqa: F811
    monkeypatch.setattr(cli, "available_memory", lambda device: GIB)
    argv = _generate_args(weights, "--prompt", "a cat", "--frames", "81")
    argv[argv.index("--height") + 1] = argv[argv.index("--width") + 1] = "4096"
    kv = KVCache.estimate_bytes(num_layers=2, batch=1, num_heads=2, head_dim=32, frame_tokens=256 * 256,
                                capacity_frames=21, dtype=torch.float32)
    frames = 2 * 81 * 3 * 4096 * 4096
    assert _one_error(argv, caplog) == (
        f"--height 4096 --width 4096 with 81 frames needs about {kv / GIB:.1f} GiB of KV cache for this model (dim "
        f"64, 2 layers, float32), plus 0.0 GiB of weights and {frames / GIB:.1f} GiB of decoded frames: "
        f"{(kv + frames) / GIB:.1f} GiB on cpu; at most 1.0 GiB is available. Use a smaller size, fewer frames or a "
        "local window (--window)."
    )
    caplog.clear()  # a window bounds the cache
    monkeypatch.setattr(cli, "available_memory", lambda device: 10 * GIB)
    chunkwise, rolling = SAMPLER_PRESETS["chunkwise-4step"], SAMPLER_PRESETS["rolling-4step"]
    big = cli.argparse.Namespace(height=4096, width=4096, window=6)
    windowed = cli.memory_estimate(TINY, big, chunkwise, 21, torch.float32)
    assert windowed["kv_cache"] * 21 == kv * 6
    # Rolling Forcing's cache is its own 24 frames, however long the video (no window needed)
    long_rolling = cli.memory_estimate(TINY, cli.argparse.Namespace(height=4096, width=4096, window=0), rolling, 3000,
                                       torch.float32)
    assert long_rolling["kv_cache"] * 21 == kv * 24


def test_the_real_model_at_the_trained_size_fits_a_24_gib_gpu() -> None:
    from causal_forcing_core.config import WAN_1_3B

    args = cli.argparse.Namespace(height=480, width=832, window=0)
    need = cli.memory_estimate(WAN_1_3B, args, SAMPLER_PRESETS["chunkwise-4step"], 21, torch.bfloat16)
    assert need["kv_cache"] == 2 * 30 * 21 * 1560 * 12 * 128 * 2  # 6.0 GB: 30 layers, 1560 tokens a frame
    assert need["kv_cache"] + need["weights"] < 24 * GIB


def test_a_prompt_longer_than_the_model_reads_is_refused_before_loading(weights, caplog) -> None:  # noqa: F811
    prompt = " ".join(["a cat walks"] * 6)  # 18 words + EOS; the tiny student reads 16 tokens
    message = _one_error(_generate_args(weights, "--prompt", prompt), caplog)
    assert message == ("The prompt 'a cat walks a cat walks a cat walks a ca...' has 19 tokens; this model reads "
                       "at most 16. Shorten it.")  # its first 40 characters


def test_an_empty_tokenizer_folder(weights, tmp_path, caplog) -> None:  # noqa: F811
    argv = _generate_args(weights, "--prompt", "a cat")
    argv[argv.index("--tokenizer") + 1] = str(tmp_path)
    assert _one_error(argv, caplog) == (
        f"The umT5 tokenizer folder {tmp_path} has no tokenizer files (found: nothing). Put the google/umt5-xxl "
        "tokenizer files (tokenizer.json / spiece.model, tokenizer_config.json) there, or pass --download."
    )


def test_integer_tensors_in_a_student_are_refused_from_its_header(weights, tmp_path, caplog) -> None:  # noqa: F811
    bad = _student(tmp_path / "ints.safetensors", **{"head.head.bias": torch.zeros(64, dtype=torch.int64)})
    argv = _generate_args(weights, "--prompt", "a cat")
    argv[argv.index("--model") + 1] = str(bad)
    assert _one_error(argv, caplog).startswith(
        "The DiT file ints.safetensors holds 1 non-floating-point tensors where weights should be floats: "
        "head.head.bias (int64).")


def test_an_upper_case_safetensors_student_is_read_as_one(weights, tmp_path, caplog) -> None:  # noqa: F811
    upper = _student(tmp_path / "STUDENT.SAFETENSORS", variant="framewise-4step")
    argv = _generate_args(weights, "--prompt", "a cat", "--frames", "30")
    argv[argv.index("--model") + 1] = str(upper)
    assert "1 + 4k" in _one_error(argv, caplog)
    caplog.clear()
    argv[argv.index("--frames") + 1] = "13"
    argv += ["--steps", "chunkwise-4step"]  # its metadata was read: it is frame-wise
    assert "STUDENT.SAFETENSORS is a frame-wise model (framewise-4step" in _one_error(argv, caplog)


def test_nan_weights_stop_the_run_naming_the_tensor(weights, tmp_path, caplog) -> None:  # noqa: F811
    bias = tiny_model(seed=5).state_dict()["head.head.bias"].clone()
    bias[0] = float("nan")
    bad = _student(tmp_path / "nan.safetensors", **{"head.head.bias": bias})
    argv = _generate_args(weights, "--prompt", "a cat", "--output", str(tmp_path / "v.mp4"))
    argv[argv.index("--model") + 1] = str(bad)
    code, logged = run_main(argv, caplog)
    assert code == 2 and "The DiT file nan.safetensors has NaN or infinite values in 1 tensors: head.head.bias." in logged
    assert not (tmp_path / "v.mp4").exists()


def test_convert_into_a_new_folder_and_from_an_empty_file(tmp_path, caplog) -> None:
    src = tmp_path / "student.pt"
    torch.save({"generator": {f"model.{k}": v for k, v in tiny_model().state_dict().items()}}, src)
    code, logged = run_main(["convert", str(src), f"{tmp_path / 'out' / 'new'}/", "--variant", "framewise-4step",
                             "--num-heads", "2"], caplog)
    assert code == 0, logged
    assert (tmp_path / "out" / "new" / "student.safetensors").is_file()
    caplog.clear()
    (tmp_path / "empty.pt").touch()
    code, logged = run_main(["convert", str(tmp_path / "empty.pt"), str(tmp_path / "e.safetensors"), "--variant",
                             "framewise-4step"], caplog)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert code == 2 and errors == [f"The checkpoint {tmp_path / 'empty.pt'} is empty (0 bytes): a download or copy "
                                    "that did not finish; download it again."]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_says_to_use_the_cpu(weights, caplog) -> None:  # noqa: F811
    argv = _generate_args(weights, "--prompt", "a cat")
    argv[argv.index("--device") + 1] = "cuda"
    assert _one_error(argv, caplog) == ("--device cuda: this machine has no CUDA device that torch can use; use "
                                        "--device cpu (or auto).")
