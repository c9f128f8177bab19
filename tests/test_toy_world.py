"""The toy world: vocabulary, caption parsing, deterministic rendering with wrap-around, switch clips."""

from __future__ import annotations

import random

import pytest
import torch

from causal_forcing_core.errors import InvalidInputError
from causal_forcing_core.toy.world import (
    BACKGROUND,
    COLOURS,
    DEFAULT_SPEED,
    DIRECTIONS,
    SHAPES,
    SPEEDS,
    VOCABULARY,
    Caption,
    parse_caption,
    random_caption,
    render_clip,
    sample_clip,
)


def _alpha(frames: torch.Tensor, colour: str) -> torch.Tensor:
    """Per-pixel coverage recovered from frames [F, H, W, 3] of a single ``colour`` object -> [F, H, W]."""
    bg = torch.tensor(BACKGROUND) / 255.0
    col = torch.tensor(COLOURS[colour]) / 255.0
    return ((frames - bg) @ (col - bg)) / ((col - bg) @ (col - bg))


def test_vocabulary_holds_every_caption_word() -> None:
    assert len(set(VOCABULARY)) == len(VOCABULARY)
    rng = random.Random(0)
    for _ in range(50):
        assert set(random_caption(rng).text.split()) <= set(VOCABULARY)
    assert {"a", "moves", *COLOURS, *SHAPES, *DIRECTIONS, *SPEEDS} == set(VOCABULARY)


def test_captions_parse_back() -> None:
    rng = random.Random(1)
    for _ in range(50):
        caption = random_caption(rng)
        assert parse_caption(caption.text) == caption
    assert Caption("red", "square", "left", "quickly").text == "a red square moves left quickly"
    assert parse_caption("  A Red   SQUARE moves LEFT quickly. ") == Caption("red", "square", "left", "quickly")
    assert parse_caption("quickly, a blue circle moves up") == Caption("blue", "circle", "up", "quickly")
    assert parse_caption("a green triangle moves down").speed == DEFAULT_SPEED


def test_bad_words_list_the_vocabulary() -> None:
    with pytest.raises(InvalidInputError) as err:
        parse_caption("a purple hexagon moves left")
    message = str(err.value)
    assert "'purple'" in message and "'hexagon'" in message
    for group in ("colours:", "shapes:", "directions:", "speeds:"):
        assert group in message
    for word in (*COLOURS, *SHAPES, *DIRECTIONS, *SPEEDS):
        assert word in message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("a square moves left", "no colour"), ("a red moves left", "no shape"), ("a red square", "no direction"),
     ("a red blue square moves left", "more than one colour"), ("   ", "empty")],
)
def test_incomplete_captions_are_rejected(text: str, fragment: str) -> None:
    with pytest.raises(InvalidInputError, match=fragment):
        parse_caption(text)


def test_caption_rejects_unknown_fields() -> None:
    with pytest.raises(InvalidInputError, match="colour"):
        Caption("purple", "square", "left", "slowly")


def test_rendering_is_deterministic() -> None:
    a, b = sample_clip(7, switch=True), sample_clip(7, switch=True)
    assert torch.equal(a.frames, b.frames) and torch.equal(a.positions, b.positions)
    assert a.captions == b.captions
    assert not torch.equal(a.frames, sample_clip(8, switch=True).frames)
    assert a.frames.shape == (21, 64, 64, 3) and a.frames.dtype == torch.float32
    assert 0.0 <= float(a.frames.min()) and float(a.frames.max()) <= 1.0
    c = sample_clip(3, num_frames=9, height=48, width=80)
    assert c.frames.shape == (9, 48, 80, 3) and c.positions.shape == (9, 2)


def test_wrap_around_keeps_the_object_whole() -> None:
    caption = Caption("yellow", "circle", "left", "quickly")
    centred = render_clip([(0, caption)], num_frames=1, start=(32.0, 32.0)).frames[0]
    corner = render_clip([(0, caption)], num_frames=1, start=(0.0, 0.0)).frames[0]
    assert torch.allclose(torch.roll(centred, (-32, -32), (0, 1)), corner, atol=1e-6)
    # 40 frames at 2.5 px/frame cross the 64 px frame more than once: coverage stays the same throughout.
    for shape in SHAPES:
        clip = render_clip([(0, Caption("blue", shape, "left", "quickly"))], num_frames=40, start=(10.3, 1.7))
        area = _alpha(clip.frames, "blue").sum((1, 2))
        assert float(area.max() - area.min()) < 0.01 * float(area.mean())
        assert float(clip.positions[:, 0].min()) >= 0.0 and float(clip.positions[:, 0].max()) < 64.0


def test_motion_follows_the_caption() -> None:
    clip = render_clip(
        [(0, Caption("red", "square", "right", "slowly")), (5, Caption("red", "square", "up", "quickly"))],
        num_frames=10, start=(20.0, 30.0),
    )
    assert clip.positions[4].tolist() == [24.0, 30.0]
    assert clip.positions[5].tolist() == [25.0, 30.0]
    assert clip.positions[6].tolist() == [25.0, 27.5]
    assert clip.caption_at(4).direction == "right" and clip.caption_at(5).direction == "up"
    with pytest.raises(InvalidInputError):
        clip.caption_at(10)


def test_switch_clips_change_caption_and_keep_position() -> None:
    for seed in range(30):
        clip = sample_clip(seed, switch=True)
        assert len(clip.captions) == 2 and clip.captions[0][0] == 0
        k, after = clip.captions[1]
        before = clip.captions[0][1]
        assert 7 <= k <= 14
        changed = [f for f in ("colour", "shape", "direction", "speed") if getattr(before, f) != getattr(after, f)]
        assert 1 <= len(changed) <= 2 and ("colour" in changed or "direction" in changed)
        step = clip.positions[1:] - clip.positions[:-1]
        step = torch.remainder(step + 32.0, 64.0) - 32.0
        assert float(step.norm(dim=1).max()) <= 2.5 + 1e-4
        assert torch.allclose(step[k - 1], torch.tensor(before.velocity), atol=1e-4)
        assert torch.allclose(step[k], torch.tensor(after.velocity), atol=1e-4)


@pytest.mark.parametrize(
    "timeline",
    [[], [(1, Caption("red", "square", "left", "slowly"))],
     [(0, Caption("red", "square", "left", "slowly")), (0, Caption("blue", "square", "left", "slowly"))],
     [(0, Caption("red", "square", "left", "slowly")), (30, Caption("blue", "square", "left", "slowly"))]],
)
def test_bad_timelines_are_rejected(timeline: list) -> None:
    with pytest.raises(InvalidInputError):
        render_clip(timeline, num_frames=21)
