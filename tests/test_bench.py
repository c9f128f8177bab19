"""The benchmarks run end to end and print valid JSON (slow: each runs real streams in a process of its own)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


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


def test_live_bench_quick_prints_json() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "live_bench.py"), "--quick"],
        check=True, capture_output=True, text=True, timeout=600,
    )
    report = json.loads(out.stdout)
    assert set(report) >= {"header", "long_run", "prompt_change_latency", "live_fps"}
    assert report["header"]["size"] == [64, 64] and report["header"]["model"]["config"]["dim"] > 0
    long_run = report["long_run"]
    assert long_run["chunks"] == 60 and long_run["window_frames"] == 12 and long_run["sink_frames"] == 3
    cache = long_run["kv_cache_bytes"]
    assert cache["equal"] and cache["at_chunk_10"] == cache["at_end"] > 0 and len(cache["distinct_values"]) == 1
    assert long_run["global_attention"]["kv_cache_bytes_per_chunk"][-1] > cache["at_end"]
    assert long_run["committed_latents"]["bytes_at_end"] == 60 * long_run["committed_latents"]["bytes_per_chunk"]
    assert {"growth", "expected_growth_from_committed_latents"} <= set(long_run["rss_mb"])
    per_chunk = long_run["per_chunk_ms"]
    assert per_chunk["first_30"]["median"] > 0 and per_chunk["last_30"]["p90"] > 0
    for mode in ("realtime", "not_realtime"):
        latency = report["prompt_change_latency"][mode]
        assert latency["seen"] == latency["changes"] == 3 and latency["latency_ms"]["median"] > 0
        assert latency["latency_chunks"]["max"] >= 1
    decoders = report["live_fps"]["decoders"]
    assert set(decoders) == {"none", "latent2rgb", "tiny_preview", "tiny_wan_vae"}
    assert all(d["pixel_frames_per_s"]["median"] > 0 for d in decoders.values())


def test_rolling_bench_quick_prints_json() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "rolling_bench.py"), "--quick", "--blocks", "6"],
        check=True, capture_output=True, text=True, timeout=300,
    )
    (run,) = json.loads(out.stdout)["results"]
    assert run["config"] == "tiny" and run["blocks"] == 6
    # counted, not estimated: 4 denoising forwards + 1 refresh per plain block; 9 windows x 2 passes for 6 rolling ones
    assert run["plain"]["forwards_per_block"] == 5.0 and run["plain"]["query_frames_per_block"] == 15.0
    assert run["rolling"]["forwards_per_block"] == 3.0 and run["rolling"]["s_per_block_mean"] > 0


def test_memory_table_prints_json() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "memory_table.py"), "--chunks", "120"],
        check=True, capture_output=True, text=True, timeout=300,
    )
    plain, rolling = json.loads(out.stdout)["results"]
    for run in (plain, rolling):  # the cache stays one size; what the snapshots keep grows with them
        assert run["at_chunk_100"]["kv_cache_bytes"] == run["at_chunk_120"]["kv_cache_bytes"] > 0
        assert run["at_chunk_120"]["committed_latents_mb"] > run["at_chunk_100"]["committed_latents_mb"]
    assert plain["at_chunk_120"]["rolling_fronts_mb"] == 0
    # a kept window is 3 block inputs and 3 re-noise tensors, 6x a chunk's latents, and of 120 chunks 22 keep theirs
    # (the newest 8 and every 8th of the others, rolling_storage)
    per_chunk = rolling["at_chunk_120"]["committed_latents_mb"] / 120
    assert rolling["at_chunk_120"]["rolling_fronts_mb"] == pytest.approx(22 * 6 * per_chunk, rel=0.02)


def test_node_memory_prints_json() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "node_memory.py"), "--chunks", "104", "--size", "32"],
        check=True, capture_output=True, text=True, timeout=300,
    )
    results = json.loads(out.stdout)["results"]
    for name in ("generate_node", "live_node"):
        early, late = results[name]["at_chunk_100"], results[name]["at_chunk_104"]
        assert early["kv_cache_bytes"] == late["kv_cache_bytes"] > 0
        assert late["committed_latents_mb"] > early["committed_latents_mb"]
    live = results["live_node"]
    # 104 chunks make 1245 frames; the images output keeps the newest 60 s, the take on disk has them all
    assert live["chunks"] == 104 and live["images_output_frames"] == live["at_chunk_104"]["image_frames_kept"] == 960
    assert live["take"]["mb"] > 0 and results["generate_node"]["at_chunk_104"]["image_frames_kept"] == 0


def test_lora_bench_quick_prints_json() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "lora_bench.py"), "--quick"],
                         check=True, capture_output=True, text=True, timeout=300)
    tiny, = json.loads(out.stdout)["results"]
    assert tiny["layers"] == 2 * 10 and tiny["merge_s"] > 0  # q/k/v/o of both attentions and 2 FFN matrices, 2 blocks
    assert tiny["kept_to_unmerge_mb"] > 0 and tiny["per_chunk_ms_merged"] > 0 and tiny["per_chunk_ms_plain"] > 0
