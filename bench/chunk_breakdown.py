"""Where the time of one generated chunk goes: DiT passes, matmuls, attention, RoPE, KV-cache updates, the rest.

Wraps the functions that do each kind of work with wall-clock timers (on the CPU every op is synchronous, so the
sums are exact; on a GPU the figures are meaningless and the breakdown refuses to run), generates chunks, and
reports per-chunk seconds by category plus the fp32 FLOP rate against the machine's matmul peak.

    python bench/chunk_breakdown.py                  # the small config: dim 256, 4 layers, 104 tokens per frame
    python bench/chunk_breakdown.py --threads 2 --chunks 12

Categories (nested ones are reported inside their parent, and subtracted to get "other"):

- ``dit_passes``: every denoising forward and cache-refresh pass (``CausalWanModel.forward`` / ``write_cache``);
  inside it ``linear`` (every projection, FFN and head matmul), ``attention`` (SDPA), ``rope`` (table lookup and
  rotation), ``cache_writes`` (K/V copies into the cache) and ``other_in_dit`` (norms, modulation, residuals,
  patchify);
- ``outside_dit``: the sampler and stream around the passes (noise, x0, re-noising, history, Python).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_io import emit_report  # noqa: E402

from causal_forcing_core import dit as dit_module  # noqa: E402
from causal_forcing_core.config import SAMPLER_PRESETS, DiTConfig  # noqa: E402
from causal_forcing_core.dit import CausalWanModel  # noqa: E402
from causal_forcing_core.kv_cache import KVCache  # noqa: E402
from causal_forcing_core.stream import Prompt, start_stream  # noqa: E402

logger = logging.getLogger("chunk_breakdown")

#: the side-by-side config: dim 256, 4 layers, 2 heads of 128; 128x208 pixels = 16x26 latents = 104 tokens a frame
SMALL = DiTConfig(dim=256, ffn_dim=1536, num_heads=2, num_layers=4)
SMALL_SIZE = (128, 208)


class Timers:
    """Wall-clock seconds and call counts per category, and the FLOPs of the timed matmuls."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.flops = 0.0

    def wrap(self, owner: Any, name: str, category: str, flops: Callable[..., float] | None = None) -> Callable:
        original = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[category] += time.perf_counter() - t0
                self.calls[category] += 1
                if flops is not None:
                    self.flops += flops(*args, **kwargs)

        setattr(owner, name, timed)
        return original


def _linear_flops(module: torch.nn.Linear, x: torch.Tensor) -> float:
    return 2.0 * x.numel() / x.shape[-1] * module.in_features * module.out_features


def _attention_flops(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Any = None) -> float:
    b, lq, h, d = q.shape
    return 4.0 * b * h * lq * k.shape[1] * d


@contextmanager
def instrumented(timers: Timers) -> Iterator[None]:
    """Time every category while inside (see the module docstring); restores the originals on exit."""
    patches = [
        (CausalWanModel, "forward", "dit_passes", None),
        (CausalWanModel, "write_cache", "dit_passes", None),
        (dit_module.Linear, "forward", "linear", _linear_flops),
        (dit_module, "attention", "attention", _attention_flops),
        (dit_module, "apply_rope", "rope", None),
        (CausalWanModel, "_rope", "rope", None),
        (KVCache, "write", "cache_writes", None),
        (KVCache, "open_block", "cache_writes", None),
    ]
    originals = [(owner, name, timers.wrap(owner, name, cat, fl)) for owner, name, cat, fl in patches]
    try:
        yield
    finally:
        for owner, name, original in reversed(originals):
            setattr(owner, name, original)


def matmul_peak_gflops(size: int = 1024, repeats: int = 10) -> float:
    """The machine's fp32 matmul rate (GFLOP/s) on a square ``size`` matmul, best of ``repeats``."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def random_model(config: DiTConfig, seed: int = 0) -> CausalWanModel:
    torch.manual_seed(seed)
    model = CausalWanModel(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    return model.eval().requires_grad_(False)


@torch.no_grad()
def breakdown(config: DiTConfig = SMALL, size: tuple[int, int] = SMALL_SIZE, *, preset: str = "chunkwise-4step",
              chunks: int = 8, warmup: int = 2) -> dict:
    """Per-chunk seconds by category (medians over ``chunks`` chunks after ``warmup``), FLOPs and the share of
    the fp32 matmul peak."""
    model = random_model(config)
    prompt = Prompt(torch.randn(1, 64, config.text_dim, generator=torch.Generator().manual_seed(1)))
    sampler = SAMPLER_PRESETS[preset]
    stream = start_stream(model, sampler, height=size[0], width=size[1], prompt=prompt, seed=0,
                          capacity_frames=(chunks + warmup) * sampler.frames_per_block)
    stream = stream.generate(warmup)
    rows: list[dict[str, float]] = []
    flops: list[float] = []
    for _ in range(chunks):
        timers = Timers()
        with instrumented(timers):
            t0 = time.perf_counter()
            stream = stream.generate(1)
            total = time.perf_counter() - t0
        s = timers.seconds
        inner = s["linear"] + s["attention"] + s["rope"] + s["cache_writes"]
        rows.append({
            "total": total, "dit_passes": s["dit_passes"], "linear": s["linear"], "attention": s["attention"],
            "rope": s["rope"], "cache_writes": s["cache_writes"], "other_in_dit": s["dit_passes"] - inner,
            "outside_dit": total - s["dit_passes"],
        })
        flops.append(timers.flops)
    median = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    peak = matmul_peak_gflops()
    achieved = statistics.median(flops) / median["total"] / 1e9
    frame_tokens = config.tokens_per_frame(size[0] // 8, size[1] // 8)
    return {
        "config": {**config.to_dict(), "height": size[0], "width": size[1], "frame_tokens": frame_tokens,
                   "preset": preset, "dtype": "float32", "threads": torch.get_num_threads()},
        "per_chunk_s": median,
        "share_of_chunk": {k: v / median["total"] for k, v in median.items() if k != "total"},
        "gflop_per_chunk": statistics.median(flops) / 1e9,
        "achieved_gflops": achieved,
        "matmul_peak_gflops": peak,
        "share_of_matmul_peak": achieved / peak,
        "chunks_timed": chunks,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the side-by-side used 2)")
    parser.add_argument("--preset", default="chunkwise-4step", choices=sorted(SAMPLER_PRESETS))
    parser.add_argument("--output", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    torch.set_num_threads(args.threads)
    emit_report(breakdown(preset=args.preset, chunks=args.chunks), args.output)


if __name__ == "__main__":
    main()
