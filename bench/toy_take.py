"""A long live take on the embedded toy model, written to disk as it is made: the Causal Forcing Live node (no
ComfyUI needed) with the toy student, its text encoder and VAE (*decoder* vae), realtime off, ``save_take`` on.
Prints one JSON document on stdout: the take's file, size, frames and seconds (read back from the file), the
chunks made, wall time, and process RSS before the take (models loaded), at chunks 100, 400 and 800
(:class:`node_memory.ChunkProbe`) and at its end.

    python bench/toy_take.py [--seconds 600] [--out DIR]

The take is ``DIR/causal_forcing/live_NNNNN.mp4`` (default DIR: a new temporary folder).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from bench_io import emit_report  # noqa: E402
from live_bench import rss_bytes  # noqa: E402
from node_memory import ChunkProbe  # noqa: E402
from pack_import import import_pack, run_node  # noqa: E402

from causal_forcing_core.video_io import read_video_frames  # noqa: E402

PROMPT = "a red square moves right slowly"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--output", type=Path, help="also write the JSON report here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    out = args.out or Path(tempfile.mkdtemp(prefix="cf_toy_take_"))
    pack = import_pack()
    rt = sys.modules[f"{pack.__name__}.nodes.comfy_runtime"]
    rt.temp_directory = lambda: out / "temp"
    rt.output_directory = lambda: out
    toy = sys.modules[f"{pack.__name__}.nodes.toy_entries"]
    nodes = pack.NODE_CLASSES
    encoder, = run_node(nodes["CausalForcingTextEncoderLoader"], toy.TEXT_ENCODER_ENTRY, toy.TOKENIZER_ENTRY, "auto",
                        "default").result
    vae, = run_node(nodes["CausalForcingVAELoader"], toy.VAE_ENTRY, "auto").result
    model, = run_node(nodes["CausalForcingModelLoader"], toy.MODEL_ENTRY, "auto", "auto", "auto").result
    cond, = run_node(nodes["CausalForcingTextEncode"], encoder, PROMPT).result
    start, = run_node(nodes["CausalForcingStart"], model, cond, 64, 64, 42, 12, 3).result
    rss_start = rss_bytes()
    probe = ChunkProbe(sys.modules[f"{pack.__name__}.nodes.live_preview"].ChunkReporter, (100, 400, 800))
    t0 = time.perf_counter()
    result = run_node(nodes["CausalForcingLive"], start, PROMPT, args.seconds, False, True, "vae", text_encoder=encoder,
                      cf_vae=vae, save_take=True, image_seconds=60, hidden={"unique_id": "toy"}).result
    wall = time.perf_counter() - t0
    rss_end = rss_bytes()  # before the file is read back (that alone holds every frame)
    handle, images, _, take = result
    frames = read_video_frames(take)
    emit_report({"take": take, "mb": round(Path(take).stat().st_size / 2**20, 2), "frames": int(frames.shape[0]),
                 "size": [int(frames.shape[2]), int(frames.shape[1])], "video_seconds": round(frames.shape[0] / 16, 2),
                 "chunks": handle.stream.num_chunks, "images_output_frames": int(images.shape[0]),
                 "wall_s": round(wall, 1), "rss_mb_before_the_take": round(rss_start / 2**20, 1),
                 "rss_mb_at_end": round(rss_end / 2**20, 1), "at_chunks": probe.points,
                 "torch": torch.__version__}, args.output)


if __name__ == "__main__":
    main()
