"""Memory and time of 1000-chunk runs through the ComfyUI nodes (no ComfyUI needed): Causal Forcing Generate and
Causal Forcing Live, at chunk 100 and at the last chunk. Prints one JSON document on stdout (logs go to stderr).

    python bench/node_memory.py [--chunks 1000] [--size 64]

Tiny random models written by ``scripts/make_tiny_models.py`` (the chunk-wise student with a rolling window of 12
frames + 3 sink, the tiny umT5, the tiny preview decoder), on the CPU. Per node, at chunk 100 and at the last chunk:
process RSS, the KV cache's bytes, the committed latents the stream keeps, the frames the node keeps for its
``IMAGE`` output and the run's player JPEGs on disk (the newest two minutes, ``live_preview.REPLAY_FRAMES``);
per-chunk time flatness (first 100 vs last 100 chunks, corrected for machine load by a reference job timed at both
ends, :func:`bench_io.per_chunk_summary`). The Live node writes its take to disk (``save_take``) and keeps
``image_seconds`` (60) of images: the report gives the take's size.

- ``generate_node``: Start -> Generate (100 chunks) -> Generate (the rest), as two chained nodes would;
- ``live_node``: Start -> Live with ``max_seconds`` covering the chunks (exactly ``--chunks`` for a multiple of 4),
  realtime off, the tiny preview decoder.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from bench_io import emit_report, long_run_arguments, median_time, per_chunk_summary  # noqa: E402
from live_bench import rss_bytes  # noqa: E402
from make_tiny_models import write_tiny_models  # noqa: E402
from pack_import import import_pack, run_node  # noqa: E402

from causal_forcing_core.geometry import WAN21  # noqa: E402

logger = logging.getLogger("node_memory")
MB = 2**20
PROMPT = "a red square moves left"


class ChunkProbe:
    """Wraps ChunkReporter.on_chunk: the time of every chunk and the memory at the chunks asked for."""

    def __init__(self, reporter_class: type, at: tuple[int, ...]) -> None:
        self.times: list[float] = []
        self.points: dict[str, dict] = {}
        self.at = at
        self._last = time.perf_counter()
        original = reporter_class.on_chunk

        def on_chunk(reporter, stream) -> None:  # noqa: ANN001
            original(reporter, stream)
            now = time.perf_counter()
            self.times.append(now - self._last)
            self._last = now
            if len(self.times) in self.at:
                self.points[f"at_chunk_{len(self.times)}"] = self.point(reporter, stream)

        reporter_class.on_chunk = on_chunk

    def restart(self) -> None:
        self._last = time.perf_counter()

    def point(self, reporter, stream) -> dict:  # noqa: ANN001
        latents = sum(e.latents.nbytes for e in stream.history if hasattr(e, "latents"))
        jpegs = sum(p.stat().st_size for p in reporter._folder.glob("*.jpg")) if reporter._folder else 0
        return {"rss_mb": round(rss_bytes() / MB, 1), "kv_cache_bytes": stream.kv_cache.nbytes,
                "committed_latents_mb": round(latents / MB, 2), "image_frames_kept": reporter.kept_frames,
                "player_jpegs_on_disk_mb": round(jpegs / MB, 2)}


def main(argv: list[str] | None = None) -> None:
    args = long_run_arguments(__doc__, argv, logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="cf_node_memory_"))
    write_tiny_models(work / "models")
    os.environ["CF_MODELS_DIR"] = str(work / "models")
    pack = import_pack()
    rt = sys.modules[f"{pack.__name__}.nodes.comfy_runtime"]
    rt.temp_directory = lambda: work / "temp"
    rt.output_directory = lambda: work / "output"
    preview = sys.modules[f"{pack.__name__}.nodes.live_preview"]
    nodes = pack.NODE_CLASSES
    encoder, = run_node(nodes["CausalForcingTextEncoderLoader"], "cf_tiny_umt5.pth", "cf_tiny_umt5_tokenizer", "auto",
                        "default").result
    cond, = run_node(nodes["CausalForcingTextEncode"], encoder, PROMPT).result
    model, = run_node(nodes["CausalForcingModelLoader"], "cf_tiny_chunkwise.safetensors", "auto", "auto",
                      "cf_tiny_preview.safetensors").result

    def start():
        return run_node(nodes["CausalForcingStart"], model, cond, args.size, args.size, 7, 12, 3).result[0]

    def reference() -> float:
        return median_time(lambda: start().stream.generate(4))

    results = {}
    probe = ChunkProbe(preview.ChunkReporter, (100, args.chunks))
    ref_early = reference()
    probe.restart()
    generate = nodes["CausalForcingGenerate"]
    first = run_node(generate, start(), 100, "chunks", True, hidden={"unique_id": "g1"}).result[0]
    run_node(generate, first, args.chunks - 100, "chunks", True, hidden={"unique_id": "g2"})
    results["generate_node"] = {**probe.points, "per_chunk": per_chunk_summary(probe.times, ref_early, reference())}

    probe.times, probe.points = [], {}
    ref_early = reference()
    seconds = math.ceil(args.chunks * WAN21.chunk_seconds(3))  # the Live node counts seconds (exact for 4k chunks)
    probe.restart()
    out = run_node(nodes["CausalForcingLive"], start(), PROMPT, seconds, False, True, "preview", text_encoder=encoder,
                   save_take=True, image_seconds=60, hidden={"unique_id": "l1"})
    handle, images, _, take = out.result
    results["live_node"] = {
        **probe.points, "per_chunk": per_chunk_summary(probe.times, ref_early, reference()),
        "chunks": handle.stream.num_chunks, "images_output_frames": int(images.shape[0]),
        "take": {"file": Path(take).name, "mb": round(Path(take).stat().st_size / MB, 2)}}
    emit_report({"torch": torch.__version__, "device": "cpu", "size": [args.size, args.size], "model": "tiny",
                 "window_frames": 12, "sink_frames": 3, "chunks": args.chunks, "results": results}, args.output)


if __name__ == "__main__":
    main()
