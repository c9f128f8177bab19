"""The toy world: one coloured shape moving with constant velocity over a plain dark background.

Captions follow the grammar ``a {colour} {shape} moves {direction} {speed}``, e.g. ``"a red square moves left
quickly"``. The frame is a torus: an object leaving one edge re-enters at the opposite edge, drawn in pieces on
both sides while it straddles the edge.

Coordinates: x grows to the right, y grows downwards (so ``up`` is -y); pixel ``(row r, column c)`` has its centre
at ``(c + 0.5, r + 0.5)``; positions live in ``[0, width) x [0, height)``.

Motion rule: the velocity of the caption in force at frame f moves the object from frame f to frame f + 1, so a
caption that starts at frame k shows its colour and shape from frame k on and its velocity from the step
k -> k + 1 on, while the position stays continuous.

Rendering is anti-aliased with a one-pixel box filter over a signed distance to the shape's edge, which is
deterministic and vectorised over frames.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import torch

from ..errors import InvalidInputError

logger = logging.getLogger(__name__)

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 200, 70),
    "blue": (50, 90, 240),
    "yellow": (235, 215, 40),
}
SHAPES: tuple[str, ...] = ("square", "circle", "triangle")
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
SPEEDS: dict[str, float] = {"slowly": 1.0, "quickly": 2.5}
BACKGROUND: tuple[int, int, int] = (28, 28, 32)

#: The speed a parsed caption gets when its text names none (``"a red square moves left"``).
DEFAULT_SPEED = "slowly"
#: Words a caption may hold besides the attribute words; both are optional when parsing.
FILLER_WORDS: tuple[str, ...] = ("a", "moves")
#: Every word a caption may contain, in grammar order.
VOCABULARY: tuple[str, ...] = ("a", *COLOURS, *SHAPES, "moves", *DIRECTIONS, *SPEEDS)

#: Unit step per direction as (dx, dy) in pixels; y grows downwards.
DIRECTION_VECTORS: dict[str, tuple[float, float]] = {
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
}
#: Object size (square side, circle diameter, triangle width and height) at 64 px; scaled by min(H, W) / 64.
OBJECT_SIZE_AT_64 = 18.0


def object_size(height: int, width: int) -> float:
    """Object size in pixels for a ``height`` x ``width`` frame."""
    return OBJECT_SIZE_AT_64 * min(height, width) / 64.0


def vocabulary_help() -> str:
    """The vocabulary grouped by category, for error messages."""
    return (
        f"colours: {', '.join(COLOURS)}; shapes: {', '.join(SHAPES)}; directions: {', '.join(DIRECTIONS)}; "
        f"speeds: {', '.join(SPEEDS)} (optional, default {DEFAULT_SPEED!r}); other words: {', '.join(FILLER_WORDS)}. "
        "Grammar: 'a {colour} {shape} moves {direction} {speed}'."
    )


@dataclass(frozen=True)
class Caption:
    """One toy-world caption; every field is a vocabulary word of its category."""

    colour: str
    shape: str
    direction: str
    speed: str

    def __post_init__(self) -> None:
        for value, allowed, name in (
            (self.colour, tuple(COLOURS), "colour"),
            (self.shape, SHAPES, "shape"),
            (self.direction, DIRECTIONS, "direction"),
            (self.speed, tuple(SPEEDS), "speed"),
        ):
            if value not in allowed:
                raise InvalidInputError(f"Unknown {name} {value!r}; the vocabulary is: {vocabulary_help()}")

    @property
    def text(self) -> str:
        """The caption as text: ``"a red square moves left quickly"``."""
        return f"a {self.colour} {self.shape} moves {self.direction} {self.speed}"

    @property
    def velocity(self) -> tuple[float, float]:
        """(vx, vy) in pixels per frame."""
        ux, uy = DIRECTION_VECTORS[self.direction]
        v = SPEEDS[self.speed]
        return ux * v, uy * v

    def __str__(self) -> str:
        return self.text


_CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("colour", tuple(COLOURS)),
    ("shape", SHAPES),
    ("direction", DIRECTIONS),
    ("speed", tuple(SPEEDS)),
)


def parse_caption(text: str) -> Caption:
    """Parse a caption. Case-insensitive; extra spaces, commas and a trailing period are ignored.

    Each attribute word may stand anywhere (``"quickly, a blue circle moves up"`` parses); ``a`` and ``moves``
    are optional; the speed defaults to :data:`DEFAULT_SPEED`. Unknown words, a missing colour/shape/direction
    or two words of one category raise :class:`InvalidInputError` naming the problem and listing the vocabulary.
    """
    if not isinstance(text, str):
        raise InvalidInputError(f"A caption must be a string, got {type(text).__name__}.")
    words = text.lower().replace(",", " ").strip().rstrip(".!").split()
    if not words:
        raise InvalidInputError(f"The caption is empty; the vocabulary is: {vocabulary_help()}")
    unknown = [w for w in words if w not in VOCABULARY]
    if unknown:
        raise InvalidInputError(
            f"Unknown word(s) in caption {text!r}: {', '.join(repr(w) for w in unknown)}. "
            f"The vocabulary is: {vocabulary_help()}"
        )
    found: dict[str, str] = {}
    for name, allowed in _CATEGORIES:
        hits = [w for w in words if w in allowed]
        if len(hits) > 1:
            raise InvalidInputError(
                f"Caption {text!r} names more than one {name} ({', '.join(hits)}); give exactly one. "
                f"The vocabulary is: {vocabulary_help()}"
            )
        if hits:
            found[name] = hits[0]
    found.setdefault("speed", DEFAULT_SPEED)
    missing = [name for name, _ in _CATEGORIES if name not in found]
    if missing:
        raise InvalidInputError(
            f"Caption {text!r} has no {' and no '.join(missing)}; a caption needs a colour, a shape and a "
            f"direction (the speed is optional). The vocabulary is: {vocabulary_help()}"
        )
    return Caption(**found)


def random_caption(rng: random.Random) -> Caption:
    """A uniformly random caption drawn from ``rng`` (colour, shape, direction, speed in that order)."""
    return Caption(
        colour=rng.choice(tuple(COLOURS)),
        shape=rng.choice(SHAPES),
        direction=rng.choice(DIRECTIONS),
        speed=rng.choice(tuple(SPEEDS)),
    )


@dataclass(frozen=True, eq=False)
class ToyClip:
    """A rendered clip.

    ``frames``: float32 [F, H, W, 3] in [0, 1]. ``captions``: the timeline ``((first_frame, caption), ...)``,
    sorted, first entry at frame 0. ``positions``: float32 [F, 2], the object centre (x, y) in pixels (the centre
    of the shape's bounding box).
    """

    frames: torch.Tensor
    captions: tuple[tuple[int, Caption], ...]
    positions: torch.Tensor

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    def caption_at(self, frame: int) -> Caption:
        """The caption in force at ``frame`` (0 <= frame < F)."""
        if not 0 <= frame < self.num_frames:
            raise InvalidInputError(f"Frame {frame} is outside the clip of {self.num_frames} frames.")
        current = self.captions[0][1]
        for first, caption in self.captions:
            if first > frame:
                break
            current = caption
        return current


def _check_timeline(captions: Sequence[tuple[int, Caption]], num_frames: int) -> tuple[tuple[int, Caption], ...]:
    timeline = tuple((int(k), c) for k, c in captions)
    if not timeline:
        raise InvalidInputError("render_clip needs at least one (first_frame, caption) entry.")
    for k, c in timeline:
        if not isinstance(c, Caption):
            raise InvalidInputError(f"Timeline entries must be (int, Caption), got a {type(c).__name__}.")
        if not 0 <= k < num_frames:
            raise InvalidInputError(f"A caption starts at frame {k}, outside the clip of {num_frames} frames.")
    starts = [k for k, _ in timeline]
    if starts[0] != 0:
        raise InvalidInputError(f"The first caption must start at frame 0, got {starts[0]}.")
    if any(b <= a for a, b in pairwise(starts)):
        raise InvalidInputError(f"Caption start frames must be strictly increasing, got {starts}.")
    return timeline


def _shape_alpha(shape: str, dx: torch.Tensor, dy: torch.Tensor, size: float) -> torch.Tensor:
    """Coverage in [0, 1] of ``shape`` centred at the origin: ``dx`` [n, 1, W], ``dy`` [n, H, 1] -> [n, H, W]."""
    half = size / 2.0
    if shape == "square":
        sd = torch.maximum(dx.abs(), dy.abs()) - half
    elif shape == "circle":
        sd = torch.sqrt(dx * dx + dy * dy) - half
    elif shape == "triangle":
        # Apex (0, -half), base corners (+-half, +half): |dx| <= (dy + half) / 2 and dy <= half.
        side = (2.0 * dx.abs() - dy - half) / math.sqrt(5.0)
        sd = torch.maximum(side, dy - half)
    else:  # pragma: no cover - Caption validates shapes
        raise InvalidInputError(f"Unknown shape {shape!r}.")
    return (0.5 - sd).clamp_(0.0, 1.0)


def _wrapped_offsets(coords: torch.Tensor, centres: torch.Tensor, period: int) -> torch.Tensor:
    """Shortest signed offsets on a circle of ``period``: coords [L], centres [n] -> [n, L]."""
    half = period / 2.0
    return torch.remainder(coords[None, :] - centres[:, None] + half, float(period)) - half


def render_clip(
    captions: Sequence[tuple[int, Caption]],
    *,
    num_frames: int = 21,
    height: int = 64,
    width: int = 64,
    start: tuple[float, float] | None = None,
    seed: int = 0,
) -> ToyClip:
    """Render a clip following a caption timeline ``[(first_frame, caption), ...]`` (first entry at frame 0).

    ``start`` is the object centre (x, y) at frame 0; when None it is drawn uniformly from ``random.Random(seed)``.
    Returns a :class:`ToyClip` with frames float32 [num_frames, height, width, 3] in [0, 1].
    """
    if num_frames < 1 or height < 8 or width < 8:
        raise InvalidInputError(
            f"render_clip needs num_frames >= 1 and a frame of at least 8x8 pixels, got {num_frames} frames "
            f"of {height}x{width}."
        )
    timeline = _check_timeline(captions, num_frames)
    if start is None:
        rng = random.Random(seed)
        start = (rng.uniform(0.0, width), rng.uniform(0.0, height))
    x, y = float(start[0]) % width, float(start[1]) % height

    # Positions: the caption at frame f moves the object from f to f + 1.
    boundaries = [k for k, _ in timeline[1:]] + [num_frames]
    xs: list[float] = []
    ys: list[float] = []
    for (first, caption), end in zip(timeline, boundaries):
        vx, vy = caption.velocity
        for _ in range(first, end):
            xs.append(x)
            ys.append(y)
            x, y = (x + vx) % width, (y + vy) % height
    positions = torch.tensor([xs, ys], dtype=torch.float64).T.contiguous()

    size = object_size(height, width)
    cols = torch.arange(width, dtype=torch.float64) + 0.5
    rows = torch.arange(height, dtype=torch.float64) + 0.5
    dx_all = _wrapped_offsets(cols, positions[:, 0], width)  # [F, W]
    dy_all = _wrapped_offsets(rows, positions[:, 1], height)  # [F, H]

    bg = torch.tensor(BACKGROUND, dtype=torch.float32) / 255.0
    frames = torch.empty((num_frames, height, width, 3), dtype=torch.float32)
    for (first, caption), end in zip(timeline, boundaries):
        dx = dx_all[first:end, None, :].float()
        dy = dy_all[first:end, :, None].float()
        alpha = _shape_alpha(caption.shape, dx, dy, size)[..., None]  # [n, H, W, 1]
        colour = torch.tensor(COLOURS[caption.colour], dtype=torch.float32) / 255.0
        frames[first:end] = bg + alpha * (colour - bg)
    return ToyClip(frames=frames, captions=timeline, positions=positions.float())


def _switched_caption(rng: random.Random, caption: Caption) -> Caption:
    """``caption`` with one or two attributes changed, at least one of them colour or direction."""
    first = rng.choice(("colour", "direction"))
    changed = [first]
    if rng.random() < 0.5:
        changed.append(rng.choice([a for a in ("colour", "shape", "direction", "speed") if a != first]))
    fields = {"colour": caption.colour, "shape": caption.shape, "direction": caption.direction, "speed": caption.speed}
    choices = {"colour": tuple(COLOURS), "shape": SHAPES, "direction": DIRECTIONS, "speed": tuple(SPEEDS)}
    for name in changed:
        fields[name] = rng.choice([v for v in choices[name] if v != fields[name]])
    return Caption(**fields)


def sample_clip(
    seed: int, *, num_frames: int = 21, height: int = 64, width: int = 64, switch: bool = False
) -> ToyClip:
    """A random clip determined by ``seed`` alone (``random.Random(seed)``).

    With ``switch=True`` the caption changes once, at a random frame of the middle third
    (``ceil(F/3) .. floor(2F/3)``), changing one or two attributes, at least one of them colour or direction.
    Needs ``num_frames >= 3`` when switching.
    """
    rng = random.Random(seed)
    caption = random_caption(rng)
    start = (rng.uniform(0.0, width), rng.uniform(0.0, height))
    timeline: list[tuple[int, Caption]] = [(0, caption)]
    if switch:
        if num_frames < 3:
            raise InvalidInputError(f"A switch clip needs at least 3 frames, got {num_frames}.")
        lo = max(1, -(-num_frames // 3))
        hi = max(lo, (2 * num_frames) // 3)
        timeline.append((rng.randint(lo, hi), _switched_caption(rng, caption)))
    return render_clip(timeline, num_frames=num_frames, height=height, width=width, start=start)
