"""Benchmark of the student core's stream: per-chunk latency, latent frames/s, memory, and baselines.

Prints one JSON document on stdout (logs go to stderr). Random weights: speed does not depend on their values.

    python bench/stream_bench.py --quick          # tiny config on CPU, a few seconds
    python bench/stream_bench.py                  # tiny on CPU, plus the Wan2.1-1.3B shape when a GPU is present

Measured per sampler preset: median and spread of the time per generated chunk (denoising steps + cache refresh),
latent frames per second, peak memory and KV-cache bytes; a no-cache baseline that recomputes the whole committed
context with a block-causal mask at every denoising step; and, with a local window, the time per chunk early in a
stream versus late (flat when the window works).
"""

from __future__ import annotations

import argparse
import logging
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_io import emit_report, sync  # noqa: E402

from causal_forcing_core.attention import block_causal_layout  # noqa: E402
from causal_forcing_core.config import DIT_PRESETS, SAMPLER_PRESETS, DiTConfig, SamplerConfig  # noqa: E402
from causal_forcing_core.dit import CausalWanModel  # noqa: E402
from causal_forcing_core.noise import SeededNoise  # noqa: E402
from causal_forcing_core.scheduler import FlowMatchScheduler  # noqa: E402
from causal_forcing_core.stream import Prompt, Stream, start_stream  # noqa: E402

logger = logging.getLogger("stream_bench")


def random_model(cfg: DiTConfig, device: torch.device, dtype: torch.dtype, seed: int = 0) -> CausalWanModel:
    """A DiT of shape ``cfg`` with N(0, 0.02) weights, built directly on ``device``."""
    torch.manual_seed(seed)
    with torch.device("meta"):
        model = CausalWanModel(cfg)
    model = model.to_empty(device=device)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    model = model.to(dtype)
    model.compute_dtype = dtype
    return model.eval().requires_grad_(False)


def _summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "median_s": statistics.median(ordered),
        "min_s": ordered[0],
        "max_s": ordered[-1],
        "p90_s": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
        "stdev_s": statistics.stdev(ordered) if len(ordered) > 1 else 0.0,
    }


def _peak_memory(device: torch.device) -> dict[str, float]:
    out = {"process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        out["cuda_peak_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def time_chunks(stream: Stream, chunks: int, warmup: int, device: torch.device) -> tuple[Stream, list[float]]:
    """Generate ``warmup + chunks`` chunks one at a time; return the stream and the timed chunks' seconds."""
    times = []
    for i in range(warmup + chunks):
        sync(device)
        t0 = time.perf_counter()
        stream = stream.generate(1)
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return stream, times


@torch.no_grad()
def no_cache_chunk(model: CausalWanModel, sampler: SamplerConfig, committed: torch.Tensor, prompt: Prompt,
                   chunk_index: int, seed: int) -> torch.Tensor:
    """One chunk without a KV cache: every step runs [committed frames at t=0 | noisy chunk] under a
    block-causal mask, recomputing the whole context. committed [B, F, C, h, w] -> x0 [B, n, C, h, w]."""
    sched = FlowMatchScheduler(sampler.shift)
    n = sampler.frames_per_block
    b, f, c, h, w = committed.shape
    steps = sched.warp(sampler.steps_for_chunk(chunk_index))
    x, renoise = SeededNoise(seed).chunk_noise(chunk_index, (b, n, c, h, w), len(steps) - 1)
    x = x.to(committed.device, committed.dtype)
    text = model.embed_text(prompt.embeds.to(committed.device))
    frame_tokens = model.config.tokens_per_frame(h, w)
    mask = block_causal_layout(f + n, n, frame_tokens) if f else None
    for i, t in enumerate(steps.tolist()):
        seq = torch.cat([committed, x], dim=1).permute(0, 2, 1, 3, 4)
        timestep = torch.cat([torch.zeros(b, f), torch.full((b, n), t)], dim=1)
        flow = model(seq, timestep, text, mask=mask).permute(0, 2, 1, 3, 4)[:, f:]
        x0 = sched.flow_to_x0(x.flatten(0, 1), flow.flatten(0, 1), torch.full((b * n,), t)).view_as(x)
        if i + 1 < len(steps):
            x = sched.add_noise(x0.flatten(0, 1), renoise[i].to(x0), torch.full((b * n,), float(steps[i + 1]))).view_as(x)
    return x0


def bench_preset(model, preset: str, *, height: int, width: int, chunks: int, warmup: int, device, seed: int = 0,
                 no_cache_chunks: int = 0) -> dict:
    sampler = SAMPLER_PRESETS[preset]
    prompt = Prompt(torch.randn(1, min(32, model.config.text_len), model.config.text_dim, generator=torch.Generator().manual_seed(1)))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    stream = start_stream(model, sampler, height=height, width=width, prompt=prompt, seed=seed,
                          capacity_frames=(warmup + chunks) * sampler.frames_per_block)
    stream, times = time_chunks(stream, chunks, warmup, device)
    frames = sampler.frames_per_block
    result = {
        "preset": preset,
        "frames_per_chunk": frames,
        "chunks_timed": chunks,
        "per_chunk": _summary(times),
        "latent_frames_per_s": frames / statistics.median(times),
        "kv_cache_bytes": stream.storage.cache.nbytes,
        **_peak_memory(device),
    }
    if no_cache_chunks:
        base_times, diffs = [], []
        latents = stream.latents
        for k in range(1, no_cache_chunks + 1):
            committed = latents[:, : k * frames]
            sync(device)
            t0 = time.perf_counter()
            x0 = no_cache_chunk(model, sampler, committed, prompt, k, seed)
            sync(device)
            base_times.append(time.perf_counter() - t0)
            diffs.append(float((x0.float() - latents[:, k * frames : (k + 1) * frames].float()).abs().max()))
        result["no_cache_baseline"] = {
            "per_chunk": _summary(base_times),
            "last_chunk_s": base_times[-1],
            "cached_median_s": statistics.median(times),
            "max_abs_diff_vs_cached": max(diffs),
        }
    return result


def bench_window(model, *, height: int, width: int, late: int, repeats: int, device,
                 window: int = 12, sink: int = 3) -> dict:
    """Time per chunk from the first chunk whose window is full (it attends to ``window`` frames: chunk 4 for 12
    frames of 3-frame chunks) vs around chunk ``late`` in one long chunk-wise stream, with a rolling window
    (should be flat: both attend to the same number of frames) and with global attention (grows with the context).
    Earlier chunks attend to fewer frames, so comparing with them would flatter the window."""
    sampler = SAMPLER_PRESETS["chunkwise-4step"]
    early = -(-window // sampler.frames_per_block)  # 1-based: the first chunk attending to a full window
    prompt = Prompt(torch.randn(1, min(32, model.config.text_len), model.config.text_dim,
                                generator=torch.Generator().manual_seed(2)))
    out: dict = {"window_frames": window, "sink_frames": sink, "first_full_window_chunk": early}
    for label, kwargs in (("window", {"window_frames": window, "sink_frames": sink}), ("global", {})):
        stream = start_stream(model, sampler, height=height, width=width, prompt=prompt, **kwargs)
        stream, times = time_chunks(stream, late + repeats - 1, 0, device)
        first = times[early - 1 : early - 1 + repeats]
        last = times[late - 1 : late - 1 + repeats]
        out[label] = {
            f"chunk_{early}": _summary(first),
            f"chunk_{late}": _summary(last),
            "late_over_early_median": statistics.median(last) / statistics.median(first),
            "kv_cache_bytes_at_end": stream.storage.cache.nbytes,
        }
    return out


def run(args: argparse.Namespace) -> dict:
    torch.set_grad_enabled(False)
    report: dict = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
        "runs": [],
    }
    targets = [("tiny", torch.device("cpu"), torch.float32, args.tiny_height, args.tiny_width)]
    if torch.cuda.is_available() and not args.quick:
        targets.append(("wan2.1-1.3b", torch.device("cuda"), torch.bfloat16, 480, 832))
        report["gpu"] = torch.cuda.get_device_name(0)
    presets = ["chunkwise-4step", "framewise-1step"] if args.quick else list(SAMPLER_PRESETS)
    for name, device, dtype, height, width in targets:
        cfg = DIT_PRESETS[name]
        model = random_model(cfg, device, dtype)
        entry = {"model": name, "device": str(device), "dtype": str(dtype).removeprefix("torch."),
                 "height": height, "width": width, "presets": []}
        chunks = args.chunks if device.type == "cpu" else args.gpu_chunks
        for preset in presets:
            logger.info("%s %s: %d chunks", name, preset, chunks)
            entry["presets"].append(bench_preset(
                model, preset, height=height, width=width, chunks=chunks, warmup=2, device=device,
                no_cache_chunks=0 if args.quick else min(chunks, 6),
            ))
        logger.info("%s: window flatness", name)
        entry["window"] = bench_window(
            model, height=height, width=width, late=10 if args.quick else 40,
            repeats=3 if args.quick else 5, device=device,
        )
        report["runs"].append(entry)
        del model
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny config, two presets, a few seconds")
    parser.add_argument("--chunks", type=int, default=10, help="timed chunks per preset on CPU")
    parser.add_argument("--gpu-chunks", type=int, default=14, help="timed chunks per preset on GPU")
    parser.add_argument("--tiny-height", type=int, default=128)
    parser.add_argument("--tiny-width", type=int, default=128)
    parser.add_argument("--output", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    emit_report(run(args), args.output)


if __name__ == "__main__":
    main()
