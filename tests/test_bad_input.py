"""Every bad input gives a clear CausalForcingError and leaves the stream as it was."""

from __future__ import annotations

import pytest
import torch

from causal_forcing_core import (
    CacheBudgetError,
    CausalForcingError,
    InvalidInputError,
    Prompt,
    StreamStateError,
)
from causal_forcing_core.config import TINY, SamplerConfig, sampler_preset
from tiny import tiny_model, tiny_prompt, tiny_stream


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def test_size_not_multiple_of_16_names_nearest_sizes(model) -> None:
    with pytest.raises(InvalidInputError, match=r"height 70 is not a multiple of 16 \(try 64 or 80\)") as err:
        tiny_stream(model, size=70)
    assert "multiples of 16" in str(err.value)


def test_frame_count_not_whole_chunks(model) -> None:
    stream = tiny_stream(model)
    with pytest.raises(InvalidInputError, match="not a whole number of chunks of 3 frames; use 3 or 6"):
        stream.generate_frames(4)
    assert stream.generate_frames(6).num_chunks == 2


def test_i2v_needs_a_framewise_model(model) -> None:
    with pytest.raises(InvalidInputError, match="Image-to-video needs a frame-wise model"):
        tiny_stream(model, "chunkwise-4step", context=torch.zeros(1, 1, 16, 8, 8))


def test_context_not_whole_chunks(model) -> None:
    with pytest.raises(InvalidInputError, match="not a whole number of 3-frame chunks"):
        tiny_stream(model, "chunkwise-4step", context=torch.zeros(1, 4, 16, 8, 8))


def test_context_of_wrong_size(model) -> None:
    with pytest.raises(InvalidInputError, match=r"Context latents must be \[B=1, frames, 16, 8, 8\]"):
        tiny_stream(model, "framewise-4step", context=torch.zeros(1, 1, 16, 4, 4))


def test_prompt_of_wrong_width(model) -> None:
    with pytest.raises(InvalidInputError, match="4096 wide but this model reads 32-wide"):
        tiny_stream(model, prompt=Prompt(torch.zeros(1, 5, 4096)))
    stream = tiny_stream(model).generate(1)
    with pytest.raises(InvalidInputError, match="wide but this model reads"):
        stream.generate(1, prompt=Prompt(torch.zeros(1, 5, 31)))
    assert stream.num_chunks == 1


def test_prompt_too_long(model) -> None:
    with pytest.raises(InvalidInputError, match="at most 16"):
        tiny_stream(model, prompt=Prompt(torch.zeros(1, TINY.text_len + 1, TINY.text_dim)))


def test_window_smaller_than_a_chunk(model) -> None:
    with pytest.raises(InvalidInputError, match="smaller than one chunk"):
        tiny_stream(model, window_frames=2)


def test_sink_not_smaller_than_window(model) -> None:
    with pytest.raises(InvalidInputError, match="smaller than window_frames"):
        tiny_stream(model, window_frames=6, sink_frames=6)
    with pytest.raises(InvalidInputError, match="less than one chunk"):
        tiny_stream(model, window_frames=6, sink_frames=4)


def test_cache_over_budget_says_how_much_it_needs(model) -> None:
    with pytest.raises(CacheBudgetError, match=r"needs .* GiB \(\d+ bytes\) but the memory budget"):
        tiny_stream(model, capacity_frames=100, memory_budget_bytes=1000)


def test_global_cache_growth_respects_budget(model) -> None:
    # 21 frames fit, 24 do not: 2 layers x K,V x 16 tokens x 2 heads x 32 x 4 bytes = 16 KiB per frame
    stream = tiny_stream(model, memory_budget_bytes=21 * 16 * 1024 + 1).generate(7)
    with pytest.raises(CacheBudgetError):
        stream.generate(1)
    assert stream.num_frames == 21
    assert stream.rewind(18).generate(1).num_frames == 21


def test_rewind_inside_a_chunk(model) -> None:
    stream = tiny_stream(model).generate(2)
    with pytest.raises(StreamStateError, match="boundaries: 0, 3, 6"):
        stream.rewind(4)


def test_unknown_sampler_preset() -> None:
    with pytest.raises(InvalidInputError, match="chunkwise-4step"):
        sampler_preset("chunkwise-3step")


def test_bad_sampler_steps() -> None:
    with pytest.raises(InvalidInputError):
        SamplerConfig("bad", 3, (1000, 0))


def test_prompt_batch_mismatch(model) -> None:
    with pytest.raises(InvalidInputError, match="does not match the stream batch"):
        tiny_stream(model, batch=2, prompt=Prompt(torch.zeros(3, 4, TINY.text_dim)))


def test_all_errors_share_one_family() -> None:
    for cls in (InvalidInputError, CacheBudgetError, StreamStateError):
        assert issubclass(cls, CausalForcingError)


def test_prompt_broadcasts_over_batch(model) -> None:
    stream = tiny_stream(model, batch=2, prompt=tiny_prompt(3)).generate(1)
    assert stream.latents.shape[0] == 2
