"""What the benchmark scripts share: device synchronisation, timing a reference job, per-chunk flatness and printing
the JSON report."""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so a timer read afterwards includes it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def emit_report(report: dict, output: Path | None) -> None:
    """Print ``report`` as one JSON document on stdout (and write it to ``output`` when given)."""
    text = json.dumps(report, indent=2)
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
    sys.stdout.write(text + "\n")


def median_time(job: Callable[[], object], repeats: int = 7, device: torch.device | None = None) -> float:
    """Median seconds of ``repeats`` runs of ``job``: the reference job timed at both ends of a long run, so a
    busier machine at one end shows up in it too."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        job()
        if device is not None:
            sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def per_chunk_summary(times: list[float], ref_early: float, ref_late: float, window: int = 100) -> dict:
    """Median per-chunk time of the first and last ``window`` chunks, their ratio, and the ratio divided by how
    much slower the reference job got between the two ends (1.0 = flat)."""
    early, late = statistics.median(times[:window]), statistics.median(times[-window:])
    return {f"first_{window}_median_ms": round(early * 1000, 3), f"last_{window}_median_ms": round(late * 1000, 3),
            "late_over_early": round(late / early, 3),
            "late_over_early_load_corrected": round((late / early) / (ref_late / ref_early), 3)}


def long_run_arguments(doc: str, argv: list[str] | None, log_level: int) -> argparse.Namespace:
    """The command line of the 1000-chunk memory benchmarks (``--chunks``, ``--size``, ``--output``), with logging
    to stderr and one CPU thread (so per-chunk times do not depend on what else the machine runs)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=1000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=log_level, stream=sys.stderr)
    torch.set_num_threads(1)
    return args
