"""Layer 1: stream semantics on a tiny random model: determinism, replay, rewind, fork, windows, interruption."""

from __future__ import annotations

import pytest
import torch

from causal_forcing_core.kv_cache import KVCache
from tiny import tiny_model, tiny_prompt, tiny_stream


@pytest.fixture(scope="module")
def model():
    return tiny_model()


class ForwardCounter:
    """Counts DiT passes (denoising forwards and cache-refresh writes) and the frames they covered."""

    METHODS = ("forward", "write_cache")

    def __init__(self, model) -> None:
        self.calls = 0
        self.frames = 0
        self._model = model

    def __enter__(self) -> "ForwardCounter":
        for name in self.METHODS:
            orig = getattr(self._model, name)

            def counted(x, *args, _orig=orig, **kwargs):
                self.calls += 1
                self.frames += x.shape[2]
                return _orig(x, *args, **kwargs)

            setattr(self._model, name, counted)
        return self

    def __exit__(self, *exc) -> None:
        for name in self.METHODS:
            delattr(self._model, name)


def assert_same_cache(a: KVCache, b: KVCache) -> None:
    assert (a.global_end, a.local_end) == (b.global_end, b.local_end)
    for layer in range(a.num_layers):
        ka, va = a.valid(layer)
        kb, vb = b.valid(layer)
        torch.testing.assert_close(ka, kb, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(va, vb, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("preset", ["chunkwise-4step", "framewise-2step"])
def test_chunks_in_one_call_equal_chunks_in_many(model, preset) -> None:
    one = tiny_stream(model, preset).generate(4)
    many = tiny_stream(model, preset)
    for _ in range(4):
        many = many.generate(1)
    assert torch.equal(one.latents, many.latents)
    # fork + rewind + regenerate gives the same video again
    again = many.fork().rewind(many.num_frames - 2 * model_frames(many)).generate(2)
    assert torch.equal(again.latents, one.latents)


def model_frames(stream) -> int:
    return stream.settings.sampler.frames_per_block


def test_seed_changes_the_video(model) -> None:
    a = tiny_stream(model, seed=1).generate(1).latents
    b = tiny_stream(model, seed=2).generate(1).latents
    assert not torch.allclose(a, b)


@pytest.mark.parametrize(
    "kwargs", [{}, {"window_frames": 6, "sink_frames": 3}, {"window_frames": 4, "sink_frames": 0}],
    ids=["global", "window6_sink3", "window4"],
)
def test_replay_gives_the_same_kv(model, kwargs) -> None:
    preset = "chunkwise-4step" if kwargs.get("window_frames", 6) % 3 == 0 else "framewise-4step"
    stream = tiny_stream(model, preset, **kwargs).generate(5)
    original = stream.kv_cache.clone()
    replayed = stream.replayed()
    assert replayed.storage is not stream.storage
    assert_same_cache(original, replayed.kv_cache)
    # and generating on from the replayed cache continues the same video
    assert torch.equal(replayed.generate(1).latents, stream.generate(1).latents)


def test_replay_after_prompt_switch_with_recache(model) -> None:
    stream = tiny_stream(model, window_frames=6, sink_frames=3).generate(3)
    switched = stream.generate(2, prompt=tiny_prompt(2), recache=True)
    assert_same_cache(switched.kv_cache.clone(), switched.replayed().kv_cache)


def test_window_cache_bytes_stay_constant(model) -> None:
    stream = tiny_stream(model, "framewise-1step", window_frames=4, sink_frames=1)
    sizes, ends = [], []
    for _ in range(50):
        stream = stream.generate(1)
        sizes.append(stream.storage.cache.nbytes)
        ends.append(stream.storage.cache.local_end)
    assert len(set(sizes)) == 1
    assert ends[3:] == [4] * 47
    assert stream.storage.cache.global_end == 50


def test_global_cache_grows_beyond_21_frames(model) -> None:
    stream = tiny_stream(model, "chunkwise-4step").generate(9)  # 27 latent frames
    assert stream.num_frames == 27
    assert stream.kv_cache.capacity_frames >= 27
    replayed = stream.replayed()
    assert_same_cache(stream.kv_cache.clone(), replayed.kv_cache)
    assert torch.equal(replayed.generate(1).latents, stream.generate(1).latents)


def test_three_segments_edit_last_reruns_only_last(model) -> None:
    p1, p2, p3, p3b = (tiny_prompt(i) for i in range(1, 5))
    s1 = tiny_stream(model, prompt=p1).generate(2)
    s2 = s1.generate(2, prompt=p2)
    s2.generate(2, prompt=p3)
    with ForwardCounter(model) as count:
        edited = s2.generate(2, prompt=p3b)
    assert count.calls == 2 * (4 + 1)  # no replay: the shared cache was rewound
    fresh = tiny_stream(model, prompt=p1).generate(2).generate(2, prompt=p2).generate(2, prompt=p3b)
    assert torch.equal(edited.latents, fresh.latents)


def test_two_branches_alternating(model) -> None:
    base = tiny_stream(model).generate(2)
    a = base.generate(1, prompt=tiny_prompt(5))
    b = base.generate(1, prompt=tiny_prompt(6))
    a2 = a.generate(1)  # storage reflects b: a must rewind to base, then extend
    b2 = b.generate(1)
    ref_a = tiny_stream(model).generate(2).generate(2, prompt=tiny_prompt(5))
    ref_b = tiny_stream(model).generate(2).generate(2, prompt=tiny_prompt(6))
    assert torch.equal(a2.latents, ref_a.latents)
    assert torch.equal(b2.latents, ref_b.latents)


def test_branch_after_window_roll_replays(model) -> None:
    base = tiny_stream(model, window_frames=6, sink_frames=3).generate(2)
    a = base.generate(3)  # rolls the shared window
    with ForwardCounter(model) as count:
        b = base.generate(3)
    assert count.calls > 3 * 5  # had to replay the committed chunks first
    assert torch.equal(a.latents, b.latents)


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("kwargs", [{}, {"window_frames": 3, "sink_frames": 0}], ids=["global", "window"])
def test_interrupt_mid_chunk_keeps_snapshots_valid(model, kwargs) -> None:
    preset = "framewise-4step"
    reference = tiny_stream(model, preset, **kwargs).generate(6)
    stream = tiny_stream(model, preset, **kwargs).generate(4)
    calls = {"n": 0}

    def stop_at_second_step(step, steps, x0):
        calls["n"] += 1
        if calls["n"] == 6:  # second step of the second new chunk
            raise Interrupt

    with pytest.raises(Interrupt):
        stream.generate(2, on_step=stop_at_second_step)
    assert stream.num_frames == 4
    resumed = stream.generate(2)
    assert torch.equal(resumed.latents, reference.latents)


def test_prompt_switch_changes_only_later_chunks(model) -> None:
    base = tiny_stream(model).generate(2)
    plain = base.generate(2)
    switched = base.generate(2, prompt=tiny_prompt(9))
    recached = base.generate(2, prompt=tiny_prompt(9), recache=True)
    assert torch.equal(switched.latents[:, :6], plain.latents[:, :6])
    assert not torch.allclose(switched.latents[:, 6:], plain.latents[:, 6:])
    assert not torch.allclose(recached.latents[:, 6:], switched.latents[:, 6:])


def test_batch_of_two(model) -> None:
    stream = tiny_stream(model, batch=2).generate(2)
    assert stream.latents.shape == (2, 6, 16, 8, 8)
    assert not torch.allclose(stream.latents[0], stream.latents[1])


def test_image_to_video_context_is_kept(model) -> None:
    image = torch.randn(1, 1, 16, 8, 8)
    stream = tiny_stream(model, "framewise-2step", context=image).generate(3)
    assert stream.num_frames == 4 and stream.num_chunks == 3
    assert torch.equal(stream.latents[:, :1], image)


def test_extension_from_video_latents(model) -> None:
    first = tiny_stream(model).generate(2)
    extended = tiny_stream(model, context=first.latents, seed=3).generate(1)
    assert torch.equal(extended.latents[:, :6], first.latents)
    assert extended.num_frames == 9


def test_step_callback_sees_every_step(model) -> None:
    seen = []
    tiny_stream(model, "framewise-2step").generate(2, on_step=lambda s, n, x0: seen.append((s, n, tuple(x0.shape))))
    assert [s[:2] for s in seen] == [(1, 4), (2, 4), (3, 4), (4, 4), (1, 2), (2, 2)]
    assert seen[0][2] == (1, 1, 16, 8, 8)


class _Boom(Exception):
    pass


def _raise_on_call(model, name: str, after: int):
    """Make ``model.<name>`` raise _Boom on its ``after``-th call from now (0 = the next one)."""
    original = getattr(model, name)
    calls = {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > after:
            raise _Boom()
        return original(*args, **kwargs)

    setattr(model, name, failing)
    return lambda: delattr(model, name)


@pytest.mark.parametrize("window", [None, 6])
@pytest.mark.parametrize("where", [("forward", 0), ("write_cache", 0), ("write_cache", 1), ("forward", 3)])
def test_an_exception_in_any_pass_leaves_every_snapshot_correct(model, window, where) -> None:
    """A pass that raises while another branch is re-synced (or while the chunk is denoised) leaves the storage
    describing its cache: the next call continues exactly like a run that was never interrupted."""
    kwargs = {"window_frames": window, "sink_frames": 3} if window else {}
    a, b = tiny_prompt(1), tiny_prompt(2)
    s = tiny_stream(model, prompt=a, **kwargs).generate(3)
    s.rewind(3).generate(2, prompt=b, recache=True)  # another branch moves the shared cache
    expected = tiny_stream(model, prompt=a, **kwargs).generate(4).latents
    undo = _raise_on_call(model, *where)
    try:
        with pytest.raises(_Boom):
            s.generate(1)
    finally:
        undo()
    assert torch.equal(s.generate(1).latents, expected)
    assert torch.equal(s.generate(1).latents, expected)  # and again, from the storage it left
