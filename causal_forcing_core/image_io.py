"""Input images for image-to-video: any Pillow mode to 8-bit RGB, fitted to the video size.

:func:`load_image` returns ``[1, 3, 1, H, W]`` float32 in ``[-1, 1]`` (reference §2.4), ready for the VAE encoder.
Sizes: ``crop`` covers then centre-crops (default), ``pad`` fits then pads, ``stretch`` resizes without keeping the
aspect ratio (what the reference does).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InvalidInputError

RESIZE_MODES = ("crop", "pad", "stretch")
PAD_MODES = ("black", "edge")
SIZE_MULTIPLE = 16


def _nearest_sizes(value: Any) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return f"{SIZE_MULTIPLE}, {2 * SIZE_MULTIPLE}, ..."
    low = max(SIZE_MULTIPLE, int(v // SIZE_MULTIPLE) * SIZE_MULTIPLE)
    high = max(SIZE_MULTIPLE, low + SIZE_MULTIPLE if v > low else low)
    return str(low) if low == high else f"{low} or {high}"


def _check_size(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0 or value % SIZE_MULTIPLE:
        raise InvalidInputError(
            f"{name} must be a positive multiple of {SIZE_MULTIPLE} pixels (the VAE downsamples x8 and the DiT "
            f"patches 2x2), got {value!r}. Nearest valid: {_nearest_sizes(value)}."
        )
    return int(value)


def _flatten_alpha(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _to_rgb8(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB: alpha composited on white, 16/32-bit and float greyscale rescaled."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        return _flatten_alpha(image)
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(image).astype(np.float64)
        # 16-bit greyscale: Pillow opens 16-bit PNG/TIFF as I;16 (or I in older versions), values 0..65535
        grey = np.clip(np.rint(arr / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode == "F":
        arr = np.nan_to_num(np.asarray(image).astype(np.float64))
        scale = 255.0 if arr.max(initial=0.0) <= 1.0 else 1.0
        return Image.fromarray(np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)).convert("RGB")
    try:
        return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, HSV ...
    except (ValueError, OSError) as err:
        raise InvalidInputError(f"Cannot convert an image in Pillow mode {mode!r} to RGB: {err}.") from None


def _resize(image: Image.Image, height: int, width: int, mode: str, padding: str) -> Image.Image:
    src_w, src_h = image.size
    resample = Image.Resampling.LANCZOS
    if mode == "stretch":
        return image.resize((width, height), resample)
    if mode == "crop":
        scale = max(width / src_w, height / src_h)
        new_w, new_h = max(width, round(src_w * scale)), max(height, round(src_h * scale))
        resized = image.resize((new_w, new_h), resample)
        left, top = (new_w - width) // 2, (new_h - height) // 2
        return resized.crop((left, top, left + width, top + height))
    scale = min(width / src_w, height / src_h)
    new_w = min(width, max(1, round(src_w * scale)))
    new_h = min(height, max(1, round(src_h * scale)))
    resized = np.asarray(image.resize((new_w, new_h), resample))
    top, left = (height - new_h) // 2, (width - new_w) // 2
    pads = ((top, height - new_h - top), (left, width - new_w - left), (0, 0))
    if padding == "edge":
        return Image.fromarray(np.pad(resized, pads, mode="edge"))
    return Image.fromarray(np.pad(resized, pads, mode="constant", constant_values=0))


def load_image(
    path: str | Path, height: int = 480, width: int = 832, mode: str = "crop", *, padding: str = "black"
) -> torch.Tensor:
    """Read an I2V start image as ``[1, 3, 1, height, width]`` float32 in [-1, 1].

    ``mode``: ``"crop"`` scales to cover the target then centre-crops (keeps aspect, loses borders); ``"pad"`` scales
    to fit then pads (``padding`` ``"black"`` or ``"edge"``); ``"stretch"`` resizes to exactly the target like the
    reference ``inference.py --i2v`` (distorts aspect). EXIF rotation is applied; RGBA/LA/transparent-P images are
    composited on white; L, P, CMYK, 16-bit (``I;16``, ``I``) and float images are converted to 8-bit RGB.
    """
    height = _check_size("height", height)
    width = _check_size("width", width)
    if mode not in RESIZE_MODES:
        raise InvalidInputError(f"Unknown resize mode {mode!r}; expected one of {', '.join(RESIZE_MODES)}.")
    if padding not in PAD_MODES:
        raise InvalidInputError(f"Unknown padding {padding!r}; expected one of {', '.join(PAD_MODES)}.")
    path = Path(path).expanduser()
    if not path.is_file():
        raise InvalidInputError(
            f"Image {path} does not exist (or is not a file); give the path of a PNG/JPEG/WebP image."
        )
    try:
        with Image.open(path) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened) or opened
            image = _to_rgb8(image)
    except (UnidentifiedImageError, OSError) as err:
        raise InvalidInputError(f"Cannot read {path} as an image: {err}.") from None
    if min(image.size) < 1:
        raise InvalidInputError(f"Image {path} is empty ({image.size[0]}x{image.size[1]}).")
    resized = _resize(image, height, width, mode, padding)
    arr = np.asarray(resized.convert("RGB"), dtype=np.float32)
    tensor = torch.from_numpy(arr.copy()).permute(2, 0, 1).div_(127.5).sub_(1.0)
    return tensor.reshape(1, 3, 1, height, width).contiguous()


def fit_image_tensor(image: torch.Tensor, height: int, width: int, mode: str = "crop") -> torch.Tensor:
    """A ComfyUI ``IMAGE`` [N, H, W, 3] (or [H, W, 3]) in [0, 1] -> its first frame as ``[1, 3, 1, height, width]``
    float32 in [-1, 1], resized like :func:`load_image` (``crop`` / ``pad`` / ``stretch``)."""
    height = _check_size("height", height)
    width = _check_size("width", width)
    if mode not in RESIZE_MODES:
        raise InvalidInputError(f"Unknown resize mode {mode!r}; expected one of {', '.join(RESIZE_MODES)}.")
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4 or image.shape[0] < 1 or image.shape[-1] not in (1, 3, 4):
        raise InvalidInputError(f"Expected an IMAGE [N, H, W, 3] in [0, 1], got shape {list(image.shape)}.")
    frame = image[0, :, :, :3] if image.shape[-1] != 1 else image[0].expand(-1, -1, 3)
    arr = (frame.detach().float().clamp(0, 1).cpu().numpy() * 255.0).round().astype(np.uint8)
    pil = Image.fromarray(arr, mode="RGB")
    if pil.size != (width, height):
        pil = _resize(pil, height, width, mode, "black")
    out = torch.from_numpy(np.asarray(pil, dtype=np.float32).copy()).permute(2, 0, 1).div_(127.5).sub_(1.0)
    return out.reshape(1, 3, 1, height, width).contiguous()
