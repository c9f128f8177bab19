"""A deterministic analyser and scorer of toy-world videos (ground truth or decoded model output).

Per frame (:func:`analyse_frames`): the foreground is every pixel whose colour, after a 3x3 box blur (wrapping at
the edges), lies further than :data:`FOREGROUND_THRESHOLD` from :data:`.world.BACKGROUND`. A frame "has an object"
when its foreground covers between :data:`MIN_AREA_FRACTION` and :data:`MAX_AREA_FRACTION` times the rendered
object's nominal area (the square's) and its median core colour lies within :data:`COLOUR_MATCH_MAX` of a palette
colour. The frame is rolled so the circular mean of the foreground sits in the middle (undoing wrap-around); then

- colour = the nearest palette colour of the per-channel median of the foreground core;
- shape = from the bounding box of the contiguous foreground around the centre: ``triangle`` when the top and
  bottom halves hold clearly different amounts (area ratio below :data:`TRIANGLE_BALANCE_MAX`), else ``square``
  when the corners outside the inscribed ellipse are mostly filled (above :data:`SQUARE_CORNER_MIN`), else
  ``circle``;
- position = the foreground centroid (x, y) in pixels, weighted by contrast. For triangles this is the area
  centroid, a sixth of the size below the bounding-box centre that :attr:`.world.ToyClip.positions` records.

Per chunk (:func:`analyse_video`): majority colour and shape over the frames with an object, motion from the
shortest wrapped centroid displacement summed over consecutive frame steps inside the chunk, speed = |net
displacement| / frames stepped, direction = the dominant axis and sign, ``"none"`` below
:data:`MOTION_THRESHOLD` px/frame. A chunk of one frame has no motion.

A video's frame ranges come from the latent chunking (:func:`chunk_frame_ranges`).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise

import torch
import torch.nn.functional as F

from ..errors import InvalidInputError
from ..geometry import WAN21
from .world import BACKGROUND, COLOURS, DIRECTIONS, SHAPES, SPEEDS, Caption, ToyClip, object_size

logger = logging.getLogger(__name__)

#: Colour distance (RGB in [0, 1], Euclidean) from the background above which a blurred pixel is foreground.
FOREGROUND_THRESHOLD = 0.3
#: A frame has an object only if its foreground area lies within these multiples of the nominal object area.
MIN_AREA_FRACTION = 0.1
MAX_AREA_FRACTION = 4.0
#: The median foreground colour must lie this close to a palette colour, else the frame has no object.
COLOUR_MATCH_MAX = 0.4
#: Shape decision thresholds (calibrated on clean and blurred ground truth).
TRIANGLE_BALANCE_MAX = 0.75
SQUARE_CORNER_MIN = 0.3
#: Chunks moving slower than this (px/frame) have direction "none" and do not count as dynamic.
MOTION_THRESHOLD = 0.4
#: Largest centroid jump (px) between the last frame of a chunk and the first of the next that counts as continuous.
JUMP_THRESHOLD_PX = 6.0
#: Label of a missing attribute (no object found, no motion).
NONE = "none"

#: Chance levels of the accuracy metrics for a uniformly guessing model.
CHANCE: dict[str, float] = {
    "colour_accuracy": 1 / len(COLOURS),
    "shape_accuracy": 1 / len(SHAPES),
    "direction_accuracy": 1 / len(DIRECTIONS),
    "speed_accuracy": 1 / len(SPEEDS),
    "instruction_following": 1 / (len(COLOURS) * len(SHAPES) * len(DIRECTIONS)),
}

_PALETTE_NAMES = tuple(COLOURS)
_PALETTE = torch.tensor([COLOURS[n] for n in _PALETTE_NAMES], dtype=torch.float32) / 255.0  # [4, 3]
_BG = torch.tensor(BACKGROUND, dtype=torch.float32) / 255.0  # [3]


@dataclass(frozen=True)
class FrameAnalysis:
    """What one frame shows; ``found`` False means no object (the other fields are then meaningless)."""

    found: bool
    colour: str = NONE
    shape: str = NONE
    x: float = 0.0
    y: float = 0.0
    area: float = 0.0


@dataclass(frozen=True)
class ChunkAnalysis:
    """What one chunk (frame range) shows.

    ``colour``/``shape`` are ``"none"`` when no frame of the chunk has an object; ``direction`` is ``"none"`` when
    the chunk moves slower than :data:`MOTION_THRESHOLD`. ``object_found`` is the fraction of frames with an
    object; ``first_position``/``last_position`` are the centroids (x, y) of the chunk's first and last frames,
    None where those frames have no object.
    """

    colour: str
    shape: str
    direction: str
    speed_px_per_frame: float
    object_found: float
    displacement: tuple[float, float] = (0.0, 0.0)
    first_position: tuple[float, float] | None = None
    last_position: tuple[float, float] | None = None


@dataclass(frozen=True)
class VideoScores:
    """Per-chunk scores of one video (lists have one entry per chunk; ``continuity`` one per scored chunk pair)."""

    analyses: tuple[ChunkAnalysis, ...]
    colour_correct: tuple[bool, ...]
    shape_correct: tuple[bool, ...]
    direction_correct: tuple[bool, ...]
    speed_correct: tuple[bool, ...]
    continuity: tuple[bool, ...] = field(default=())

    @property
    def instruction_following(self) -> tuple[bool, ...]:
        """Per chunk: colour, shape and direction all right."""
        return tuple(c and s and d for c, s, d in zip(self.colour_correct, self.shape_correct, self.direction_correct))


def chunk_frame_ranges(num_latent_frames: int, frames_per_block: int) -> list[tuple[int, int]]:
    """Video frame ranges [start, end) of the latent blocks under the Wan VAE's 4x temporal compression.

    Latent frame 0 -> video frame 0, latent frame i > 0 -> video frames 4i-3 .. 4i; a block of latent frames
    [a, b) covers video frames [0 if a == 0 else 4a - 3, 4(b - 1) + 1). The last block may be shorter.
    Example: 6 latent frames, 3 per block -> [(0, 9), (9, 21)].
    """
    if num_latent_frames < 1 or frames_per_block < 1:
        raise InvalidInputError(
            f"chunk_frame_ranges needs num_latent_frames >= 1 and frames_per_block >= 1, got "
            f"{num_latent_frames} and {frames_per_block}."
        )
    ranges = []
    for a in range(0, num_latent_frames, frames_per_block):
        b = min(a + frames_per_block, num_latent_frames)
        ranges.append((WAN21.pixel_frames(a), WAN21.pixel_frames(b)))
    return ranges


def _check_frames(frames: torch.Tensor) -> torch.Tensor:
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[-1] != 3:
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise InvalidInputError(f"Toy videos must be a tensor [F, H, W, 3] with values in [0, 1], got {shape}.")
    if frames.shape[0] < 1 or frames.shape[1] < 8 or frames.shape[2] < 8:
        raise InvalidInputError(f"A toy video needs >= 1 frame of at least 8x8 pixels, got {tuple(frames.shape)}.")
    frames = frames.detach().to("cpu", torch.float32)
    if not torch.isfinite(frames).all():
        raise InvalidInputError("The toy video holds NaN or infinite values.")
    lo, hi = float(frames.min()), float(frames.max())
    if lo < -0.05 or hi > 1.05:
        logger.warning("Toy video values span [%.3f, %.3f]; expected [0, 1], clamping.", lo, hi)
    return frames.clamp(0.0, 1.0)


def _check_ranges(ranges: Sequence[tuple[int, int]], num_frames: int) -> list[tuple[int, int]]:
    out = [(int(a), int(b)) for a, b in ranges]
    if not out:
        raise InvalidInputError("Give at least one chunk frame range.")
    for a, b in out:
        if not 0 <= a < b <= num_frames:
            raise InvalidInputError(
                f"Chunk frame range ({a}, {b}) does not fit a video of {num_frames} frames; ranges are [start, "
                f"end) with 0 <= start < end <= {num_frames} (see chunk_frame_ranges)."
            )
    return out


def _circular_mean(weights: torch.Tensor, period: int) -> float:
    """Circular mean position (pixel-centre coordinates) of 1-D ``weights`` [L] on a circle of ``period``."""
    angle = (torch.arange(period, dtype=torch.float32) + 0.5) * (2 * math.pi / period)
    s = float((weights * torch.sin(angle)).sum())
    c = float((weights * torch.cos(angle)).sum())
    return (math.atan2(s, c) * period / (2 * math.pi)) % period


def _run_around(profile: torch.Tensor, centre: int) -> tuple[int, int]:
    """The contiguous run [lo, hi] of nonzero entries of ``profile`` [L] around (or nearest to) ``centre``."""
    nz = torch.nonzero(profile > 0).flatten()
    if nz.numel() == 0:
        return centre, centre
    if profile[centre] <= 0:
        centre = int(nz[(nz - centre).abs().argmin()])
    lo = hi = centre
    while lo > 0 and profile[lo - 1] > 0:
        lo -= 1
    while hi < profile.numel() - 1 and profile[hi + 1] > 0:
        hi += 1
    return lo, hi


def shape_features(mask: torch.Tensor) -> tuple[float, float]:
    """(top/bottom balance, corner fill) of a centred binary ``mask`` [H, W] (object around the middle).

    Balance = min/max of the foreground area above and below the bounding box's middle (1 for symmetric shapes,
    ~1/3 for a triangle). Corner fill = fraction of the bounding box outside its inscribed ellipse that is
    foreground (~1 square, ~0 circle).
    """
    h, w = mask.shape
    r0, r1 = _run_around(mask.sum(1), h // 2)
    c0, c1 = _run_around(mask[r0 : r1 + 1].sum(0), w // 2)
    box = mask[r0 : r1 + 1, c0 : c1 + 1].float()
    bh, bw = box.shape
    ry = (torch.arange(bh, dtype=torch.float32) + 0.5 - bh / 2) / (bh / 2)  # [-1, 1]
    rx = (torch.arange(bw, dtype=torch.float32) + 0.5 - bw / 2) / (bw / 2)
    top = float(box[ry < 0].sum())
    bottom = float(box[ry > 0].sum())
    balance = min(top, bottom) / max(top, bottom, 1e-6)
    outside = (ry[:, None] ** 2 + rx[None, :] ** 2) > 1.0
    corner = float(box[outside].sum()) / max(int(outside.sum()), 1)
    return balance, corner


def classify_shape(balance: float, corner: float) -> str:
    """The shape word for the features of :func:`shape_features`."""
    if balance < TRIANGLE_BALANCE_MAX:
        return "triangle"
    return "square" if corner >= SQUARE_CORNER_MIN else "circle"


def analyse_frames(frames: torch.Tensor) -> list[FrameAnalysis]:
    """Analyse every frame of ``frames`` [F, H, W, 3] (values in [0, 1]) on its own."""
    frames = _check_frames(frames)
    n, h, w, _ = frames.shape
    nominal_area = object_size(h, w) ** 2
    x = frames.permute(0, 3, 1, 2)  # [F, 3, H, W]
    smooth = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="circular"), 3, stride=1)
    dist = (smooth - _BG[None, :, None, None]).norm(dim=1)  # [F, H, W]
    fg = dist > FOREGROUND_THRESHOLD
    areas = fg.sum((1, 2))
    out: list[FrameAnalysis] = []
    for f in range(n):
        area = int(areas[f])
        if not MIN_AREA_FRACTION * nominal_area <= area <= MAX_AREA_FRACTION * nominal_area:
            out.append(FrameAnalysis(found=False, area=float(area)))
            continue
        mask = fg[f]
        weight = mask.float()
        cx = _circular_mean(weight.sum(0), w)
        cy = _circular_mean(weight.sum(1), h)
        sx, sy = round(w / 2 - cx), round(h / 2 - cy)
        mask_c = torch.roll(mask, (sy, sx), (0, 1))
        d = torch.roll(dist[f], (sy, sx), (0, 1))
        pix = torch.roll(x[f], (sy, sx), (1, 2))  # [3, H, W]
        # Colour: per-channel median of the core (the brighter half of the foreground).
        vals = d[mask_c]
        core = mask_c & (d >= 0.5 * torch.quantile(vals, 0.9))
        median = pix[:, core].median(dim=1).values  # [3]
        pd = (_PALETTE - median).norm(dim=1)
        k = int(pd.argmin())
        if float(pd[k]) > COLOUR_MATCH_MAX:
            out.append(FrameAnalysis(found=False, area=float(area)))
            continue
        balance, corner = shape_features(mask_c)
        # Centroid weighted by contrast (sub-pixel accuracy at anti-aliased edges), mapped back to frame coords.
        contrast = float((_PALETTE[k] - _BG).norm())
        wgt = (d / contrast).clamp(0.0, 1.0) * mask_c
        total = float(wgt.sum())
        px = float((wgt.sum(0) * (torch.arange(w) + 0.5)).sum()) / total
        py = float((wgt.sum(1) * (torch.arange(h) + 0.5)).sum()) / total
        out.append(
            FrameAnalysis(
                found=True,
                colour=_PALETTE_NAMES[k],
                shape=classify_shape(balance, corner),
                x=(px - sx) % w,
                y=(py - sy) % h,
                area=float(area),
            )
        )
    return out


def _wrapped(delta: float, period: int) -> float:
    return (delta + period / 2) % period - period / 2


def _majority(labels: Sequence[str], order: Sequence[str]) -> str:
    if not labels:
        return NONE
    counts = Counter(labels)
    return max(order, key=lambda word: (counts.get(word, 0), -order.index(word)))


def _direction(dx: float, dy: float, speed: float) -> str:
    if speed < MOTION_THRESHOLD:
        return NONE
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


def _analyse_chunk(per_frame: Sequence[FrameAnalysis], a: int, b: int, h: int, w: int) -> ChunkAnalysis:
    seen = [f for f in range(a, b) if per_frame[f].found]
    net_x = net_y = 0.0
    stepped = 0
    for f0, f1 in pairwise(seen):
        net_x += _wrapped(per_frame[f1].x - per_frame[f0].x, w)
        net_y += _wrapped(per_frame[f1].y - per_frame[f0].y, h)
        stepped += f1 - f0
    speed = math.hypot(net_x, net_y) / stepped if stepped else 0.0

    def position(f: int) -> tuple[float, float] | None:
        return (per_frame[f].x, per_frame[f].y) if per_frame[f].found else None

    return ChunkAnalysis(
        colour=_majority([per_frame[f].colour for f in seen], _PALETTE_NAMES),
        shape=_majority([per_frame[f].shape for f in seen], SHAPES),
        direction=_direction(net_x, net_y, speed),
        speed_px_per_frame=speed,
        object_found=len(seen) / (b - a),
        displacement=(net_x, net_y),
        first_position=position(a),
        last_position=position(b - 1),
    )


def analyse_video(frames: torch.Tensor, ranges: Sequence[tuple[int, int]]) -> list[ChunkAnalysis]:
    """Analyse each chunk [start, end) of ``frames`` [F, H, W, 3] (values in [0, 1])."""
    frames = _check_frames(frames)
    ranges = _check_ranges(ranges, frames.shape[0])
    per_frame = analyse_frames(frames)
    h, w = frames.shape[1:3]
    return [_analyse_chunk(per_frame, a, b, h, w) for a, b in ranges]


def _nearest_speed(speed: float) -> str:
    return min(SPEEDS, key=lambda name: abs(SPEEDS[name] - speed))


def _continuous(prev: ChunkAnalysis, nxt: ChunkAnalysis, h: int, w: int, jump_px: float) -> bool:
    if NONE in (prev.colour, prev.shape) or prev.colour != nxt.colour or prev.shape != nxt.shape:
        return False
    if prev.last_position is None or nxt.first_position is None:
        return False
    dx = _wrapped(nxt.first_position[0] - prev.last_position[0], w)
    dy = _wrapped(nxt.first_position[1] - prev.last_position[1], h)
    return math.hypot(dx, dy) <= jump_px


def score_video(
    frames: torch.Tensor,
    ranges: Sequence[tuple[int, int]],
    expected: Sequence[Caption],
    *,
    jump_px: float = JUMP_THRESHOLD_PX,
) -> VideoScores:
    """Score ``frames`` [F, H, W, 3] chunk by chunk against ``expected`` (one caption per range).

    Speed is right when the measured speed is nearer the expected speed word's px/frame than the other's.
    Continuity is scored for each consecutive chunk pair whose expected captions share colour and shape: the
    analysed colour and shape must stay the same and the centroid may move at most ``jump_px`` between the last
    frame of one chunk and the first frame of the next.
    """
    if len(expected) != len(ranges):
        raise InvalidInputError(f"Give one expected caption per chunk: {len(ranges)} ranges, {len(expected)} captions.")
    analyses = analyse_video(frames, ranges)
    h, w = frames.shape[1:3]
    continuity = tuple(
        _continuous(analyses[i], analyses[i + 1], h, w, jump_px)
        for i in range(len(analyses) - 1)
        if (expected[i].colour, expected[i].shape) == (expected[i + 1].colour, expected[i + 1].shape)
    )
    return VideoScores(
        analyses=tuple(analyses),
        colour_correct=tuple(a.colour == e.colour for a, e in zip(analyses, expected)),
        shape_correct=tuple(a.shape == e.shape for a, e in zip(analyses, expected)),
        direction_correct=tuple(a.direction == e.direction for a, e in zip(analyses, expected)),
        speed_correct=tuple(
            a.direction != NONE and _nearest_speed(a.speed_px_per_frame) == e.speed for a, e in zip(analyses, expected)
        ),
        continuity=continuity,
    )


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def aggregate(scores: Sequence[VideoScores]) -> dict[str, float]:
    """Pool per-chunk scores over videos (every chunk weighs the same; every pair for temporal consistency).

    Keys: colour_accuracy, shape_accuracy, direction_accuracy, speed_accuracy, instruction_following,
    colour_direction_accuracy (colour and direction both right: instruction following without the shape),
    dynamic_degree (fraction of chunks faster than :data:`MOTION_THRESHOLD`), mean_speed (px/frame),
    temporal_consistency (NaN when no chunk pair keeps colour and shape), object_found, num_chunks, num_videos.
    """
    chunks = [a for s in scores for a in s.analyses]

    def flat(name: str) -> list[float]:
        return [float(v) for s in scores for v in getattr(s, name)]

    return {
        "colour_accuracy": _mean(flat("colour_correct")),
        "shape_accuracy": _mean(flat("shape_correct")),
        "direction_accuracy": _mean(flat("direction_correct")),
        "speed_accuracy": _mean(flat("speed_correct")),
        "instruction_following": _mean(flat("instruction_following")),
        "colour_direction_accuracy": _mean([float(c and d) for s in scores
                                            for c, d in zip(s.colour_correct, s.direction_correct)]),
        "dynamic_degree": _mean([float(a.speed_px_per_frame > MOTION_THRESHOLD) for a in chunks]),
        "mean_speed": _mean([a.speed_px_per_frame for a in chunks]),
        "temporal_consistency": _mean(flat("continuity")),
        "object_found": _mean([a.object_found for a in chunks]),
        "num_chunks": float(len(chunks)),
        "num_videos": float(len(scores)),
    }


def matches(
    analysis: ChunkAnalysis, caption: Caption, *, previous: Caption | None = None, only_changed: bool = False
) -> bool:
    """Whether a chunk shows ``caption``: colour, shape and direction equal; when ``previous`` differs from
    ``caption`` in speed, the measured speed must also be nearer the new speed than the old one.

    ``only_changed`` (needs ``previous``): compare only the attributes that differ between ``previous`` and
    ``caption``, i.e. whether the change itself shows (robust to attributes a blurry decoder cannot resolve)."""
    names = ("colour", "shape", "direction")
    if only_changed and previous is not None:
        names = tuple(n for n in names if getattr(previous, n) != getattr(caption, n))
    if any(getattr(analysis, n) != getattr(caption, n) for n in names):
        return False
    if previous is not None and previous.speed != caption.speed:
        new, old = SPEEDS[caption.speed], SPEEDS[previous.speed]
        return abs(analysis.speed_px_per_frame - new) < abs(analysis.speed_px_per_frame - old)
    return True


def switch_latency(
    frames: torch.Tensor,
    ranges: Sequence[tuple[int, int]],
    expected_before: Caption,
    expected_after: Caption,
    switch_chunk: int,
    *,
    only_changed: bool = False,
) -> int | None:
    """Chunks after ``switch_chunk`` until a chunk first shows ``expected_after`` (see :func:`matches`; with
    ``only_changed`` only the attributes the switch changes are compared).

    0 = the switch chunk itself already matches; None = no chunk up to the end of the video does. On ground truth
    the latency is 0 when the caption changes at the first frame of the switch chunk, and 0 or 1 when it changes
    inside it (that chunk mixes both captions; the next one is pure).
    """
    if expected_before == expected_after:
        raise InvalidInputError(f"switch_latency needs two different captions, got {expected_after.text!r} twice.")
    if not 0 <= switch_chunk < len(ranges):
        raise InvalidInputError(f"switch_chunk {switch_chunk} is not a chunk index of the {len(ranges)} ranges.")
    analyses = analyse_video(frames, ranges)
    for i in range(switch_chunk, len(analyses)):
        if matches(analyses[i], expected_after, previous=expected_before, only_changed=only_changed):
            return i - switch_chunk
    return None


def chunk_captions(clip: ToyClip, ranges: Sequence[tuple[int, int]]) -> list[Caption]:
    """The expected caption of each chunk of a ground-truth ``clip``: the caption of the chunk's last frame."""
    ranges = _check_ranges(ranges, clip.num_frames)
    return [clip.caption_at(b - 1) for _, b in ranges]
