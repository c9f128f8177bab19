"""Frame-wise long video (issue 14, part 4): a local window with a sink, with and without re-cache in both modes, for
the frame-wise 4-step and the Causal Forcing++ 2- and 1-step students, which the official code only runs
chunk-wise. Over 30 one-frame chunks the window rolls many times; the cache stays one size, the video does not
depend on how the chunks are split, and rewinding or forking past a roll and a re-cache replays correctly."""

from __future__ import annotations

import pytest
import torch

from causal_forcing_core.kv_cache import Recache
from tiny import tiny_model, tiny_prompt, tiny_stream

PRESETS = ["framewise-4step", "framewise-2step", "framewise-1step"]
CHUNKS, SWITCHES = 30, {11: tiny_prompt(2), 21: tiny_prompt(3)}
WINDOW, SINK = 6, 1


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def _render(model, preset: str, recache: Recache, pieces: list[int]):
    """CHUNKS chunks, switching prompts at SWITCHES, generated in ``pieces`` (split at the switches too)."""
    stream = tiny_stream(model, preset, window_frames=WINDOW, sink_frames=SINK)
    sizes = []
    bounds = sorted(set([0, CHUNKS, *SWITCHES, *pieces]))
    for start, end in zip(bounds, bounds[1:]):
        prompt = SWITCHES.get(start)
        stream = stream.generate(end - start, prompt=prompt, recache=recache if prompt is not None else False)
        sizes.append(stream.kv_cache.nbytes)
    return stream, sizes


@pytest.mark.parametrize("recache", [Recache.OFF, Recache.RECENT, Recache.WINDOW])
@pytest.mark.parametrize("preset", PRESETS)
def test_a_long_framewise_stream_rolls_with_one_cache_size_however_it_is_split(model, preset, recache) -> None:
    whole, sizes = _render(model, preset, recache, [])
    split, _ = _render(model, preset, recache, [1, 5, 6, 16, 25])
    assert whole.num_frames == CHUNKS and torch.equal(whole.latents, split.latents)
    assert len(set(sizes)) == 1 and whole.kv_cache.capacity_frames == WINDOW  # flat: the window, never more
    assert whole.kv_cache.global_end == CHUNKS and whole.kv_cache.local_end == WINDOW
    # rewind past rolls and a re-cache, fork there, and go back to the tip: every snapshot continues like a fresh one
    rewound = whole.rewind(16)
    fork = rewound.generate(3, prompt=tiny_prompt(9), recache=recache)
    again = rewound.generate(5)  # up to the second switch, with the prompt the original had there
    assert torch.equal(again.latents, whole.latents[:, :21])
    assert not torch.equal(fork.latents[:, 16:], whole.latents[:, 16:19])
    tip = whole.generate(2)
    assert torch.equal(tip.latents, _render(model, preset, recache, [])[0].generate(2).latents)


@pytest.mark.parametrize("preset", PRESETS)
def test_the_recache_modes_change_the_video_only_after_the_switch(model, preset) -> None:
    videos = {mode: _render(model, preset, mode, [])[0].latents for mode in Recache}
    first = min(SWITCHES)
    for mode in (Recache.RECENT, Recache.WINDOW):
        assert torch.equal(videos[mode][:, :first], videos[Recache.OFF][:, :first])
        assert (videos[mode][:, first:] - videos[Recache.OFF][:, first:]).abs().max() > 1e-3
    assert (videos[Recache.RECENT][:, first:] - videos[Recache.WINDOW][:, first:]).abs().max() > 1e-3
