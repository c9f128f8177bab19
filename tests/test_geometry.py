"""The one statement of the Wan 2.1 video geometry: its numbers, its checks and its conversions."""

from __future__ import annotations

import pytest

from causal_forcing_core.errors import InvalidInputError
from causal_forcing_core.geometry import WAN21, VideoGeometry


def test_wan21_numbers() -> None:
    assert (WAN21.spatial_stride, WAN21.temporal_stride, WAN21.fps, WAN21.trained_latent_frames) == (8, 4, 16, 21)
    assert WAN21.size_multiple() == 16 and WAN21.size_multiple((1, 1)) == 8
    assert WAN21.pixel_frames(WAN21.trained_latent_frames) == 81  # 5 s at 16 fps, plus the first frame


@pytest.mark.parametrize("latent", [0, 1, 2, 7, 21, 22])
def test_frame_conversions_round_trip(latent: int) -> None:
    pixel = WAN21.pixel_frames(latent)
    assert pixel == (0 if latent == 0 else 1 + 4 * (latent - 1))
    if latent:
        assert WAN21.latent_frames(pixel) == latent


def test_pixel_frame_counts_that_are_not_1_plus_4k_name_the_nearest() -> None:
    with pytest.raises(InvalidInputError, match="80 frames.*use 77 or 81"):
        WAN21.latent_frames(80)
    with pytest.raises(InvalidInputError, match="0 frames.*use 1 or 5"):
        WAN21.check_pixel_frames(0)


def test_chunk_timing() -> None:
    assert WAN21.added_pixel_frames(3) == 12
    assert WAN21.chunk_seconds(3) == 0.75 and WAN21.chunk_seconds(1) == 0.25
    assert WAN21.seconds_to_chunks(5, 3) == 7  # 80 frames need ceil(80 / 12) chunks
    assert WAN21.seconds_to_chunks(0.75, 3) == 1 and WAN21.seconds_to_chunks(0.76, 3) == 2
    assert WAN21.seconds_to_chunks(0, 1) == 1  # always at least one chunk


def test_size_rule_and_messages() -> None:
    assert WAN21.latent_size(480, 832) == (60, 104)
    assert WAN21.size_problems(480, 832, 16) == []
    assert WAN21.size_problems(470, 832, 16, max_size=4096) == ["height 470 is not a multiple of 16 (try 464 or 480)"]
    assert WAN21.size_problems(480, 8192, 16, max_size=4096) == ["width 8192 is above the largest size, 4096"]
    with pytest.raises(InvalidInputError, match=r"multiples of 16 pixels: height 0 is below the smallest size, 16; "
                                                r"width 70 is not a multiple of 16 \(try 64 or 80\)"):
        WAN21.latent_size(0, 70)
    assert WAN21.pixel_size(60, 104) == (480, 832)


def test_another_geometry_is_data() -> None:
    other = VideoGeometry(spatial_stride=16, temporal_stride=8, fps=24, trained_latent_frames=11)
    assert other.latent_size(64, 96) == (4, 6)
    assert other.pixel_frames(3) == 17 and other.chunk_seconds(3) == 1.0
