"""Rolling Forcing against the plain chunk-wise loop: time and DiT work per new block.

Prints one JSON document on stdout (logs go to stderr). Random weights: speed does not depend on their values.

    python bench/rolling_bench.py --quick     # tiny config, 8x8 latents, 12 blocks: seconds
    python bench/rolling_bench.py             # also a mid-size config at 16x16 latents (a minute on 2 CPU cores)

For each configuration both samplers make the same number of blocks, with the same noise (seed, block):

- ``plain``: the stream (4 denoising forwards of one block, then its cache refresh), with a local window of 21
  latent frames and a 3-frame sink, the long-video setting of the plain loop;
- ``rolling``: :func:`causal_forcing_core.rolling.rolling_sample` (one forward over the 4-block window, then the
  oldest block's refresh), cache capped at 21 frames of attention.

Reported per sampler: seconds per block (median over the blocks after the first window fills, and the whole run /
blocks), DiT forwards and query frames per block (counted, not estimated), and the ratio rolling / plain.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_io import emit_report, sync  # noqa: E402
from stream_bench import random_model  # noqa: E402

from causal_forcing_core.config import SAMPLER_PRESETS, TINY, DiTConfig  # noqa: E402
from causal_forcing_core.geometry import WAN21  # noqa: E402
from causal_forcing_core.noise import SeededNoise  # noqa: E402
from causal_forcing_core.rolling import rolling_sample  # noqa: E402
from causal_forcing_core.scheduler import FlowMatchScheduler  # noqa: E402
from causal_forcing_core.stream import Prompt, start_stream  # noqa: E402

logger = logging.getLogger("rolling_bench")
#: a config between the tiny one and Wan 2.1 1.3B, big enough for matmuls to dominate on a CPU
MID = DiTConfig(dim=384, ffn_dim=1024, num_heads=6, num_layers=6, text_dim=64, text_len=16)


class ForwardCounter:
    """Counts DiT forwards and the latent frames they take (a forward pre-hook)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.calls = self.frames = 0
        self.times: list[float] = []
        self.handle = model.register_forward_pre_hook(self._hook)
        self.write = model.write_cache
        model.write_cache = self._write  # the refresh pass is not a forward()

    def _hook(self, module: torch.nn.Module, args: tuple) -> None:
        self.calls += 1
        self.frames += int(args[0].shape[2])

    def _write(self, x: torch.Tensor, *args, **kwargs) -> None:
        self.calls += 1
        self.frames += int(x.shape[2])
        return self.write(x, *args, **kwargs)

    def remove(self, model: torch.nn.Module) -> None:
        self.handle.remove()
        model.write_cache = self.write


def bench_config(name: str, cfg: DiTConfig, latent: int, blocks: int, device: torch.device) -> dict:
    model = random_model(cfg, device, torch.float32)
    sampler = SAMPLER_PRESETS["chunkwise-4step"]
    scheduler = FlowMatchScheduler(sampler.shift)
    n, steps = sampler.frames_per_block, sampler.num_steps
    prompt = Prompt(torch.randn(1, cfg.text_len, cfg.text_dim))
    size = latent * WAN21.spatial_stride
    result: dict = {"config": name, "dim": cfg.dim, "layers": cfg.num_layers, "latent": [latent, latent],
                    "blocks": blocks}

    counter = ForwardCounter(model)
    stream = start_stream(model, sampler, height=size, width=size, prompt=prompt, seed=0,
                          window_frames=WAN21.trained_latent_frames, sink_frames=n)
    per_block = []
    t_all = time.perf_counter()
    for _ in range(blocks):
        t0 = time.perf_counter()
        stream = stream.generate(1)
        sync(device)
        per_block.append(time.perf_counter() - t0)
    total = time.perf_counter() - t_all
    plain_stream = stream
    result["plain"] = {"s_per_block_median": round(statistics.median(per_block[steps:]), 5),
                       "s_per_block_mean": round(total / blocks, 5), "forwards_per_block": counter.calls / blocks,
                       "query_frames_per_block": counter.frames / blocks}
    counter.remove(model)

    counter = ForwardCounter(model)
    rolling_stream = start_stream(model, SAMPLER_PRESETS["rolling-4step"], height=size, width=size, prompt=prompt,
                                  seed=0).generate(steps + 1)
    front = rolling_stream.history[-1].front
    result["rolling_stream"] = {
        "front_bytes_per_chunk": sum(f.x.nbytes + sum(r.nbytes for r in f.renoise) for f in front),
        "latent_bytes_per_chunk": rolling_stream.history[-1].latents.nbytes,
        "kv_cache_bytes": rolling_stream.kv_cache.nbytes, "plain_window_kv_cache_bytes": plain_stream.kv_cache.nbytes,
        "what": "CPU memory a rolling snapshot keeps for its window (inputs + re-noise still to come), next to the "
                "chunk's own latents; a lineage keeps windows for its newest chunks and every few chunks only "
                "(rolling_storage), and recomputes the others when a snapshot continues from them"}
    counter.remove(model)
    counter = ForwardCounter(model)
    text = model.embed_text(prompt.embeds)
    t0 = time.perf_counter()
    rolling_sample(model, text, SAMPLER_PRESETS["rolling-4step"], scheduler, SeededNoise(0), num_blocks=blocks,
                   block_shape=(1, n, 16, latent, latent))
    sync(device)
    total = time.perf_counter() - t0
    result["rolling"] = {"s_per_block_mean": round(total / blocks, 5),
                         "forwards_per_block": round(counter.calls / blocks, 3),
                         "query_frames_per_block": round(counter.frames / blocks, 3),
                         "what": "the window fills and drains once per video, so per block it tends to 2 forwards "
                                 f"of {steps * n} + {n} frames as blocks grow"}
    counter.remove(model)
    result["rolling_over_plain_time"] = round(result["rolling"]["s_per_block_mean"] / result["plain"]["s_per_block_mean"],
                                              3)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the tiny config only")
    parser.add_argument("--blocks", type=int, default=12)
    parser.add_argument("--output", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    runs = [("tiny", TINY, 8)] + ([] if args.quick else [("mid", MID, 16)])
    report = {"torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads(),
              "results": [bench_config(name, cfg, latent, args.blocks, device) for name, cfg, latent in runs]}
    emit_report(report, args.output)


if __name__ == "__main__":
    main()
