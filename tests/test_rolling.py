"""Rolling Forcing against the official ``long_video`` pipeline: ``tests/data/rolling_*`` were made by
``scripts/make_rolling_fixtures.py`` (the official code on the tiny parity weights; see tests/data/README.md).
Our :func:`causal_forcing_core.rolling.rolling_sample` with the recorded noise must give the official latents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from causal_forcing_core.noise import RecordedNoise
from causal_forcing_core.rolling import rolling_sample, window_blocks
from causal_forcing_core.scheduler import FlowMatchScheduler
from ci_env import require_parity_dir
from parity_cases import MEASURED, load_model, raw_steps

DATA = Path(__file__).parent / "data"
CASES = sorted(p.stem for p in DATA.glob("rolling_*.json"))
#: measured max |ours - official| over both cases: 1.4e-6 (complex64 RoPE) and 1.3e-6 (float64 RoPE); the issue asks 1e-4
ATOL = 1e-4


def test_both_fixture_cases_are_there() -> None:
    assert CASES == ["rolling_nonsquare", "rolling_square"]


def _sampler(meta: dict):
    from causal_forcing_core.config import SamplerConfig

    scheduler = FlowMatchScheduler(meta["pipeline_args"]["model_kwargs"]["timestep_shift"])
    steps = raw_steps(meta["denoising_step_list"], scheduler)
    return SamplerConfig(name="rolling-fixture", frames_per_block=meta["pipeline_args"]["num_frame_per_block"],
                         denoising_steps=steps, shift=scheduler.shift, warp=True,
                         context_noise=meta["pipeline_args"]["context_noise"]), scheduler


@pytest.mark.parametrize("rope_dtype", [None, torch.float64], ids=["complex64", "float64"])
@pytest.mark.parametrize("case", CASES)
def test_rolling_sample_matches_the_official_long_video_pipeline(case: str, rope_dtype) -> None:
    meta = json.loads((DATA / f"{case}.json").read_text())
    t = load_file(str(DATA / f"{case}.safetensors"))
    model = load_model(require_parity_dir(), meta["dit_config"], rope_dtype=rope_dtype)
    sampler, scheduler = _sampler(meta)
    n, blocks = meta["pipeline_args"]["num_frame_per_block"], meta["num_blocks"]
    queue = [t[f"renoise.{b:03d}.{k}"] for b in range(blocks) for k in range(len(meta["denoising_step_list"]) - 1)]
    noise = RecordedNoise(t["noise"], queue)
    h, w = meta["latent_hw"]
    frames = meta["official_frames"]
    out = rolling_sample(model, model.embed_text(t["prompt_embeds"]), sampler, scheduler, noise, num_blocks=blocks,
                         block_shape=(1, n, 16, h, w), max_attention_frames=frames["max_attention"],
                         capacity_frames=frames["kv_cache"])
    assert not noise.queue
    diff = (out - t["output"]).abs().max().item()
    MEASURED[f"{case}.output"] = max(diff, MEASURED.get(f"{case}.output", 0.0))
    assert out.shape == t["output"].shape and diff < ATOL, f"{case}: max abs diff {diff:.3g}"
    # the windows really rolled past the cache's capacity: blocks were shifted out behind the anchor
    assert blocks * n > frames["kv_cache"] and meta["kv_final"][0]["local_end_index"] == frames["kv_cache"] * meta[
        "frame_seq_length"]


def test_windows_fill_roll_and_drain() -> None:
    assert [list(window_blocks(w, 6, 4)) for w in range(9)] == [
        [0], [0, 1], [0, 1, 2], [0, 1, 2, 3], [1, 2, 3, 4], [2, 3, 4, 5], [3, 4, 5], [4, 5], [5]]
    assert [list(window_blocks(w, 2, 4)) for w in range(5)] == [[0], [0, 1], [0, 1], [0, 1], [1]]
