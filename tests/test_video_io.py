"""Video files out and back in (mp4 / webp / gif / PNG frames), I2V image loading, frame conversion."""

from __future__ import annotations

import errno
import importlib.util
import os
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import av  # the test extra installs PyAV: the mp4 tests must run, not skip
import numpy as np
import pytest
import torch
from PIL import Image

import causal_forcing_core.video_io as video_io
from causal_forcing_core.errors import InvalidInputError
from causal_forcing_core.image_io import load_image
from causal_forcing_core.video_io import (
    VideoWriteResult,
    frames_to_uint8,
    read_video_frames,
    write_video,
)

T, H, W = 9, 48, 64


def _pattern(t: int = T, h: int = H, w: int = W) -> np.ndarray:
    """A moving pattern: a bright square sliding right over a smooth gradient, [t, h, w, 3] uint8."""
    yy, xx = np.mgrid[0:h, 0:w]
    frames = np.zeros((t, h, w, 3), np.uint8)
    for i in range(t):
        frames[i, ..., 0] = (xx * 255 // max(1, w - 1)).astype(np.uint8)
        frames[i, ..., 1] = (yy * 255 // max(1, h - 1)).astype(np.uint8)
        frames[i, ..., 2] = 60
        x0 = 4 + 5 * i
        frames[i, 12:28, x0 : x0 + 16] = (250, 250, 250)
    return frames


def _check_moving(back: np.ndarray, t: int = T, h: int = H, w: int = W) -> None:
    assert back.shape == (t, h, w, 3) and back.dtype == np.uint8
    assert back.std() > 20
    assert np.abs(back[0].astype(int) - back[-1].astype(int)).mean() > 5  # frames differ: it moves


# --------------------------------------------------------------------------------------------------- writing
def _abs_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / mse)


def _no_partials(folder: Path) -> list[Path]:
    return list(folder.rglob(".*partial*"))


# Measured with av 18.1.0 (FFmpeg 8, libx264) on _pattern(): mean |error| 2.49 (1.93 of it is the yuv420p
# conversion alone: chroma at half resolution smears the square's coloured edges), worst frame 2.85, PSNR 36.7 dB.
# The bounds leave ~20% margin; crf 30 gives 3.6, decoding with the wrong (BT.709) matrix 7.7, BGR order 51.
MP4_MEAN_ERROR_MAX = 3.0
MP4_FRAME_ERROR_MAX = 3.5
MP4_PSNR_MIN = 35.0


def test_mp4_round_trip_is_h264_yuv420p(tmp_path: Path) -> None:
    frames = _pattern()
    result = write_video(frames, tmp_path / "clip.mp4", fps=16)
    assert isinstance(result, VideoWriteResult)
    assert (result.codec, result.frames, result.size, result.fps) == ("h264", T, (W, H), 16.0)
    assert not _no_partials(tmp_path)

    with av.open(str(result.path)) as container:  # what is in the file, not what the writer says
        assert "mp4" in container.format.name
        stream = container.streams.video[0]
        ctx = stream.codec_context
        assert (ctx.name, ctx.pix_fmt, ctx.width, ctx.height) == ("h264", "yuv420p", W, H)
        assert stream.average_rate == Fraction(16)
        assert stream.frames == T
        assert stream.duration * stream.time_base == Fraction(T, 16)  # exactly 9 frames at 16 fps
        assert (ctx.colorspace, ctx.color_range) == (6, 1)  # tagged BT.601 limited range, as converted

    back = read_video_frames(result.path)
    _check_moving(back)
    error = _abs_error(back, frames)
    assert error.mean() <= MP4_MEAN_ERROR_MAX
    assert error.reshape(T, -1).mean(axis=1).max() <= MP4_FRAME_ERROR_MAX  # no frame dropped, repeated or shifted
    assert _psnr(back, frames) >= MP4_PSNR_MIN


@pytest.mark.parametrize(("fps", "rate"), [(24000 / 1001, Fraction(24000, 1001)), (12.5, Fraction(25, 2))])
def test_mp4_fps_is_an_exact_rational(tmp_path: Path, fps: float, rate: Fraction) -> None:
    result = write_video(_pattern(4), tmp_path / "clip.mp4", fps=fps)
    assert result.fps == fps
    with av.open(str(result.path)) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == rate
        assert stream.duration * stream.time_base == 4 / rate


def test_mp4_from_float_torch_and_odd_size(tmp_path: Path) -> None:
    frames = torch.from_numpy(_pattern(5, 47, 63)).float() / 255
    result = write_video(frames, tmp_path / "sub" / "odd.mp4")  # missing parent is created
    assert result.size == (64, 48)  # padded to even by repeating the last row/column
    with av.open(str(result.path)) as container:
        ctx = container.streams.video[0].codec_context
        assert (ctx.width, ctx.height, ctx.pix_fmt) == (64, 48, "yuv420p")
    back = read_video_frames(result.path)
    assert back.shape == (5, 48, 64, 3)
    padded = np.pad(_pattern(5, 47, 63), ((0, 0), (0, 1), (0, 1), (0, 0)), mode="edge")
    assert _abs_error(back, padded).mean() <= MP4_MEAN_ERROR_MAX  # measured 2.49
    # the added column and row repeat the edge: measured 1.48 and 1.20 (black padding would give ~148)
    assert _abs_error(back[:, :, 63], padded[:, :, 63]).mean() <= 2.0
    assert _abs_error(back[:, 47], padded[:, 47]).mean() <= 2.0


class _FailingOutput:
    """Wraps PyAV's output container and fails like a full disk after ``after`` packets reached the file."""

    def __init__(self, container: Any, file: str, after: int, error: BaseException) -> None:
        self._container, self.file, self._after, self._error = container, Path(file), after, error
        self.muxed = 0
        self.file_bytes_at_failure = -1

    def __enter__(self) -> _FailingOutput:
        self._container.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        return self._container.__exit__(*exc)

    def add_stream(self, *args: Any, **kwargs: Any) -> Any:
        return self._container.add_stream(*args, **kwargs)

    def mux(self, packets: Any) -> None:
        for packet in packets if isinstance(packets, list) else [packets]:
            if self.muxed == self._after:
                self.file_bytes_at_failure = self.file.stat().st_size
                raise self._error
            self._container.mux(packet)
            self.muxed += 1


@pytest.mark.parametrize(
    ("error", "raised"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), InvalidInputError),  # reported as our error
        (RuntimeError("interrupted"), RuntimeError),  # anything else passes through, still cleaned up
    ],
)
def test_failed_mp4_write_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException, raised: type[BaseException]
) -> None:
    target = tmp_path / "clip.mp4"
    target.write_bytes(b"the previous video")
    real_open = av.open
    opened: list[_FailingOutput] = []

    def failing_open(file: str, *args: Any, **kwargs: Any) -> _FailingOutput:
        opened.append(_FailingOutput(real_open(file, *args, **kwargs), file, after=4, error=error))
        return opened[-1]

    monkeypatch.setattr(av, "open", failing_open)
    with pytest.raises(raised, match="No space left" if raised is InvalidInputError else "interrupted"):
        write_video(_pattern(), target, fps=16)
    (output,) = opened
    assert output.muxed == 4 and output.file_bytes_at_failure > 0  # it failed half-way through a real file
    assert output.file != target and output.file.parent == tmp_path  # ... a temporary sibling
    assert target.read_bytes() == b"the previous video"  # the old file is untouched
    assert sorted(tmp_path.iterdir()) == [target]  # and the half file is gone


def test_mp4_without_pyav_says_how_to_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` now raises ImportError
    name = "causal_forcing_core._video_io_without_av"
    spec = importlib.util.spec_from_file_location(name, video_io.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)  # the module itself imports without PyAV

    frames = _pattern(3)
    with pytest.raises(InvalidInputError, match=r"Writing clip\.mp4 needs PyAV.*pip install av.*\.webp, \.gif or PNG"):
        module.write_video(frames, tmp_path / "clip.mp4")
    assert not list(tmp_path.iterdir())  # nothing started
    (tmp_path / "old.mp4").write_bytes(b"x")
    with pytest.raises(InvalidInputError, match="pip install av"):
        module.read_video_frames(tmp_path / "old.mp4")
    assert module.write_video(frames, tmp_path / "clip.webp", lossless=True).codec == "webp-lossless"
    assert np.array_equal(module.read_video_frames(tmp_path / "clip.webp"), frames)


def test_read_bad_mp4_raises(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="does not exist"):
        read_video_frames(tmp_path / "absent.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all" * 100)
    with pytest.raises(InvalidInputError, match="Cannot read .*junk.mp4"):
        read_video_frames(tmp_path / "junk.mp4")


def test_webp_lossless_and_lossy(tmp_path: Path) -> None:
    frames = _pattern()
    result = write_video(frames, tmp_path / "clip.webp", fps=16, lossless=True)
    assert result.codec == "webp-lossless"
    back = read_video_frames(result.path)
    _check_moving(back)
    assert np.array_equal(back, frames)
    lossy = read_video_frames(write_video(frames, tmp_path / "lossy.webp", quality=80).path)
    assert lossy.shape == frames.shape
    assert np.abs(lossy.astype(int) - frames.astype(int)).mean() < 10
    with Image.open(result.path) as im:
        im.load()
        assert im.n_frames == T and im.info.get("loop") == 0 and im.info.get("duration") in (62, 63)


def test_gif_round_trip(tmp_path: Path) -> None:
    frames = _pattern()
    result = write_video(frames, tmp_path / "clip.gif", fps=16)
    assert result.codec == "gif"
    back = read_video_frames(result.path)
    _check_moving(back)
    assert np.abs(back.astype(int) - frames.astype(int)).mean() < 8  # palette quantisation only
    with Image.open(result.path) as im:
        assert im.info.get("loop") == 0


def test_png_directory_and_pattern(tmp_path: Path) -> None:
    frames = _pattern()
    result = write_video(frames, tmp_path / "pngs")
    assert result.codec == "png" and len(result.files) == T
    assert result.files[0].name == "frames_00000.png"
    assert np.array_equal(read_video_frames(tmp_path / "pngs"), frames)
    result = write_video(frames, tmp_path / "pat" / "f_%03d.png")
    assert [p.name for p in result.files][:2] == ["f_000.png", "f_001.png"]
    assert np.array_equal(read_video_frames(result.path), frames)


def test_unwritable_paths_raise(tmp_path: Path) -> None:
    frames = _pattern(2)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(InvalidInputError, match="exists as a file"):
        write_video(frames, blocker / "clip.mp4")
    (tmp_path / "dir.mp4").mkdir()
    with pytest.raises(InvalidInputError, match="directory"):
        write_video(frames, tmp_path / "dir.mp4")
    with pytest.raises(InvalidInputError, match="exists as a file"):
        write_video(frames, blocker / "frames")
    with pytest.raises(InvalidInputError, match="suffix"):
        write_video(frames, tmp_path / "clip.avi")


def test_bad_frames_raise(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="frames_to_uint8"):
        write_video(np.zeros((2, 3, 8, 8), np.float32), tmp_path / "x.mp4")
    with pytest.raises(InvalidInputError, match="dtype"):
        write_video(np.zeros((2, 8, 8, 3), np.int32), tmp_path / "x.mp4")
    with pytest.raises(InvalidInputError, match="fps"):
        write_video(_pattern(2), tmp_path / "x.mp4", fps=0)


# ------------------------------------------------------------------------------------------ frames_to_uint8
def test_frames_to_uint8_ranges_and_batch() -> None:
    video = torch.linspace(-1, 1, 3 * 2 * 2).reshape(1, 1, 3, 2, 2).repeat(1, 2, 1, 1, 1)
    out = frames_to_uint8(video)
    assert out.shape == (2, 2, 2, 3) and out.dtype == np.uint8
    assert out.min() == 0 and out.max() == 255
    unit = frames_to_uint8(torch.full((2, 3, 4, 4), 0.5), value_range=(0, 1))
    assert unit.shape == (2, 4, 4, 3) and np.all(unit == 128)
    with pytest.raises(InvalidInputError, match="batch_index"):
        frames_to_uint8(torch.zeros(2, 1, 3, 4, 4))
    assert frames_to_uint8(torch.zeros(2, 1, 3, 4, 4), batch_index=1).shape == (1, 4, 4, 3)


# --------------------------------------------------------------------------------------------- load_image
def _save(tmp_path: Path, image: Image.Image, name: str) -> Path:
    path = tmp_path / name
    image.save(path)
    return path


def test_load_image_modes_convert(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (40, 20), (255, 0, 0, 0))  # fully transparent red -> white
    out = load_image(_save(tmp_path, rgba, "rgba.png"), 16, 32, mode="stretch")
    assert out.shape == (1, 3, 1, 16, 32) and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.ones_like(out))

    grey = Image.new("L", (32, 16), 0)
    torch.testing.assert_close(load_image(_save(tmp_path, grey, "l.png"), 16, 32), -torch.ones(1, 3, 1, 16, 32))

    deep = Image.fromarray(np.full((16, 32), 65535, np.uint16))
    assert deep.mode.startswith("I")
    out = load_image(_save(tmp_path, deep, "i16.png"), 16, 32)
    torch.testing.assert_close(out, torch.ones_like(out))

    pal = Image.new("P", (32, 16), 0)
    pal.putpalette([0, 0, 255] + [0] * 765)
    out = load_image(_save(tmp_path, pal, "p.png"), 16, 32)
    torch.testing.assert_close(out[0, :, 0, 0, 0], torch.tensor([-1.0, -1.0, 1.0]))

    cmyk = Image.new("CMYK", (32, 16), (0, 0, 0, 0))
    out = load_image(_save(tmp_path, cmyk, "cmyk.jpg"), 16, 32)
    assert out.min() > 0.9  # no ink = white


def _two_tone(width: int, height: int) -> Image.Image:
    """Left half red, right half green, with a blue band across the top quarter."""
    arr = np.zeros((height, width, 3), np.uint8)
    arr[:, : width // 2] = (255, 0, 0)
    arr[:, width // 2 :] = (0, 255, 0)
    arr[: height // 4] = (0, 0, 255)
    return Image.fromarray(arr)


def test_load_image_crop_pad_stretch_geometry(tmp_path: Path) -> None:
    path = _save(tmp_path, _two_tone(128, 32), "wide.png")  # 4:1 into 32x32
    crop = load_image(path, 32, 32, mode="crop")[0, :, 0]
    # cover then centre crop: the middle of the wide image, red on the left, green on the right, band on top
    assert crop[0, 16, 2] > 0.9 and crop[1, 16, -3] > 0.9 and crop[2, 1, 16] > 0.9

    pad = load_image(path, 32, 32, mode="pad")[0, :, 0]
    # fit: 32x8 picture centred, black bars above and below
    assert torch.all(pad[:, :10] == -1) and torch.all(pad[:, -10:] == -1)
    assert pad[0, 16, 2] > 0.9 and pad[1, 16, -3] > 0.9
    edge = load_image(path, 32, 32, mode="pad", padding="edge")[0, :, 0]
    assert edge[2, 0, 16] > 0.9 and edge[0, -1, 2] > 0.9  # top rows repeat the blue band, bottom rows the red

    stretch = load_image(path, 32, 32, mode="stretch")[0, :, 0]
    assert stretch[0, 20, 4] > 0.9 and stretch[1, 20, -5] > 0.9 and stretch[2, 1, 16] > 0.9

    tall = _save(tmp_path, _two_tone(32, 128), "tall.png")
    crop_tall = load_image(tall, 32, 32, mode="crop")[0, :, 0]
    assert crop_tall[2].max() < 0  # the blue band at the very top is cropped away


def test_load_image_bad_sizes_and_files(tmp_path: Path) -> None:
    path = _save(tmp_path, _two_tone(32, 32), "ok.png")
    with pytest.raises(InvalidInputError, match="480 or 496"):
        load_image(path, 481, 832)
    with pytest.raises(InvalidInputError, match="Nearest valid: 16"):
        load_image(path, 480, 0)
    with pytest.raises(InvalidInputError, match="mode"):
        load_image(path, 32, 32, mode="zoom")
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_image(tmp_path / "absent.png", 32, 32)
    (tmp_path / "not_image.png").write_text("hello")
    with pytest.raises(InvalidInputError, match="Cannot read"):
        load_image(tmp_path / "not_image.png", 32, 32)


# ------------------------------------------------------------------------------------------ all-or-nothing outputs
def _frames_with_value(t: int, value: int) -> np.ndarray:
    return np.full((t, 16, 16, 3), value, np.uint8)


def test_a_png_folder_is_replaced_as_a_whole(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    write_video(_frames_with_value(10, 10), folder)
    result = write_video(_frames_with_value(5, 200), folder)
    assert sorted(p.name for p in folder.iterdir()) == [f"frames_{i:05d}.png" for i in range(5)]
    assert np.array_equal(read_video_frames(folder), _frames_with_value(5, 200))
    assert result.path == folder / "frames_%05d.png" and len(result.files) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]  # no temporary or old folder left


def test_a_failed_png_folder_write_leaves_the_old_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "frames"
    write_video(_frames_with_value(10, 10), folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    real_save, saved = Image.Image.save, []

    def failing_save(self: Image.Image, fp: Any, *args: Any, **kwargs: Any) -> None:
        if len(saved) == 3:
            Path(fp).write_bytes(b"\x89PNG truncated")  # a half frame ...
            raise OSError(errno.ENOSPC, "No space left on device")
        saved.append(fp)
        real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(InvalidInputError, match="No space left on device"):
        write_video(_frames_with_value(5, 200), folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # ... never under a valid name here
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]


def test_a_png_folder_holding_other_files_is_refused_untouched(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(InvalidInputError, match=r"holds other things than PNG frames \(notes\.txt\).*new or empty"):
        write_video(_frames_with_value(2, 1), folder)
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]


def test_a_pattern_drops_the_frames_of_a_longer_old_video(tmp_path: Path) -> None:
    write_video(_frames_with_value(10, 10), tmp_path / "f_%03d.png")
    (tmp_path / "other.png").write_bytes(b"not ours")
    write_video(_frames_with_value(5, 200), tmp_path / "f_%03d.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"f_{i:03d}.png" for i in range(5)] + ["other.png"]
    assert np.array_equal(read_video_frames(tmp_path / "f_%03d.png"), _frames_with_value(5, 200))


def test_outputs_get_the_permissions_of_normal_new_files(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        clip = write_video(_frames_with_value(3, 5), tmp_path / "clip.webp").path
        folder = tmp_path / "pngs"
        write_video(_frames_with_value(3, 5), folder)
    finally:
        os.umask(old)
    assert clip.stat().st_mode & 0o777 == 0o644
    assert folder.stat().st_mode & 0o777 == 0o755
    assert {p.stat().st_mode & 0o777 for p in folder.iterdir()} == {0o644}


def test_check_video_target_refuses_before_writing_and_creates_nothing(tmp_path: Path) -> None:
    from causal_forcing_core.video_io import check_fps, check_video_target

    assert check_video_target(tmp_path / "new" / "deeper" / "clip.mp4") == "mp4"
    assert check_video_target(tmp_path / "pngs") == "png-folder"
    assert check_video_target(tmp_path / "f_%05d.png") == "png-pattern"
    assert not (tmp_path / "new").exists()
    for name in ("clip.avi", "clip.MOV"):
        with pytest.raises(InvalidInputError, match=r"unknown video suffix '\.(avi|mov)'. Use \.mp4, \.webp, \.gif"):
            check_video_target(tmp_path / name)
    assert check_video_target(tmp_path / "CLIP.MP4") == "mp4"
    for fps in (0, -3, 5000, float("nan")):
        with pytest.raises(InvalidInputError, match="fps must be a positive number of frames per second up to 1000"):
            check_fps(fps)
    assert check_fps(16) == 16.0


def test_write_results_read_as_one_line(tmp_path: Path) -> None:
    result = write_video(_pattern(), tmp_path / "clip.webp", lossless=True)
    assert str(result) == f"{T} frames {W}x{H} webp-lossless at 16 fps, {result.nbytes / 1e3:.1f} kB"
    assert result.nbytes == (tmp_path / "clip.webp").stat().st_size
    big = VideoWriteResult(Path("x.mp4"), 81, (832, 480), 16.0, "h264", nbytes=2_100_000)
    assert str(big) == "81 frames 832x480 h264 at 16 fps, 2.1 MB"


def test_writing_an_mp4_prints_nothing_but_our_log_line(tmp_path: Path) -> None:
    """FFmpeg's encoder probing (libx264's "using cpu capabilities" ...) must not reach stderr, even with the
    application logging at DEBUG and PyAV's FFmpeg log level raised."""
    import subprocess

    code = (
        "import logging, numpy as np, av\n"
        "logging.basicConfig(level=logging.DEBUG, format='%(name)s %(message)s')\n"
        "av.logging.set_level(av.logging.VERBOSE)\n"
        "from causal_forcing_core.video_io import write_video, read_video_frames\n"
        f"write_video(np.zeros((9, 32, 32, 3), np.uint8), {str(tmp_path / 'x.mp4')!r})\n"
        f"read_video_frames({str(tmp_path / 'x.mp4')!r})\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == ["causal_forcing_core.video_io Wrote x.mp4 (h264 yuv420p 32x32, 16 fps, 9 frames)"]
