"""The toy-video analyser: near-perfect on (degraded) ground truth, chance or below on noise."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from causal_forcing_core.errors import InvalidInputError
from causal_forcing_core.toy.evaluate import (
    CHANCE,
    aggregate,
    analyse_video,
    chunk_captions,
    chunk_frame_ranges,
    score_video,
    switch_latency,
)
from causal_forcing_core.toy.world import BACKGROUND, Caption, render_clip, sample_clip


def _degrade(frames: torch.Tensor, sigma: float, noise: float, seed: int) -> torch.Tensor:
    """Gaussian blur (std ``sigma`` px) plus Gaussian noise (std ``noise``), like a lossy VAE: [F, H, W, 3]."""
    x = frames.permute(0, 3, 1, 2).reshape(-1, 1, *frames.shape[1:3])
    r = math.ceil(3 * sigma)
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    x = F.pad(x, (r, r, r, r), mode="replicate")
    x = F.conv2d(F.conv2d(x, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))
    x = x.reshape(frames.shape[0], 3, *frames.shape[1:3]).permute(0, 2, 3, 1)
    gen = torch.Generator().manual_seed(seed)
    return (x + noise * torch.randn(x.shape, generator=gen)).clamp(0.0, 1.0)


def _ranges(num_frames: int) -> list[tuple[int, int]]:
    return chunk_frame_ranges((num_frames - 1) // 4 + 1, 3)


def _score_ground_truth(degrade: bool) -> dict[str, float]:
    scores = []
    for seed in range(40):
        num_frames = 45 if seed % 5 == 0 else 21
        clip = sample_clip(seed, num_frames=num_frames)
        frames = _degrade(clip.frames, 1.2, 0.06, seed) if degrade else clip.frames
        ranges = _ranges(num_frames)
        scores.append(score_video(frames, ranges, chunk_captions(clip, ranges)))
    return aggregate(scores)


def test_chunk_frame_ranges() -> None:
    assert chunk_frame_ranges(6, 3) == [(0, 9), (9, 21)]
    assert chunk_frame_ranges(12, 3) == [(0, 9), (9, 21), (21, 33), (33, 45)]
    assert chunk_frame_ranges(3, 1) == [(0, 1), (1, 5), (5, 9)]
    assert chunk_frame_ranges(5, 3) == [(0, 9), (9, 17)]
    with pytest.raises(InvalidInputError):
        chunk_frame_ranges(0, 3)


@pytest.mark.parametrize("degrade", [False, True], ids=["clean", "blur+noise"])
def test_ground_truth_is_recognised(degrade: bool) -> None:
    metrics = _score_ground_truth(degrade)
    floor = 0.9 if degrade else 0.95
    for name in ("colour_accuracy", "shape_accuracy", "direction_accuracy", "temporal_consistency"):
        assert metrics[name] >= floor, (name, metrics)
    assert metrics["object_found"] >= 0.95 and metrics["dynamic_degree"] >= 0.95
    assert 1.0 <= metrics["mean_speed"] <= 2.5
    assert metrics["num_chunks"] == 32 * 2 + 8 * 4


def test_noise_and_empty_videos_score_low() -> None:
    gen = torch.Generator().manual_seed(0)
    bg = torch.tensor(BACKGROUND, dtype=torch.float32) / 255.0
    ranges = _ranges(21)
    noise, empty = [], []
    for seed in range(8):
        expected = chunk_captions(sample_clip(seed), ranges)
        noise.append(score_video(torch.rand((21, 64, 64, 3), generator=gen), ranges, expected))
        empty.append(score_video(bg.expand(21, 64, 64, 3).clone(), ranges, expected))
    for metrics in (aggregate(noise), aggregate(empty)):
        assert metrics["instruction_following"] <= 0.3
        assert metrics["object_found"] <= 0.05
        assert metrics["colour_accuracy"] <= CHANCE["colour_accuracy"] + 0.2
        assert metrics["dynamic_degree"] <= 0.1


def test_analysis_of_a_known_clip() -> None:
    caption = Caption("green", "triangle", "down", "slowly")
    clip = render_clip([(0, caption)], num_frames=21, start=(5.0, 60.0))  # wraps at the corner
    first, second = analyse_video(clip.frames, _ranges(21))
    for chunk in (first, second):
        assert (chunk.colour, chunk.shape, chunk.direction) == ("green", "triangle", "down")
        assert abs(chunk.speed_px_per_frame - 1.0) < 0.05 and chunk.object_found == 1.0


def test_switch_latency_on_ground_truth() -> None:
    before = Caption("red", "square", "left", "slowly")
    after = Caption("blue", "square", "up", "quickly")
    ranges = _ranges(45)  # (0, 9), (9, 21), (21, 33), (33, 45)
    # A switch on the first frame of a chunk shows at once.
    clip = render_clip([(0, before), (21, after)], num_frames=45)
    assert switch_latency(clip.frames, ranges, before, after, 2) == 0
    # A switch inside a chunk: that chunk mixes both captions (latency 0 or 1), the next one is pure.
    for seed in range(6):
        clip = sample_clip(100 + seed, num_frames=45, switch=True)
        (_, old), (k, new) = clip.captions
        chunk = next(i for i, (a, b) in enumerate(ranges) if a <= k < b)
        latency = switch_latency(clip.frames, ranges, old, new, chunk)
        assert latency in ((0,) if ranges[chunk][0] == k else (0, 1))
    # A video that never switches never matches.
    clip = render_clip([(0, before)], num_frames=45)
    assert switch_latency(clip.frames, ranges, before, after, 1) is None


def test_bad_input_is_rejected() -> None:
    frames = sample_clip(0).frames
    with pytest.raises(InvalidInputError, match=r"\[F, H, W, 3\]"):
        analyse_video(frames.permute(0, 3, 1, 2), [(0, 9)])
    with pytest.raises(InvalidInputError, match="does not fit"):
        analyse_video(frames, [(0, 30)])
    with pytest.raises(InvalidInputError, match="one expected caption per chunk"):
        score_video(frames, [(0, 9), (9, 21)], [Caption("red", "square", "left", "slowly")])
    with pytest.raises(InvalidInputError, match="NaN"):
        analyse_video(torch.full_like(frames, float("nan")), [(0, 9)])


def test_only_changed_compares_the_attributes_a_switch_changes() -> None:
    """A chunk with the new colour but a shape the decoder blurred still shows a colour switch."""
    from causal_forcing_core.toy.evaluate import ChunkAnalysis, matches
    from causal_forcing_core.toy.world import Caption

    before = Caption("red", "square", "left", "slowly")
    after = Caption("blue", "square", "left", "slowly")
    blurred = ChunkAnalysis(colour="blue", shape="circle", direction="left", speed_px_per_frame=1.0, object_found=1.0)
    assert not matches(blurred, after, previous=before)
    assert matches(blurred, after, previous=before, only_changed=True)
    unchanged = ChunkAnalysis(colour="red", shape="square", direction="left", speed_px_per_frame=1.0, object_found=1.0)
    assert not matches(unchanged, after, previous=before, only_changed=True)
