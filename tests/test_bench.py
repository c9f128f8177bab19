"""The README's main job (the stream benchmark) runs and prints valid JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_stream_bench_quick_prints_json() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "stream_bench.py"), "--quick", "--chunks", "3"],
        check=True, capture_output=True, text=True, timeout=300,
    )
    report = json.loads(out.stdout)
    run = report["runs"][0]
    assert run["model"] == "tiny"
    presets = {p["preset"]: p for p in run["presets"]}
    assert set(presets) == {"chunkwise-4step", "framewise-1step"}
    for p in presets.values():
        assert p["per_chunk"]["median_s"] > 0 and p["latent_frames_per_s"] > 0
    assert run["window"]["window"]["kv_cache_bytes_at_end"] < run["window"]["global"]["kv_cache_bytes_at_end"]


def test_node_bench_prints_json() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "node_bench.py"), "--size", "64", "--chunks", "2", "--repeats", "1"],
        check=True, capture_output=True, text=True, timeout=300,
    )
    report = json.loads(out.stdout)
    assert set(report["per_chunk_ms"]) == {"core", "none", "latent2rgb", "cf_tiny_preview.safetensors"}
    assert all(v > 0 for v in report["per_chunk_ms"].values()) and report["decode_tiny_vae_per_chunk_ms"] > 0
