"""LongLive re-cache on a prompt switch, both modes, against LongLive's own code: ``tests/data/longlive_*`` were made
by ``scripts/make_longlive_fixtures.py`` (NVlabs/LongLive v1.0 on the tiny parity weights; tests/data/README.md).
A stream with a 6-frame window and a 3-frame sink switches at block 3 and makes 3 more blocks, so the window rolls
past the re-encoded sink."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from causal_forcing_core.errors import InvalidInputError
from causal_forcing_core.geometry import WAN21
from causal_forcing_core.kv_cache import Recache
from causal_forcing_core.noise import RecordedNoise
from causal_forcing_core.scheduler import FlowMatchScheduler
from causal_forcing_core.stream import Prompt, start_stream
from ci_env import require_parity_dir
from parity_cases import MEASURED, load_model, raw_steps

DATA = Path(__file__).parent / "data"
#: LongLive's flag -> our mode (named after what it does)
MODES = {"longlive_keep_sink": Recache.RECENT, "longlive_reencode_sink": Recache.WINDOW}
#: measured max |ours - LongLive| over output and final cache: recent 2.3e-6 (complex64 RoPE) / 0 (float64), window
#: 1.9e-6 / 1.6e-6; the issue asks 1e-4
ATOL = 1e-4


def _start(case: str, rope_dtype=None):
    """The case's settings, tensors, a fresh stream under prompt A and its recorded noise."""
    meta = json.loads((DATA / f"{case}.json").read_text())
    t = load_file(str(DATA / f"{case}.safetensors"))
    model = load_model(require_parity_dir(), meta["dit_config"], rope_dtype=rope_dtype)
    from causal_forcing_core.config import SamplerConfig

    args = meta["pipeline_args"]
    scheduler = FlowMatchScheduler(args["model_kwargs"]["timestep_shift"])
    sampler = SamplerConfig(name=case, frames_per_block=args["num_frame_per_block"],
                            denoising_steps=raw_steps(meta["denoising_step_list"], scheduler),
                            shift=scheduler.shift, warp=True, context_noise=args["context_noise"])
    h, w = meta["latent_hw"]
    kwargs = args["model_kwargs"]
    stream = start_stream(model, sampler, height=h * WAN21.spatial_stride, width=w * WAN21.spatial_stride,
                          prompt=Prompt(t["prompt_embeds_a"], "A"), window_frames=kwargs["local_attn_size"],
                          sink_frames=kwargs["sink_size"])
    return meta, t, stream, RecordedNoise(t["noise"], list(t["renoise"]))


def _switch_block(meta: dict) -> int:
    return -(-meta["switch_frame"] // meta["pipeline_args"]["num_frame_per_block"])


def _run(case: str, rope_dtype=None):
    meta, t, stream, noise = _start(case, rope_dtype)
    switch_block = _switch_block(meta)
    stream = stream.generate(switch_block, noise=noise)
    stream = stream.generate(meta["num_blocks"] - switch_block, prompt=Prompt(t["prompt_embeds_b"], "B"),
                             recache=MODES[case], noise=noise)
    assert not noise.queue
    return meta, t, stream


def _diff(a: torch.Tensor, b: torch.Tensor, what: str) -> float:
    assert a.shape == b.shape, f"{what}: {list(a.shape)} != {list(b.shape)}"
    diff = (a.float() - b.float()).abs().max().item()
    MEASURED[what] = max(diff, MEASURED.get(what, 0.0))
    return diff


@pytest.mark.parametrize("rope_dtype", [None, torch.float64], ids=["complex64", "float64"])
@pytest.mark.parametrize("case", sorted(MODES))
def test_recache_matches_longlive(case: str, rope_dtype) -> None:
    meta, t, stream = _run(case, rope_dtype)
    assert _diff(stream.latents, t["output"], f"{case}.output") < ATOL
    cache, fsl = stream.kv_cache, meta["frame_seq_length"]
    for layer, final in enumerate(meta["kv_final"]):
        assert cache.global_end * fsl == final["global_end_index"] and cache.local_end * fsl == final["local_end_index"]
        k, v = cache.valid(layer)
        assert _diff(k, t[f"kv_final.layer{layer}.k"], f"{case}.kv_final.k") < ATOL
        assert _diff(v, t[f"kv_final.layer{layer}.v"], f"{case}.kv_final.v") < ATOL


def test_the_two_modes_give_different_videos_and_the_fixtures_record_both() -> None:
    keep, reencode = (json.loads((DATA / f"{c}.json").read_text()) for c in sorted(MODES))
    assert keep["global_sink"] is True and reencode["global_sink"] is False
    a, b = (load_file(str(DATA / f"{c}.safetensors"))["output"] for c in sorted(MODES))
    switch = keep["switch_frame"]
    assert torch.equal(a[:, :switch], b[:, :switch]) and (a[:, switch:] - b[:, switch:]).abs().max() > 1e-2


def test_a_snapshot_before_a_window_recache_continues_as_if_it_never_happened() -> None:
    """The window re-cache overwrites the sink: rewinding past it replays the cache, and the old snapshot's next
    chunk is the one a stream that never switched makes."""
    meta, t, stream = _run("longlive_reencode_sink")
    frames = _switch_block(meta) * meta["pipeline_args"]["num_frame_per_block"]
    rewound = stream.rewind(frames).generate(1)
    _, _, fresh, noise = _start("longlive_reencode_sink")
    fresh = fresh.generate(_switch_block(meta), noise=noise).generate(1)
    assert torch.equal(rewound.latents, fresh.latents)
    assert not torch.equal(rewound.latents[:, frames:], stream.latents[:, frames : frames + 3])


def test_recache_modes_read_from_options() -> None:
    assert Recache.of(True) is Recache.RECENT and Recache.of(False) is Recache.OFF and Recache.of("window") is Recache.WINDOW
    assert not Recache.OFF and Recache.WINDOW and str(Recache.WINDOW) == "window"
    with pytest.raises(InvalidInputError, match="off, recent, window"):
        Recache.of("sink")
