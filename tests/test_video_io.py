"""Video files out and back in (mp4 / webp / gif / PNG frames), I2V image loading, frame conversion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

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
def test_mp4_round_trip(tmp_path: Path) -> None:
    frames = _pattern()
    result = write_video(frames, tmp_path / "clip.mp4", fps=16)
    assert isinstance(result, VideoWriteResult)
    assert result.codec in ("avc1", "H264", "mp4v")
    assert (result.frames, result.size, result.fps) == (T, (W, H), 16.0)
    back = read_video_frames(result.path)
    _check_moving(back)
    assert np.abs(back.astype(int) - frames.astype(int)).mean() < 12  # lossy but close
    assert not list(tmp_path.glob(".*partial*"))  # no temporary files left


def test_mp4_from_float_torch_and_odd_size(tmp_path: Path) -> None:
    frames = torch.from_numpy(_pattern(5, 47, 63)).float() / 255
    result = write_video(frames, tmp_path / "sub" / "odd.mp4")  # missing parent is created
    assert result.size == (64, 48)  # padded to even by repeating the last row/column
    back = read_video_frames(result.path)
    assert back.shape == (5, 48, 64, 3)
    assert np.abs(back[:, :47, :63].astype(int) - _pattern(5, 47, 63).astype(int)).mean() < 12


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
