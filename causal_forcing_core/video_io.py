"""Video files in and out: mp4, animated webp/gif, PNG frames, and reading them back.

Frame layouts:

- files and :func:`write_video` use ``[T, H, W, 3]`` RGB, ``uint8`` or float in ``[0, 1]`` (numpy or torch);
- the core uses ``[B, T, 3, H, W]`` float; the Wan VAE gives ``[-1, 1]`` and the preview decoders ``[0, 1]``, so
  :func:`frames_to_uint8` takes the range explicitly (default ``(-1, 1)``);
- I2V input images are loaded by :mod:`.image_io`.

MP4 goes through PyAV (FFmpeg, what ComfyUI itself uses; ``pip install av``, imported only when an mp4 is written or
read), set up in :mod:`.h264`: H.264 (libx264, ``crf`` :data:`.h264.MP4_CRF`), pixel format ``yuv420p``, the
frame rate as an exact rational (16 fps is 16/1, 29.97 is 2997/100) and the index at the front (``+faststart``, so
browsers start playing before the whole file has loaded): every player and browser opens the file. RGB becomes YUV with FFmpeg's default BT.601
limited-range matrix, and the stream is tagged so, so players do not have to guess. H.264 with yuv420p needs even
sizes, so odd heights/widths are padded by repeating the last row/column (the returned size says what was written).
Outputs are all-or-nothing: files are written under a temporary name next to the target and renamed at the end, a
folder of PNG frames is written as a temporary sibling folder and renamed into place, so a failed write never leaves
a half file, a truncated frame under a valid name, or old and new frames mixed. :func:`check_video_target` says,
without writing anything, whether :func:`write_video` can write a path (the command line asks it before generating).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageSequence, UnidentifiedImageError

from .errors import InvalidInputError
from .h264 import MP4_CODEC, MP4_PIX_FMT, add_h264_stream, fps_rational, import_av, import_h264, pad_even

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".webp", ".gif")
#: the highest frame rate write_video accepts (above it a number is a mistake, e.g. a frame count)
MAX_FPS = 1000
DEFAULT_PNG_PATTERN = "frames_%05d.png"


@dataclass(frozen=True)
class VideoWriteResult:
    """What :func:`write_video` wrote.

    ``path`` is the file, or for PNG frames the ``%``-pattern (``files`` lists the frames); ``size`` is
    (width, height) as written (after even padding for mp4); ``codec`` is ``h264`` for mp4, else
    ``webp`` / ``webp-lossless`` / ``gif`` / ``png``.
    """

    path: Path
    frames: int
    size: tuple[int, int]
    fps: float
    codec: str
    files: tuple[Path, ...] = ()
    #: bytes written (all frames together for PNGs)
    nbytes: int = 0

    def __str__(self) -> str:
        """One line for logs: ``81 frames 832x480 h264 at 16 fps, 2.1 MB``."""
        width, height = self.size
        amount = f"{self.nbytes / 1e6:.1f} MB" if self.nbytes >= 100_000 else f"{self.nbytes / 1e3:.1f} kB"
        return f"{self.frames} frames {width}x{height} {self.codec} at {self.fps:g} fps, {amount}"


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
def _parent_problem(path: Path) -> str | None:
    """Why the folder of ``path`` cannot be created or written to (None when it can), without creating it."""
    parent = path.parent
    existing = next((p for p in (parent, *parent.parents) if p.exists() or p.is_symlink()), None)
    if existing is not None and not existing.is_dir():
        return f"Cannot write {path}: a part of its folder {parent} exists as a file. Choose another output path."
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        where = parent if existing == parent else f"{existing} (to create {parent})"
        return f"Cannot write {path}: no permission to write in {where}. Choose another folder."
    return None


def ensure_parent(path: Path) -> None:
    """Create the folder of ``path`` (and its parents); :class:`InvalidInputError` saying why it cannot be."""
    problem = _parent_problem(path)
    if problem:
        raise InvalidInputError(problem)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InvalidInputError(
            f"Cannot create the output folder {path.parent} for {path}: {err.strerror or err}."
        ) from None


def check_file_target(path: Path, what: str = "video file") -> None:
    """Raise :class:`InvalidInputError` unless a file can be written at ``path`` (a folder is not in the way, its
    folder exists or can be created and is writable, an existing file is not read-only); nothing is created.
    ``what`` names the file in messages ("timing report")."""
    if path.is_dir():
        png = (f", or give a directory without a video suffix to write PNG frames ({DEFAULT_PNG_PATTERN})"
               if what == "video file" else "")
        raise InvalidInputError(
            f"Cannot write the {what} {path}: a directory with that name exists. Choose another name{png}."
        )
    problem = _parent_problem(path)
    if problem:
        raise InvalidInputError(problem)
    if path.exists() and not os.access(path, os.W_OK):
        raise InvalidInputError(f"Cannot overwrite {path}: the file is read-only. Delete it or choose another name.")


def check_fps(fps: float) -> float:
    """``fps`` as a float; :class:`InvalidInputError` unless it is a number in (0, :data:`MAX_FPS`]."""
    try:
        value = float(fps)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0 < value <= MAX_FPS:
        raise InvalidInputError(
            f"fps must be a positive number of frames per second up to {MAX_FPS} (e.g. 16), got {fps!r}."
        )
    return value


def output_kind(path: str | Path) -> str:
    """What :func:`write_video` makes of ``path``: ``"mp4"``, ``"webp"``, ``"gif"``, ``"png-folder"`` (a folder,
    or a name without suffix), ``"png-pattern"`` (``name_%05d.png``) or ``"png"`` (one ``name.png``, a pattern
    ``name_%05d.png`` for several frames); :class:`InvalidInputError` for any other suffix (.avi, .mov ...)."""
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return suffix[1:]
    if "%" in path.name:
        return "png-pattern"
    if suffix == ".png":
        return "png"
    if suffix == "" or path.is_dir():
        return "png-folder"
    raise InvalidInputError(
        f"Cannot write {path.name}: unknown video suffix {suffix!r}. Use .mp4, .webp, .gif, a directory or a PNG "
        f"pattern like {DEFAULT_PNG_PATTERN}."
    )


def _foreign_files(folder: Path) -> list[str]:
    """Entries of an existing PNG output folder that are not PNG frames (they would be lost when it is replaced)."""
    try:
        return sorted(p.name for p in folder.iterdir() if not (p.is_file() and p.suffix.lower() == ".png"))
    except OSError as err:
        raise InvalidInputError(f"Cannot look into the output folder {folder}: {err.strerror or err}.") from None


def check_video_target(path: str | Path) -> str:
    """Raise :class:`InvalidInputError` unless :func:`write_video` can write ``path`` (its suffix, its folder, what
    is in the way), without writing or creating anything; returns :func:`output_kind`."""
    path = Path(path).expanduser()
    kind = output_kind(path)
    if kind in ("mp4", "webp", "gif"):
        check_file_target(path)
    elif kind == "png-folder":
        if path.exists() and not path.is_dir():
            raise InvalidInputError(
                f"Cannot write PNG frames into {path}: it exists as a file. Give a directory, a .mp4/.webp/.gif file "
                f"name, or a pattern like {DEFAULT_PNG_PATTERN}."
            )
        foreign = _foreign_files(path) if path.is_dir() else []
        if foreign:
            raise InvalidInputError(
                f"Cannot write PNG frames into {path}: the folder holds other things than PNG frames "
                f"({', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}), and writing replaces the whole "
                "folder. Give a new or empty folder."
            )
        problem = _parent_problem(path)  # the new folder is made beside it and renamed into place
        if problem:
            raise InvalidInputError(problem)
    else:
        if kind == "png-pattern":
            try:
                path.name % 0
            except (TypeError, ValueError):
                raise InvalidInputError(
                    f"PNG pattern {path.name!r} is not a valid %-pattern; use one like {DEFAULT_PNG_PATTERN!r}."
                ) from None
        if path.is_dir():
            raise InvalidInputError(f"Cannot write PNG frames to {path}: a directory has that name.")
        problem = _parent_problem(path)
        if problem:
            raise InvalidInputError(problem)
    return kind


def _private_to_normal(path: Path, mode: int = 0o666) -> None:
    """mkstemp / mkdtemp make private entries; give ``path`` the permissions of a normal new one (the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, mode & ~umask)


def _temp_sibling(path: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent)
    os.close(fd)
    return Path(name)


def _finish(tmp: Path, path: Path) -> None:
    try:
        _private_to_normal(tmp)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise InvalidInputError(f"Cannot move the finished video to {path}: {err.strerror or err}.") from None


# --------------------------------------------------------------------------------------------------- writers
def _write_mp4(frames: np.ndarray, path: Path, fps: float) -> tuple[str, tuple[int, int]]:
    av = import_h264(path.name)
    frames = pad_even(frames)
    height, width = frames.shape[1:3]
    tmp = _temp_sibling(path)
    try:
        with av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
            stream = add_h264_stream(container, fps, (width, height))
            for index, rgb in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame.pts = index
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))  # flush the frames x264 still holds (lookahead, B-frames)
        _finish(tmp, path)
    except (av.FFmpegError, OSError) as err:
        raise InvalidInputError(f"Cannot write {path}: {err.strerror or err}.") from None
    finally:
        tmp.unlink(missing_ok=True)
    logger.debug("Wrote %s (%s %s %dx%d, %s fps, %d frames)", path.name, MP4_CODEC, MP4_PIX_FMT, width, height,
                 fps_rational(fps), len(frames))
    return MP4_CODEC, (width, height)


def _read_mp4(path: Path) -> np.ndarray:
    if not path.is_file():
        raise InvalidInputError(f"Video {path} does not exist.")
    av = import_av(f"Reading {path.name}")
    try:
        with av.open(str(path), mode="r") as container:
            if not container.streams.video:
                raise InvalidInputError(f"{path} holds no video stream.")
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])]
    except av.FFmpegError as err:
        raise InvalidInputError(f"Cannot read {path} as a video (corrupt or unsupported codec): {err}.") from None
    if not frames:
        raise InvalidInputError(f"{path} holds no readable frames.")
    return np.ascontiguousarray(np.stack(frames))


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
    logger.debug("Wrote %s (%s, %d frames)", path.name, codec, len(frames))
    return codec


def _save_png(frame: np.ndarray, target: Path, shown: Path) -> None:
    try:
        Image.fromarray(frame).save(target, format="PNG")
    except OSError as err:
        raise InvalidInputError(f"Cannot write {shown}: {err.strerror or err}.") from None


def _write_png_folder(frames: np.ndarray, folder: Path) -> tuple[Path, tuple[Path, ...]]:
    """Every frame into a temporary sibling folder, then that folder renamed into place (an old one is replaced
    as a whole: set aside, the new one renamed in, the old one deleted; on failure the old one stays)."""
    ensure_parent(folder)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".partial", dir=folder.parent))
    old: Path | None = None
    try:
        names = [DEFAULT_PNG_PATTERN % i for i in range(len(frames))]
        for name, frame in zip(names, frames):
            _save_png(frame, tmp / name, folder / name)
        _private_to_normal(tmp, 0o777)
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old", dir=folder.parent))
            old.rmdir()  # a free name beside it (renaming onto a folder fails on Windows)
            os.replace(folder, old)
        os.replace(tmp, folder)
    except OSError as err:
        raise InvalidInputError(f"Cannot write the PNG frames into {folder}: {err.strerror or err}.") from None
    finally:
        if tmp.exists():  # it failed before the rename: the old folder goes back if it was set aside
            shutil.rmtree(tmp, ignore_errors=True)
            if old is not None and not folder.exists():
                os.replace(old, folder)
        if old is not None and old.exists():
            shutil.rmtree(old, ignore_errors=True)
    return folder / DEFAULT_PNG_PATTERN, tuple(folder / name for name in names)


def _write_png_files(frames: np.ndarray, path: Path) -> tuple[Path, tuple[Path, ...]]:
    """``name.png`` (one frame) or a ``%``-pattern: each frame under a temporary name, then all renamed into place,
    then the pattern's frames left from an older, longer video removed."""
    pattern = path if "%" in path.name or len(frames) == 1 else path.with_name(f"{path.stem}_%05d.png")
    ensure_parent(pattern)
    targets = [pattern.with_name(pattern.name % i) if "%" in pattern.name else pattern for i in range(len(frames))]
    temps: list[Path] = []
    try:
        for target, frame in zip(targets, frames):
            temps.append(_temp_sibling(target))
            _save_png(frame, temps[-1], target)
            _private_to_normal(temps[-1])
        for tmp, target in zip(temps, targets):
            os.replace(tmp, target)
    except OSError as err:
        raise InvalidInputError(f"Cannot write {pattern}: {err.strerror or err}.") from None
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
    if "%" in pattern.name:
        for stale in set(_png_files(pattern)) - set(targets):
            stale.unlink(missing_ok=True)
    return pattern, tuple(targets)


def write_video(
    frames: torch.Tensor | np.ndarray | Sequence[np.ndarray],
    path: str | Path,
    fps: float = 16,
    *,
    quality: int = 90,
    lossless: bool = False,
) -> VideoWriteResult:
    """Write ``frames`` ``[T, H, W, 3]`` (uint8, or float in [0, 1]) to ``path``, chosen by its suffix.

    - ``.mp4``: PyAV, H.264 yuv420p (see the module docstring); odd sizes padded to even.
    - ``.webp`` (animated; ``quality`` 0-100, or ``lossless``) and ``.gif`` (256-colour palette): Pillow, looping.
    - a directory (no suffix), ``name_%05d.png``-style pattern, or ``name.png``: PNG frames
      (``frames_%05d.png`` inside a directory; ``name_%05d.png`` for ``name.png`` with several frames).

    An existing output is overwritten as a whole, and only once the new one is complete: a file is replaced; a PNG
    folder is replaced by a folder holding exactly the new frames (a folder holding anything but PNG files is
    refused rather than emptied); a pattern's frames are replaced and those past the new last frame removed. A
    failed write leaves the old output as it was.

    Returns a :class:`VideoWriteResult`. Raises :class:`InvalidInputError` for bad frames, a bad fps, an unknown
    suffix, a path that cannot be written (folder cannot be created, directory in the way, no permission), or an
    ``.mp4`` without PyAV installed.
    """
    data = _as_uint8_frames(frames)
    fps = check_fps(fps)
    path = Path(path).expanduser()
    kind = check_video_target(path)
    height, width = data.shape[1:3]
    files: tuple[Path, ...] = ()
    if kind == "mp4":
        ensure_parent(path)
        codec, size = _write_mp4(data, path, fps)
    elif kind in ("webp", "gif"):
        ensure_parent(path)
        codec, size = _write_pillow(data, path, fps, quality, lossless), (width, height)
    else:
        writer = _write_png_folder if kind == "png-folder" else _write_png_files
        (path, files), codec, size = writer(data, path), "png", (width, height)
        logger.debug("Wrote %d PNG frames as %s", len(files), path)
    nbytes = sum(f.stat().st_size for f in files) if files else path.stat().st_size
    return VideoWriteResult(path, len(data), size, fps, codec, files, nbytes)


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

    ``.mp4`` through PyAV, ``.webp``/``.gif`` through Pillow, a directory or ``%``-pattern as sorted PNG frames.
    """
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix == ".mp4":
        return _read_mp4(path)
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
