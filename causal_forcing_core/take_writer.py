"""Write a video take to an mp4 while it is made, chunk by chunk: crash-safe, browser-playable, little memory.

:class:`TakeWriter` takes chunks of frames (``[t, 3, H, W]`` float in [0, 1], torch on any device, or ``[t, H, W,
3]`` uint8 numpy), makes them uint8 ``[t, H, W, 3]`` on the caller's thread and passes them over a bounded queue (a
full one blocks the caller: back-pressure, not RAM) to a thread that encodes with :mod:`.h264`'s mp4 settings
(H.264 yuv420p, BT.601 limited-range tags, odd sizes padded even) at x264 preset ``veryfast``.

The mp4 is *fragmented* (``empty_moov``: the header holds no sample table; a ``moof`` + ``mdat`` fragment per
keyframe, at least one a second) and each fragment is flushed to the file when complete, so a process killed at any
moment leaves a file that ffmpeg and browsers play up to its last complete fragment; the frames in the encoder's
lookahead and the open fragment (about a second) are lost (power loss mid-fragment leaves that one cut short;
players stop there). A full disk (ENOSPC, or EFBIG past a size limit) stops the writer: the next ``write`` or
``close`` raises :class:`.TakeWriteError` naming the file and the frames kept, and the cut fragment is removed, so
the file plays. :func:`new_take` numbers takes ``prefix_00001.mp4``, ``prefix_00002.mp4`` ...
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import InvalidInputError, TakeWriteError
from .h264 import MP4_CODEC, MP4_CRF, add_h264_stream, import_h264, pad_even
from .video_io import VideoWriteResult, check_file_target, check_fps, ensure_parent, frames_to_uint8

logger = logging.getLogger(__name__)

LIVE_PRESET = "veryfast"  # x264 speed for live runs
FRAGMENTED_MP4 = {"movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"}


class TakeWriter:
    """Append frames to the new mp4 ``path`` in a background thread (see the module docstring).

    The file is created at once, exclusively (:class:`InvalidInputError` if it exists: a take never overwrites),
    and the encoder opens on the first :meth:`write`, which fixes the frame size. ``frames_written`` counts the
    frames handed to the muxer, ``frames_on_disk`` those in complete fragments in the file. Use it as a context
    manager or call :meth:`close`; a process that ends without it loses the last second, as in a crash.
    """

    def __init__(self, path: str | Path, fps: float, *, crf: int = MP4_CRF, max_queued_chunks: int = 4) -> None:
        self.path, self.fps, self.crf = Path(path).expanduser(), check_fps(fps), int(crf)
        self._av = import_h264(self.path.name)
        check_file_target(self.path, "take")
        ensure_parent(self.path)
        try:
            self.path.open("xb").close()
        except FileExistsError as err:
            raise InvalidInputError(f"Cannot start the take {self.path}: the file exists (takes never overwrite). "
                                    "Choose another name, or use new_take(folder, prefix, fps).") from err
        except OSError as err:
            raise InvalidInputError(f"Cannot create the take {self.path}: {err.strerror or err}.") from None
        self.frames_written = self.frames_on_disk = self._frames_encoded = self._bytes_on_disk = 0
        self._queue: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=max(1, int(max_queued_chunks)))
        self._size: tuple[int, int] | None = None  # (width, height) of the frames given, before padding
        self._container: Any = None  # the PyAV output and its stream, from the first write
        self._stream: Any = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None  # what stopped the thread
        self._result: VideoWriteResult | None = None  # set by close()

    @property
    def error(self) -> BaseException | None:
        """What stopped the encoding thread (an ``OSError`` such as ENOSPC, an av error), or None."""
        return self._error

    def write(self, frames: torch.Tensor | np.ndarray) -> None:
        """Queue a chunk ``[t, 3, H, W]`` float in [0, 1] (torch, any device, or numpy) or ``[t, H, W, 3]`` uint8,
        ``H, W`` as in the first; blocks while ``max_queued_chunks`` wait. :class:`InvalidInputError` for a bad chunk
        (none of it is written, the take goes on), :class:`.TakeWriteError` once the thread has failed."""
        self._raise_failure()
        if self._result is not None:
            raise InvalidInputError(f"The take {self.path} is closed; start a new take to write more frames.")
        data = _to_uint8(frames)
        height, width = data.shape[1:3]
        if self._size is not None and (width, height) != self._size:
            raise InvalidInputError(f"The take {self.path.name} holds {self._size[0]}x{self._size[1]} frames; a chunk "
                                    f"of {width}x{height} frames cannot join it (one frame size per take).")
        if len(data) == 0:
            return
        data = pad_even(data, quiet=self._size is not None)
        if self._thread is None:
            self._open((data.shape[2], data.shape[1]))
            self._size = (width, height)
        self._queue.put(data)

    def close(self) -> VideoWriteResult:
        """Flush the encoder, finish the file, stop the thread; the :class:`VideoWriteResult` (``size`` as written,
        after even padding). Idempotent. A take that never got a frame removes its empty file and returns
        ``frames=0``. Raises :class:`.TakeWriteError` if writing failed (the file keeps what was written)."""
        if self._result is None:
            if self._thread is not None and self._thread.is_alive():
                self._queue.put(None)
                self._thread.join()
            self._raise_failure()
            if self._thread is None:
                self.path.unlink(missing_ok=True)
            size = (self._stream.width, self._stream.height) if self._stream is not None else (0, 0)
            nbytes = self.path.stat().st_size if self.frames_written else 0
            self._result = VideoWriteResult(self.path, self.frames_written, size, self.fps, MP4_CODEC, nbytes=nbytes)
            logger.info("Wrote the take %s: %s", self.path, self._result)
        return self._result

    def __enter__(self) -> TakeWriter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        try:
            self.close()
        except TakeWriteError:
            if exc_type is None:  # else the error that ended the with-block is the one to show (the thread logged)
                raise

    # ------------------------------------------------------------------------------------------ thread side
    def _open(self, size: tuple[int, int]) -> None:
        try:
            self._container = self._av.open(str(self.path), mode="w", format="mp4", container_options=FRAGMENTED_MP4)
            gop = str(max(1, round(self.fps)))  # a keyframe, so a fragment, every second
            self._stream = add_h264_stream(self._container, self.fps, size,
                                           {"crf": str(self.crf), "preset": LIVE_PRESET, "g": gop})
        except (self._av.FFmpegError, OSError) as err:
            raise TakeWriteError(f"Cannot start writing the take {self.path}: {err.strerror or err}.") from err
        self._thread = threading.Thread(target=self._run, name=f"take-writer {self.path.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while (chunk := self._queue.get()) is not None:
                for rgb in chunk:
                    frame = self._av.VideoFrame.from_ndarray(rgb, format="rgb24")
                    frame.pts, self._frames_encoded = self._frames_encoded, self._frames_encoded + 1
                    self._mux(self._stream.encode(frame))
            self._mux(self._stream.encode(None))  # the frames x264 still holds (lookahead, B-frames)
            self._container.close()
            self.frames_on_disk = self.frames_written
        except BaseException as err:  # kept for the caller's next write() / close()
            self._error = err
            logger.error("Writing the take %s stopped: %s", self.path, err)
            with contextlib.suppress(Exception):
                self._container.close()
            with contextlib.suppress(OSError):  # cut a fragment written only in part (the disk filled up in it)
                os.truncate(self.path, self._bytes_on_disk)
            while self._queue.get() is not None:  # keep taking chunks so that no caller blocks on a full queue
                pass

    def _mux(self, packets: list[Any]) -> None:
        for packet in packets:
            keyframe = packet.is_keyframe  # muxing it writes out the fragment before it
            self._container.mux(packet)
            if keyframe:
                self.frames_on_disk, self._bytes_on_disk = self.frames_written, os.path.getsize(self.path)
            self.frames_written += 1

    def _raise_failure(self) -> None:
        err = self._error
        if err is None:
            return
        cause = getattr(err, "strerror", None) or str(err) or type(err).__name__
        kept = (f"The file keeps the first {self.frames_on_disk} frames (the complete fragments) and plays."
                if self.frames_on_disk else "No complete fragment reached the file.")
        raise TakeWriteError(f"Writing the take to {self.path} failed after {self.frames_written} frames ({cause}). "
                             f"{kept}") from err


def _to_uint8(frames: torch.Tensor | np.ndarray) -> np.ndarray:
    """One chunk as ``[t, H, W, 3]`` uint8: uint8 numpy as it is, float torch/numpy ``[t, 3, H, W]`` in [0, 1]."""
    if isinstance(frames, np.ndarray) and frames.dtype == np.uint8:
        if frames.ndim == 4 and frames.shape[-1] == 3:
            return np.ascontiguousarray(frames)
    elif (frames.is_floating_point() if isinstance(frames, torch.Tensor)
          else isinstance(frames, np.ndarray) and frames.dtype.kind == "f"):
        return frames_to_uint8(frames, value_range=(0.0, 1.0))
    raise InvalidInputError("A take chunk must be float frames [t, 3, H, W] in [0, 1] (torch or numpy) or uint8 numpy "
                            f"[t, H, W, 3], got {type(frames).__name__} {tuple(getattr(frames, 'shape', ()))} "
                            f"{getattr(frames, 'dtype', '')}.")


def next_take_path(folder: str | Path, prefix: str) -> Path:
    """``folder/prefix_00001.mp4``, numbered one past the highest take already there (so names sort by time);
    creates ``folder``. :func:`new_take` creates the file."""
    if not prefix or Path(prefix).name != prefix:
        raise InvalidInputError(f"A take prefix must be a plain file name part like 'live', got {prefix!r}.")
    folder = Path(folder).expanduser()
    ensure_parent(folder / prefix)
    pattern = re.compile(re.escape(prefix) + r"_(\d{5,})\.mp4")
    numbers = [int(m.group(1)) for p in folder.iterdir() if (m := pattern.fullmatch(p.name))]
    return folder / f"{prefix}_{max(numbers, default=0) + 1:05d}.mp4"


def new_take(folder: str | Path, prefix: str, fps: float, **options: Any) -> TakeWriter:
    """A :class:`TakeWriter` (``options`` go to it) on :func:`next_take_path`, the one place that picks a name."""
    while True:
        path = next_take_path(folder, prefix)
        try:
            return TakeWriter(path, fps, **options)
        except InvalidInputError as err:  # another run created that name since the scan: scan again
            if not isinstance(err.__cause__, FileExistsError):
                raise
