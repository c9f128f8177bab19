"""Memory and time of a 1000-chunk stream in the core, at chunk 100 and at the end: the plain loop with a local
window and Rolling Forcing. Prints one JSON document on stdout (logs go to stderr).

    python bench/memory_table.py [--chunks 1000] [--size 64]

Random tiny weights on the CPU (CUDA when present). Per sampler, at chunk 100 and at the last chunk:

- process RSS (``/proc/self/statm``), and the device's allocated bytes on CUDA (None on the CPU);
- the self-attention cache's bytes (flat when the window works);
- what the snapshots keep: committed latents, and for Rolling Forcing the windows the snapshots carry (``front``);
- per-chunk time: the median of the first 100 chunks and of the last 100, and their ratio, corrected for machine
  load by a reference job timed beside them (the median of 7 fresh 4-chunk streams at both ends).
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_io import emit_report, long_run_arguments, median_time, per_chunk_summary, sync  # noqa: E402
from live_bench import rss_bytes  # noqa: E402
from stream_bench import random_model  # noqa: E402

from causal_forcing_core.config import SAMPLER_PRESETS, TINY  # noqa: E402
from causal_forcing_core.stream import ChunkEvent, Prompt, start_stream  # noqa: E402

logger = logging.getLogger("memory_table")
MB = 2**20
#: the settings compared: (name, preset, window frames, sink frames)
RUNS = (("plain window 12 + sink 3", "chunkwise-4step", 12, 3), ("rolling forcing", "rolling-4step", 0, 0))


def _kept_bytes(stream) -> dict[str, int]:
    latents = front = 0
    for event in stream.history:
        if isinstance(event, ChunkEvent):
            latents += event.latents.nbytes
            front += sum(f.x.nbytes + sum(r.nbytes for r in f.renoise) for f in event.front or ())
    return {"committed_latents": latents, "rolling_fronts": front}


def _point(stream, device: torch.device) -> dict:
    kept = _kept_bytes(stream)
    return {"rss_mb": round(rss_bytes() / MB, 1),
            "device_allocated_mb": round(torch.cuda.memory_allocated(device) / MB, 1) if device.type == "cuda" else None,
            "kv_cache_bytes": stream.kv_cache.nbytes, "committed_latents_mb": round(kept["committed_latents"] / MB, 2),
            "rolling_fronts_mb": round(kept["rolling_fronts"] / MB, 2)}


def run(name: str, preset: str, window: int, sink: int, chunks: int, size: int, device: torch.device) -> dict:
    model = random_model(TINY, device, torch.float32)
    prompt = Prompt(torch.randn(1, TINY.text_len, TINY.text_dim))
    sampler = SAMPLER_PRESETS[preset]

    def fresh():
        return start_stream(model, sampler, height=size, width=size, prompt=prompt, seed=0,
                            window_frames=window or None, sink_frames=sink)

    def reference() -> float:  # the same small job at both ends: how loaded the machine is
        return median_time(lambda: fresh().generate(sampler.num_steps), device=device)

    stream, times, points = fresh(), [], {}
    ref_early = reference()
    for k in range(chunks):
        t0 = time.perf_counter()
        stream = stream.generate(1)
        sync(device)
        times.append(time.perf_counter() - t0)
        if k + 1 in (100, chunks):
            points[f"at_chunk_{k + 1}"] = _point(stream, device)
    ref_late = reference()
    return {"run": name, "preset": preset, "chunks": chunks, **points,
            "per_chunk_ms": per_chunk_summary(times, ref_early, ref_late)}


def main(argv: list[str] | None = None) -> None:
    args = long_run_arguments(__doc__, argv, logging.INFO)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results = []
    for name, preset, window, sink in RUNS:
        logger.info("%s: %d chunks", name, args.chunks)
        results.append(run(name, preset, window, sink, args.chunks, args.size, device))
    emit_report({"torch": torch.__version__, "device": str(device), "size": [args.size, args.size],
                 "model": "tiny", "results": results}, args.output)


if __name__ == "__main__":
    main()
