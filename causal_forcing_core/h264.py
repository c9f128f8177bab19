"""H.264 in mp4 through PyAV: the one set-up every mp4 this package writes shares (:func:`.video_io.write_video`,
:class:`.take_writer.TakeWriter`): libx264 at CRF :data:`MP4_CRF`, yuv420p, the frame rate as an exact rational,
BT.601 limited-range tags, even sizes. PyAV is imported only when an mp4 is written or read."""

from __future__ import annotations

import logging
from fractions import Fraction
from typing import Any

import numpy as np

from .errors import InvalidInputError

logger = logging.getLogger(__name__)

MP4_ENCODER = "libx264"  # FFmpeg's H.264 encoder; the PyAV wheels on PyPI ship it
MP4_CODEC = "h264"  # what VideoWriteResult.codec says for mp4
MP4_PIX_FMT = "yuv420p"
MP4_CRF = 18  # x264 constant quality: 0 lossless .. 51 worst; ~18 looks like the source
MP4_PRESET = "medium"
_BT601_MATRIX = 6  # AVCOL_SPC_SMPTE170M (H.273 code point): the RGB->YUV matrix FFmpeg's swscale uses by default
_LIMITED_RANGE = 1  # AVCOL_RANGE_MPEG: Y in 16..235, what swscale writes for yuv420p
_FPS_MAX_DENOMINATOR = 1001  # 29.97 -> 2997/100, 30000/1001 stays 30000/1001
_NO_AV = (
    "needs PyAV for .mp4 files, and it is not installed. Install it with `pip install av`, or write .webp, .gif or "
    "PNG frames instead (a folder, or a name like frames_%05d.png)."
)


def pad_even(frames: np.ndarray, quiet: bool = False) -> np.ndarray:
    """``[T, H, W, 3]`` padded to even H, W (last row/column repeated); ``quiet``: without the log line."""
    _, h, w, _ = frames.shape
    pad_h, pad_w = h % 2, w % 2
    if not (pad_h or pad_w):
        return frames
    if not quiet:
        logger.info("Padding %dx%d frames to %dx%d (H.264 yuv420p needs even sizes)", w, h, w + pad_w, h + pad_h)
    return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def import_av(action: str) -> Any:
    """The ``av`` module, or :class:`InvalidInputError` saying how to get it (``action``: "Writing x.mp4")."""
    try:
        import av
    except ImportError:
        raise InvalidInputError(f"{action} {_NO_AV}") from None
    return av


def import_h264(name: str) -> Any:
    """:func:`import_av` once it has :data:`MP4_ENCODER`, else :class:`InvalidInputError` saying what to do."""
    av = import_av(f"Writing {name}")
    try:
        av.codec.Codec(MP4_ENCODER, "w")
    except ValueError:  # av.codec.codec.UnknownCodecError
        raise InvalidInputError(
            f"Cannot write {name}: this PyAV/FFmpeg build has no {MP4_ENCODER} (H.264) encoder. Install the "
            "PyPI wheel (`pip install --force-reinstall av`), or write .webp, .gif or PNG frames instead."
        ) from None
    return av


def fps_rational(fps: float) -> Fraction:
    """``fps`` as the exact rational the container stores: 16 -> 16/1, 29.97 -> 2997/100."""
    return Fraction(fps).limit_denominator(_FPS_MAX_DENOMINATOR)


def add_h264_stream(container: Any, fps: float, size: tuple[int, int], options: dict[str, str] | None = None) -> Any:
    """Every mp4's stream on an output ``container``: H.264 (``options`` override crf, preset), yuv420p, BT.601 tags."""
    codec_options = {"crf": str(MP4_CRF), "preset": MP4_PRESET, **(options or {})}
    stream = container.add_stream(MP4_ENCODER, rate=fps_rational(fps), options=codec_options)
    stream.width, stream.height = size
    stream.pix_fmt = MP4_PIX_FMT
    stream.codec_context.colorspace = _BT601_MATRIX
    stream.codec_context.color_range = _LIMITED_RANGE
    return stream
