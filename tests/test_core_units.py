"""Layer 1: configs, RoPE offsets, cache maths and scheduler rules."""

from __future__ import annotations

import math

import pytest
import torch

from causal_forcing_core.config import SAMPLER_PRESETS, TINY, WAN_1_3B, DiTConfig
from causal_forcing_core.dit import CausalWanModel, block_causal_mask, teacher_forcing_mask
from causal_forcing_core.kv_cache import KVCache
from causal_forcing_core.rope import RotaryTables, apply_rope, rope_angles, rope_split, rope_table
from causal_forcing_core.scheduler import FlowMatchScheduler
from tiny import tiny_model


def test_config_inferred_from_state_dict() -> None:
    sd = tiny_model().state_dict()
    inferred = DiTConfig.from_state_dict(sd, num_heads=2, text_len=16)
    assert inferred == TINY


def test_wan_1_3b_shape_inferred_on_meta_device() -> None:
    with torch.device("meta"):
        model = CausalWanModel(WAN_1_3B)
    assert DiTConfig.from_state_dict(model.state_dict()) == WAN_1_3B
    assert sum(p.numel() for p in model.parameters()) == 1_418_996_800


def test_rope_split_for_wan_heads() -> None:
    assert rope_split(128) == (22, 21, 21)
    assert rope_split(32) == (6, 5, 5)


def test_rope_at_offset_equals_slice_of_longer_grid() -> None:
    full = rope_angles(128, 0, (8, 2, 3))
    part = rope_angles(128, 5, (3, 2, 3))
    assert torch.equal(full[5 * 6 :], part)


def test_rope_matches_reference_table_formula() -> None:
    # reference: polar(1, outer(arange(1024), 1 / 10000 ** (arange(0, d, 2) / d))) for d = 44 (frames)
    d = 44
    table = torch.polar(
        torch.ones(1024, d // 2, dtype=torch.float64),
        torch.outer(torch.arange(1024), 1.0 / torch.pow(10000, torch.arange(0, d, 2).to(torch.float64).div(d))),
    )
    exact = rope_table(128, 1000, (3, 1, 1), dtype=torch.float64)
    assert torch.equal(exact.rotation[:, 0, : d // 2], table[1000:1003])


def test_rope_preserves_norm_and_keeps_dtype() -> None:
    x = torch.randn(1, 12, 2, 32)
    y = apply_rope(x, rope_table(32, 3, (3, 2, 2)))
    assert y.dtype == x.dtype
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))


def test_float64_rope_is_the_reference_complex_rotation() -> None:
    """float64 tables reproduce the reference's view_as_complex(x.double()) * polar(1, angles) exactly; the float32
    (complex64) rotation differs from it by at most a few float32 ulps (measured 4.8e-7 on unit-normal inputs)."""
    x = torch.randn(1, 3 * 4 * 4, 2, 32, generator=torch.Generator().manual_seed(0))
    angles = rope_angles(32, 7, (3, 4, 4))
    reference = torch.view_as_real(
        torch.view_as_complex(x.double().unflatten(-1, (-1, 2))) * torch.polar(torch.ones_like(angles), angles)
    ).flatten(-2).float()
    assert torch.equal(apply_rope(x, rope_table(32, 7, (3, 4, 4), dtype=torch.float64)), reference)
    fast = apply_rope(x, rope_table(32, 7, (3, 4, 4)))
    assert 0 < (fast - reference).abs().max() < 1e-6


def test_rotary_tables_are_computed_once_per_position_range() -> None:
    tables = RotaryTables(32, size=2)
    a = tables.get(3, (3, 2, 2), torch.device("cpu"), torch.float32)
    assert tables.get(3, (3, 2, 2), torch.device("cpu"), torch.float32) is a
    assert tables.get(6, (3, 2, 2), torch.device("cpu"), torch.float32) is not a
    tables.get(9, (3, 2, 2), torch.device("cpu"), torch.float32)
    assert tables.get(3, (3, 2, 2), torch.device("cpu"), torch.float32) is not a  # evicted (size 2)


def _filled_cache(window: int | None, sink: int, blocks: int, block: int = 1) -> KVCache:
    cache = KVCache(
        num_layers=1, batch=1, num_heads=1, head_dim=2, frame_tokens=1, capacity_frames=4, window_frames=window,
        sink_frames=sink,
    )
    for b in range(blocks):
        start = b * block
        cache.open_block(start, block)
        for step in range(2):  # a denoising step and the refresh pass rewrite the same slots
            frames = torch.arange(start, start + block, dtype=torch.float32).view(1, block, 1, 1).expand(1, block, 1, 2)
            cache.write(0, frames + (1 - step) * 100, frames)
        cache.commit_block()
    return cache


def test_window_rolls_and_keeps_sink_frames() -> None:
    cache = _filled_cache(window=4, sink=1, blocks=7)
    assert (cache.global_end, cache.local_end) == (7, 4)
    assert cache.valid(0)[0][0, :, 0, 0].tolist() == [0, 4, 5, 6]


def test_global_cache_never_evicts() -> None:
    cache = _filled_cache(window=None, sink=0, blocks=7)
    assert cache.valid(0)[0][0, :, 0, 0].tolist() == list(range(7))


def test_rewind_and_estimate() -> None:
    cache = _filled_cache(window=None, sink=0, blocks=5)
    cache.rewind(2)
    assert (cache.global_end, cache.local_end) == (2, 2)
    est = KVCache.estimate_bytes(
        num_layers=30, batch=1, num_heads=12, head_dim=128, frame_tokens=1560, capacity_frames=21, dtype=torch.bfloat16
    )
    assert est == 30 * 2 * 32760 * 1536 * 2  # reference §1.7: about 6.04 GB


def test_masks_match_their_definitions() -> None:
    m = block_causal_mask(4, 2, 1)
    assert m.tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]]
    tf = teacher_forcing_mask(4, 2, 1)
    noisy_block1 = tf[6].tolist()  # noisy frame 2 (block 1): clean block 0 + noisy block 1
    assert noisy_block1 == [1, 1, 0, 0, 0, 0, 1, 1]
    clean_block0 = tf[0].tolist()
    assert clean_block0 == [1, 1, 0, 0, 0, 0, 0, 0]


def test_scheduler_shift_and_nearest_lookup() -> None:
    s = FlowMatchScheduler(5.0)
    assert s.warp([1000, 750, 500, 250]).tolist() == pytest.approx([1000.0, 937.5, 833.3333, 625.0], rel=1e-6)
    assert float(s.sigma_of(torch.tensor([0.0]))[0]) == pytest.approx(0.00498, abs=1e-4)
    x0, eps = torch.randn(2, 3), torch.randn(2, 3)
    xt = s.add_noise(x0, eps, torch.tensor([937.5, 625.0]))
    flow = eps - x0
    torch.testing.assert_close(s.flow_to_x0(xt, flow, torch.tensor([937.5, 625.0])), x0, atol=1e-5, rtol=1e-5)
    w = s.training_weight(s.timesteps)
    assert math.isclose(float(w.mean()), 1.0, rel_tol=1e-4) and float(w.min()) == 0.0


def test_sampler_presets() -> None:
    assert SAMPLER_PRESETS["chunkwise-4step"].frames_per_block == 3
    two = SAMPLER_PRESETS["framewise-2step"]
    assert two.steps_for_chunk(0) == (1000, 750, 500, 250) and two.steps_for_chunk(1) == (1000, 500)
    assert SAMPLER_PRESETS["framewise-1step"].steps_for_chunk(5) == (1000,)
    assert not SAMPLER_PRESETS["chunkwise-4step"].supports_i2v


@pytest.mark.parametrize("kind", ["block_causal", "teacher_forcing"])
@pytest.mark.parametrize("frames,per_block", [(6, 3), (5, 2), (4, 1)])
def test_block_layouts_attend_like_their_dense_masks(kind: str, frames: int, per_block: int) -> None:
    """One SDPA call per query block over its keys gives the masked attention (a few float32 ulps apart: the
    kernels sum in another order; measured 4.8e-7 on outputs, up to 6.2e-6 on gradients of magnitude 6 on an AMD EPYC,
    2.4e-6 elsewhere), gradients included."""
    from causal_forcing_core.attention import attention, block_causal_layout, teacher_forcing_layout

    tokens = 3
    make = block_causal_layout if kind == "block_causal" else teacher_forcing_layout
    layout = make(frames, per_block, tokens)
    dense = (block_causal_mask if kind == "block_causal" else teacher_forcing_mask)(frames, per_block, tokens)
    assert torch.equal(layout.dense(), dense)
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, layout.length, 2, 8, generator=gen, requires_grad=True) for _ in range(3))
    ours, reference = attention(q, k, v, layout), attention(q, k, v, dense)
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=0)
    grads = torch.autograd.grad(ours.square().sum(), (q, k, v))
    expected = torch.autograd.grad(reference.square().sum(), (q, k, v))
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=0)


def test_a_real_size_layout_is_a_few_ranges() -> None:
    from causal_forcing_core.attention import teacher_forcing_layout

    layout = teacher_forcing_layout(21, 3, 1560)  # 2 x 21 frames x 1560 tokens: a dense mask would be 4.3 GB
    assert layout.length == 65_520 and len(layout.blocks) == 14
    assert layout.blocks[8].keys == ((0, 1560 * 3), (32_760 + 1560 * 3, 32_760 + 1560 * 6))  # noisy block 1


def test_trim_padding_cuts_padding_and_counts_the_tokens_of_a_long_prompt() -> None:
    from causal_forcing_core.errors import InvalidInputError
    from causal_forcing_core.prompt import trim_padding

    embeds = torch.zeros(1, 20, 4)
    embeds[:, :11] = 1.0
    assert torch.equal(trim_padding(embeds, 16), embeds[:, :16])
    embeds[:, 17, 2] = -0.5  # a real token at row 17: 18 tokens
    with pytest.raises(InvalidInputError, match=r"^The prompt has 18 tokens; this model reads at most 16\. Shorten it\.$"):
        trim_padding(embeds, 16)
