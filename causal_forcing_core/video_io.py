"""Video files in and out: mp4, animated webp/gif, PNG frames, and reading them back.

Frame layouts:

- files and :func:`write_video` use ``[T, H, W, 3]`` RGB, ``uint8`` or float in ``[0, 1]`` (numpy or torch);
- the core uses ``[B, T, 3, H, W]`` float; the Wan VAE gives ``[-1, 1]`` and the preview decoders ``[0, 1]``, so
  :func:`frames_to_uint8` takes the range explicitly (default ``(-1, 1)``);
- I2V input images are loaded by :mod:`.image_io`.

MP4 goes through OpenCV's ``VideoWriter``: H.264 (``avc1``, then ``H264``) when this OpenCV build can encode it and
the written file reads back, else MPEG-4 Part 2 (``mp4v``), which every OpenCV wheel with FFmpeg has but browsers
may not play. The codec used is logged and returned. H.264 and MPEG-4 need even sizes, so odd heights/widths are
padded by repeating the last row/column (the returned size says what was written). Files are written under a
temporary name next to the target and renamed at the end, so a failed write never leaves a half file behind.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageSequence, UnidentifiedImageError

from .errors import InvalidInputError

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".webp", ".gif")
DEFAULT_PNG_PATTERN = "frames_%05d.png"
H264_FOURCCS = ("avc1", "H264")
FALLBACK_FOURCC = "mp4v"

_fourcc_cannot_open: set[str] = set()  # fourccs whose writer failed to open in this process; not probed again


@dataclass(frozen=True)
class VideoWriteResult:
    """What :func:`write_video` wrote.

    ``path`` is the file, or for PNG frames the ``%``-pattern (``files`` lists the frames); ``size`` is
    (width, height) as written (after even padding for mp4); ``codec`` is the fourcc for mp4, else
    ``webp`` / ``webp-lossless`` / ``gif`` / ``png``.
    """

    path: Path
    frames: int
    size: tuple[int, int]
    fps: float
    codec: str
    files: tuple[Path, ...] = ()


# --------------------------------------------------------------------------------------------- frame tensors
def frames_to_uint8(
    video: torch.Tensor | np.ndarray,
    value_range: tuple[float, float] = (-1.0, 1.0),
    batch_index: int | None = None,
) -> np.ndarray:
    """``[B, T, 3, H, W]`` or ``[T, 3, H, W]`` float in ``value_range`` -> ``[T, H, W, 3]`` uint8 (numpy, CPU).

    ``value_range`` is ``(-1, 1)`` for Wan VAE decodes, ``(0, 1)`` for preview decoders and ComfyUI IMAGEs; values
    outside it are clipped. With a batch dimension, ``B`` must be 1 unless ``batch_index`` picks one element.
    """
    arr = video.detach().to("cpu", torch.float32).numpy() if isinstance(video, torch.Tensor) else np.asarray(video)
    if arr.ndim == 5:
        if batch_index is None:
            if arr.shape[0] != 1:
                raise InvalidInputError(
                    f"frames_to_uint8 got a batch of {arr.shape[0]} videos {tuple(arr.shape)}; pass batch_index=i to "
                    "pick one (files hold one video each)."
                )
            batch_index = 0
        if not -arr.shape[0] <= batch_index < arr.shape[0]:
            raise InvalidInputError(f"batch_index {batch_index} is out of range for a batch of {arr.shape[0]} videos.")
        arr = arr[batch_index]
    if arr.ndim != 4 or arr.shape[1] != 3:
        raise InvalidInputError(
            f"frames_to_uint8 expects [B, T, 3, H, W] or [T, 3, H, W] frames, got shape {tuple(arr.shape)}. "
            "Frames already channel-last [T, H, W, 3] can go to write_video directly."
        )
    low, high = float(value_range[0]), float(value_range[1])
    if not high > low:
        raise InvalidInputError(f"value_range must be (low, high) with high > low, got {value_range}.")
    arr = np.nan_to_num(arr.astype(np.float32), nan=low)
    scaled = (arr - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1).copy()


def _as_uint8_frames(frames: Any) -> np.ndarray:
    """``[T, H, W, 3]`` uint8 from uint8 / float [0, 1] numpy or torch (or a sequence of [H, W, 3] frames)."""
    if isinstance(frames, torch.Tensor):
        arr = frames.detach().cpu()
        arr = arr.float().numpy() if arr.is_floating_point() else arr.numpy()
    elif isinstance(frames, np.ndarray):
        arr = frames
    elif isinstance(frames, Sequence) and frames:
        arr = np.stack([_as_uint8_frames(f[None])[0] for f in frames])
    else:
        raise InvalidInputError(
            f"write_video needs frames [T, H, W, 3] as a numpy array or torch tensor, got {type(frames).__name__}."
        )
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[0] == 0:
        hint = ""
        if arr.ndim in (4, 5) and arr.shape[-3] == 3:
            hint = " Channel-first [.., T, 3, H, W] frames: convert with frames_to_uint8(video, value_range=...)."
        raise InvalidInputError(
            f"write_video expects at least one RGB frame as [T, H, W, 3], got shape {tuple(arr.shape)}.{hint}"
        )
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if np.issubdtype(arr.dtype, np.floating):
        arr = np.nan_to_num(arr.astype(np.float32), nan=0.0)
        return np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)
    raise InvalidInputError(
        f"write_video expects uint8 frames or float frames in [0, 1], got dtype {arr.dtype}. Convert first, e.g. "
        "frames.astype(np.uint8) for 0..255 integers."
    )


# --------------------------------------------------------------------------------------------------- paths
def _ensure_parent(path: Path) -> None:
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InvalidInputError(
            f"Cannot write {path}: a part of its folder {parent} exists as a file. Choose another output path."
        ) from None
    except OSError as err:
        raise InvalidInputError(
            f"Cannot create the output folder {parent} for {path}: {err.strerror or err}."
        ) from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InvalidInputError(f"Cannot write {path}: no permission to write in {parent}. Choose another folder.")


def _check_file_target(path: Path) -> None:
    if path.is_dir():
        raise InvalidInputError(
            f"Cannot write the video file {path}: a directory with that name exists. Choose another name, or give a "
            f"directory without a video suffix to write PNG frames ({DEFAULT_PNG_PATTERN})."
        )
    _ensure_parent(path)
    if path.exists() and not os.access(path, os.W_OK):
        raise InvalidInputError(f"Cannot overwrite {path}: the file is read-only. Delete it or choose another name.")


def _temp_sibling(path: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent)
    os.close(fd)
    return Path(name)


def _finish(tmp: Path, path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp made it private; give it the permissions of a normal new file
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise InvalidInputError(f"Cannot move the finished video to {path}: {err.strerror or err}.") from None


# --------------------------------------------------------------------------------------------------- writers
def _pad_even(frames: np.ndarray) -> np.ndarray:
    _, h, w, _ = frames.shape
    pad_h, pad_w = h % 2, w % 2
    if not (pad_h or pad_w):
        return frames
    logger.info("Padding %dx%d frames to %dx%d (H.264/MPEG-4 need even sizes)", w, h, w + pad_w, h + pad_h)
    return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def _count_readable_frames(path: Path) -> int:
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return 0
        count = 0
        while True:
            ok, _ = cap.read()
            if not ok:
                return count
            count += 1
    finally:
        cap.release()


def _open_writer(path: Path, fourcc: str, fps: float, size: tuple[int, int]) -> Any:
    import cv2

    log = getattr(getattr(cv2, "utils", None), "logging", None)
    old_level = log.getLogLevel() if log is not None else None
    if log is not None:
        log.setLogLevel(log.LOG_LEVEL_SILENT)  # a failed H.264 probe is expected; FFmpeg may still print a line
    try:
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), float(fps), size)
    finally:
        if log is not None and old_level is not None:
            log.setLogLevel(old_level)
    if not writer.isOpened():
        writer.release()
        return None
    return writer


def _write_mp4(frames: np.ndarray, path: Path, fps: float) -> tuple[str, tuple[int, int]]:
    import cv2

    frames = _pad_even(frames)
    size = (frames.shape[2], frames.shape[1])
    bgr = frames[..., ::-1]
    tried: list[str] = []
    for fourcc in (*H264_FOURCCS, FALLBACK_FOURCC):
        if fourcc in _fourcc_cannot_open:
            continue
        tmp = _temp_sibling(path)
        try:
            writer = _open_writer(tmp, fourcc, fps, size)
            if writer is None:
                tried.append(f"{fourcc} (writer did not open)")
                if fourcc != FALLBACK_FOURCC:
                    _fourcc_cannot_open.add(fourcc)
                continue
            try:
                for frame in bgr:
                    writer.write(np.ascontiguousarray(frame))
            finally:
                writer.release()
            readable = _count_readable_frames(tmp)
            if readable < 1:
                tried.append(f"{fourcc} (file not readable)")
                continue
            if readable != len(frames):
                logger.warning("%s: wrote %d frames, %d read back", path.name, len(frames), readable)
            _finish(tmp, path)
            tmp = None
            if tried:
                logger.info("Wrote %s with %s after trying %s", path.name, fourcc, "; ".join(tried))
            else:
                logger.info("Wrote %s with %s", path.name, fourcc)
            return fourcc, size
        except cv2.error as err:
            tried.append(f"{fourcc} ({err})")
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
    raise InvalidInputError(
        f"OpenCV could not write {path} with any codec ({'; '.join(tried)}). Write .webp, .gif or PNG frames instead, "
        "or install an OpenCV build with FFmpeg (pip install opencv-python)."
    )


def _write_pillow(frames: np.ndarray, path: Path, fps: float, quality: int, lossless: bool) -> str:
    images = [Image.fromarray(f) for f in frames]
    duration = max(1, round(1000.0 / fps))  # ms per frame; GIF stores 10 ms units, so 16 fps plays at ~16.7
    fmt = "WEBP" if path.suffix.lower() == ".webp" else "GIF"
    options: dict[str, Any] = {"save_all": True, "append_images": images[1:], "duration": duration, "loop": 0}
    if fmt == "WEBP":
        options.update(quality=int(quality), lossless=bool(lossless), method=4)
    else:
        options.update(optimize=False, disposal=1)
    tmp = _temp_sibling(path)
    try:
        images[0].save(tmp, format=fmt, **options)
        _finish(tmp, path)
    except OSError as err:
        raise InvalidInputError(f"Cannot write {path}: {err.strerror or err}.") from None
    finally:
        tmp.unlink(missing_ok=True)
    codec = "webp-lossless" if fmt == "WEBP" and lossless else fmt.lower()
    logger.info("Wrote %s (%s, %d frames)", path.name, codec, len(frames))
    return codec


def _png_pattern(path: Path, num_frames: int) -> Path:
    if "%" in path.name:
        try:
            path.name % 0
        except (TypeError, ValueError):
            raise InvalidInputError(
                f"PNG pattern {path.name!r} is not a valid %-pattern; use one like {DEFAULT_PNG_PATTERN!r}."
            ) from None
        return path
    if path.suffix.lower() == ".png":
        return path if num_frames == 1 else path.with_name(f"{path.stem}_%05d.png")
    return path / DEFAULT_PNG_PATTERN


def _write_pngs(frames: np.ndarray, path: Path) -> tuple[Path, tuple[Path, ...]]:
    if path.suffix.lower() != ".png" and "%" not in path.name and path.exists() and not path.is_dir():
        raise InvalidInputError(
            f"Cannot write PNG frames into {path}: it exists as a file. Give a directory, a .mp4/.webp/.gif file "
            f"name, or a pattern like {DEFAULT_PNG_PATTERN}."
        )
    pattern = _png_pattern(path, len(frames))
    if pattern.is_dir():
        raise InvalidInputError(f"Cannot write PNG frames to {pattern}: a directory has that name.")
    _ensure_parent(pattern)
    files = []
    for i, frame in enumerate(frames):
        target = pattern.with_name(pattern.name % i) if "%" in pattern.name else pattern
        try:
            Image.fromarray(frame).save(target, format="PNG")
        except OSError as err:
            raise InvalidInputError(f"Cannot write {target}: {err.strerror or err}.") from None
        files.append(target)
    logger.info("Wrote %d PNG frames as %s", len(files), pattern)
    return pattern, tuple(files)


def write_video(
    frames: torch.Tensor | np.ndarray | Sequence[np.ndarray],
    path: str | Path,
    fps: float = 16,
    *,
    quality: int = 90,
    lossless: bool = False,
) -> VideoWriteResult:
    """Write ``frames`` ``[T, H, W, 3]`` (uint8, or float in [0, 1]) to ``path``, chosen by its suffix.

    - ``.mp4``: OpenCV, H.264 when available else ``mp4v`` (see the module docstring); odd sizes padded to even.
    - ``.webp`` (animated; ``quality`` 0-100, or ``lossless``) and ``.gif`` (256-colour palette): Pillow, looping.
    - a directory (no suffix), ``name_%05d.png``-style pattern, or ``name.png``: PNG frames
      (``frames_%05d.png`` inside a directory; ``name_%05d.png`` for ``name.png`` with several frames).

    Returns a :class:`VideoWriteResult`. Raises :class:`InvalidInputError` for bad frames, a bad fps, an unknown
    suffix or a path that cannot be written (folder cannot be created, directory in the way, no permission).
    """
    data = _as_uint8_frames(frames)
    try:
        fps = float(fps)
    except (TypeError, ValueError):
        fps = float("nan")
    if not 0 < fps <= 1000:
        raise InvalidInputError(f"fps must be a positive number of frames per second (e.g. 16), got {fps!r}.")
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    height, width = data.shape[1:3]
    if suffix == ".mp4":
        _check_file_target(path)
        codec, size = _write_mp4(data, path, fps)
        return VideoWriteResult(path, len(data), size, float(fps), codec)
    if suffix in (".webp", ".gif"):
        _check_file_target(path)
        codec = _write_pillow(data, path, fps, quality, lossless)
        return VideoWriteResult(path, len(data), (width, height), float(fps), codec)
    if suffix in ("", ".png") or "%" in path.name or path.is_dir():
        pattern, files = _write_pngs(data, path)
        return VideoWriteResult(pattern, len(data), (width, height), float(fps), "png", files)
    raise InvalidInputError(
        f"Cannot write {path.name}: unknown video suffix {suffix!r}. Use .mp4, .webp, .gif, a directory or a PNG "
        f"pattern like {DEFAULT_PNG_PATTERN}."
    )


# --------------------------------------------------------------------------------------------------- readers
def _png_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix.lower() == ".png" and p.is_file())
    match = re.fullmatch(r"(.*)%0?\d*d(.*)", path.name)
    if match:
        regex = re.compile(re.escape(match.group(1)) + r"(\d+)" + re.escape(match.group(2)))
        if not path.parent.is_dir():
            return []
        hits = [(m, p) for p in path.parent.iterdir() if (m := regex.fullmatch(p.name))]
        return [p for m, p in sorted(hits, key=lambda mp: int(mp[0].group(1)))]
    return [path] if path.is_file() else []


def read_video_frames(path: str | Path) -> np.ndarray:
    """Read a video written by :func:`write_video` back as ``[T, H, W, 3]`` uint8 RGB.

    ``.mp4`` through OpenCV, ``.webp``/``.gif`` through Pillow, a directory or ``%``-pattern as sorted PNG frames.
    """
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix == ".mp4":
        import cv2

        if not path.is_file():
            raise InvalidInputError(f"Video {path} does not exist.")
        cap = cv2.VideoCapture(str(path))
        frames = []
        try:
            if not cap.isOpened():
                raise InvalidInputError(f"OpenCV cannot open {path} as a video (corrupt or unsupported codec).")
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                frames.append(frame[..., ::-1])
        finally:
            cap.release()
        if not frames:
            raise InvalidInputError(f"{path} holds no readable frames.")
        return np.ascontiguousarray(np.stack(frames))
    files = _png_files(path) if suffix in ("", ".png") or "%" in path.name or path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise InvalidInputError(f"No video or frames found at {path}.")
    out: list[np.ndarray] = []
    for file in files:
        try:
            with Image.open(file) as im:
                out.extend(np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(im))
        except (UnidentifiedImageError, OSError) as err:
            raise InvalidInputError(f"Cannot read {file} as an image or animation: {err}.") from None
    sizes = {f.shape for f in out}
    if len(sizes) != 1:
        raise InvalidInputError(f"Frames at {path} have different sizes {sorted(sizes)}; cannot stack them.")
    return np.stack(out)
