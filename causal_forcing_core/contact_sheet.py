"""A contact sheet: a few frames of each chunk of a video in one PNG, one row per chunk, a label above each row."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .errors import InvalidInputError

#: pixels around and between the tiles
PAD = 4
LABEL_HEIGHT = 14
BACKGROUND = (16, 16, 16)
TEXT = (235, 235, 235)


def pick_frames(num_frames: int, count: int) -> list[int]:
    """``count`` frame indices spread evenly over ``num_frames`` (first and last included; fewer if too short)."""
    if num_frames < 1:
        raise InvalidInputError("A contact-sheet row needs at least one frame.")
    return sorted({round(i) for i in np.linspace(0, num_frames - 1, min(count, num_frames))})


def contact_sheet(
    rows: Sequence[np.ndarray], labels: Sequence[str], *, frames_per_row: int = 4, scale: int = 2
) -> Image.Image:
    """One row per entry of ``rows`` (each [T, H, W, 3] uint8, all the same H and W): ``frames_per_row`` frames
    spread over the row's frames, scaled ``scale`` times (nearest neighbour), with ``labels[i]`` written above row i
    in PIL's default font. Returns an RGB image."""
    if not rows or len(rows) != len(labels):
        raise InvalidInputError(f"contact_sheet needs one label per row, got {len(rows)} rows and {len(labels)} labels.")
    if frames_per_row < 1 or scale < 1:
        raise InvalidInputError(f"frames_per_row and scale must be >= 1, got {frames_per_row} and {scale}.")
    h, w = rows[0].shape[1:3]
    for row in rows:
        if row.ndim != 4 or row.shape[1:] != (h, w, 3) or row.dtype != np.uint8:
            raise InvalidInputError(f"Contact-sheet rows must be [T, {h}, {w}, 3] uint8, got {row.dtype} {row.shape}.")
    tile_w, tile_h = w * scale, h * scale
    sheet_w = PAD + frames_per_row * (tile_w + PAD)
    row_h = LABEL_HEIGHT + tile_h + PAD
    sheet = Image.new("RGB", (sheet_w, PAD + len(rows) * row_h), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for r, (row, label) in enumerate(zip(rows, labels)):
        top = PAD + r * row_h
        draw.text((PAD, top), label, fill=TEXT, font=font)
        for c, index in enumerate(pick_frames(row.shape[0], frames_per_row)):
            tile = Image.fromarray(row[index]).resize((tile_w, tile_h), Image.NEAREST)
            sheet.paste(tile, (PAD + c * (tile_w + PAD), top + LABEL_HEIGHT))
    return sheet


def write_contact_sheet(path: str | Path, rows: Sequence[np.ndarray], labels: Sequence[str], **kwargs: int) -> Path:
    """:func:`contact_sheet` saved as a PNG at ``path``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    contact_sheet(rows, labels, **kwargs).save(path, format="PNG")
    return path
