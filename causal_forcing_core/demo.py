"""``python -m causal_forcing_core demo``: the embedded toy model makes a short video with a prompt switch, on the CPU.

The toy model (:mod:`.toy.bundle`) is a tiny causal student trained on a procedural world: one coloured shape moving
on a dark background, described by captions such as ``a red square moves right quickly``. The demo:

1. checks every prompt against the toy vocabulary (:func:`.toy.world.parse_caption`) before anything loads, so an
   unknown word fails at once (exit code 2) with the vocabulary in the message;
2. loads the bundle (``--bundle DIR``, else ``$CAUSAL_FORCING_TOY_BUNDLE``, else the shipped one) on the CPU;
3. generates ``--chunks`` chunks with the student's sampler preset, switching prompts where the schedule says (with
   LongLive re-cache unless ``--no-recache``), and decodes each chunk as it comes with the VAE's streaming decoder;
4. writes the video (``--out``, default ``toy_demo.mp4``) and a contact sheet beside it (``toy_demo.png``: one row
   per chunk, a few frames each at twice the size, the chunk's prompt above the row);
5. logs a summary and prints one JSON line: paths, frames, seconds, per-chunk milliseconds.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import InvalidInputError
from .prompt import trim_padding
from .schedule import ScheduleEntry, parse_schedule
from .video_io import VIDEO_SUFFIXES, check_file_target

logger = logging.getLogger("causal_forcing_core.demo")

#: the default schedule's two prompts: the first from chunk 0, the second from half the video on
DEFAULT_PROMPTS = ("a red square moves right quickly", "a blue circle moves down slowly")
DEFAULT_CHUNKS = 6
DEFAULT_OUT = Path("toy_demo.mp4")
#: the toy model's frame size (it was trained at 64x64)
TOY_SIZE = 64
TOY_FPS = 16
#: frames shown per chunk on the contact sheet, and how much they are enlarged
SHEET_FRAMES, SHEET_SCALE = 4, 2
#: CPU threads: the toy model's tensors are so small that more threads mostly add overhead (and on a busy machine
#: contention makes several threads many times slower than one)
DEFAULT_THREADS = 1


@dataclass
class DemoResult:
    """What the demo wrote and how long it took (the JSON line it prints)."""

    video: str
    contact_sheet: str
    frames: int
    fps: int
    video_seconds: float
    seconds: float
    load_ms: float
    chunk_ms: list[float] = field(default_factory=list)
    decode_ms: list[float] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    recache: bool = True
    codec: str = ""


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--schedule", help="'N: prompt' lines (N = chunk index) or 'a | b'; default: a switch half-way "
                                         "(at chunk 3 of 6; one prompt for --chunks 1)")
    what.add_argument("--prompt", help="one toy caption for the whole video, e.g. 'a green triangle moves up'")
    parser.add_argument("--chunks", type=int, default=DEFAULT_CHUNKS, help="chunks of 3 latent frames (12 frames)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-recache", dest="recache", action="store_false",
                        help="switch prompts without re-encoding the cached frames")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=".mp4, .webp or .gif; the PNG goes beside it")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="CPU threads for torch (default 1)")
    parser.add_argument("--bundle", type=Path, help="a toy bundle folder (default: $CAUSAL_FORCING_TOY_BUNDLE or the "
                                                    "embedded one)")


def default_schedule(num_chunks: int) -> str:
    """The schedule of a demo without ``--prompt``/``--schedule``: :data:`DEFAULT_PROMPTS`, switching at
    ``num_chunks // 2`` (chunk 3 of the default 6); the first prompt alone for a one-chunk video."""
    first, second = DEFAULT_PROMPTS
    if num_chunks < 2:
        return f"0: {first}"
    return f"0: {first}\n{num_chunks // 2}: {second}"


def plan_prompts(text: str, num_chunks: int) -> tuple[list[ScheduleEntry], dict[str, str]]:
    """Parse a schedule for ``num_chunks`` chunks and check every prompt against the toy vocabulary.

    Returns the schedule entries and, for each prompt as written, its canonical caption text (``a red square moves
    left`` -> ``a red square moves left slowly``), which is what the model was trained on. Raises InvalidInputError
    (listing the vocabulary for unknown words) without loading anything.
    """
    from .toy.world import parse_caption

    if num_chunks < 1:
        raise InvalidInputError(f"--chunks must be at least 1, got {num_chunks}.")
    entries = parse_schedule(text, num_chunks)
    return entries, {e.prompt: parse_caption(e.prompt).text for e in entries}


def sheet_path_for(video: Path) -> Path:
    """The contact sheet's path: the video's, with ``.png``."""
    return video.with_suffix(".png")


def _check_out(path: Path) -> None:
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise InvalidInputError(f"--out {path}: give a video file name ending in {', '.join(VIDEO_SUFFIXES)}.")
    if path.is_dir():
        raise InvalidInputError(f"--out {path} is a folder; give a file name such as {path / 'toy_demo.mp4'}.")
    check_file_target(path)


def run_demo(
    *, schedule: str | None = None, chunks: int = DEFAULT_CHUNKS, seed: int = 0, recache: bool = True,
    out: Path = DEFAULT_OUT, bundle: Path | None = None, threads: int = DEFAULT_THREADS,
) -> DemoResult:
    """The whole demo (see the module docstring) on ``threads`` CPU threads (restored afterwards); returns what it
    wrote and the timings. ``schedule`` None is :func:`default_schedule` for ``chunks``."""
    if schedule is None:
        schedule = default_schedule(chunks)
    if threads < 1:
        raise InvalidInputError(f"--threads must be at least 1, got {threads}.")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run(schedule, chunks, seed, recache, Path(out), bundle)
    finally:
        torch.set_num_threads(before)


def _run(schedule: str, chunks: int, seed: int, recache: bool, out: Path, bundle: Path | None) -> DemoResult:
    from .config import sampler_preset
    from .contact_sheet import write_contact_sheet
    from .stream import Prompt, start_stream
    from .toy.bundle import ToyBundlePaths, load_toy_model
    from .video_io import frames_to_uint8, write_video

    t_start = time.perf_counter()
    _check_out(out)
    entries, canonical = plan_prompts(schedule, chunks)
    ToyBundlePaths.of(bundle).check()  # a clear message before torch work when files are missing

    t0 = time.perf_counter()
    toy = load_toy_model(bundle, device="cpu")
    sampler = toy.student.sampler or sampler_preset("chunkwise-4step")
    distinct = list(dict.fromkeys(canonical.values()))
    embeds = trim_padding(toy.text_encoder.encode(distinct), toy.student.config.text_len)
    prompts = {text: Prompt(embeds[i : i + 1], text) for i, text in enumerate(distinct)}
    load_ms = (time.perf_counter() - t0) * 1000
    fps = int(toy.manifest.get("fps", TOY_FPS))

    starts = {e.start: canonical[e.prompt] for e in entries}
    stream = start_stream(toy.student.model, sampler, height=TOY_SIZE, width=TOY_SIZE,
                          prompt=prompts[starts[0]], seed=seed)
    decoder = toy.vae.stream_decoder()
    rows, labels, chunk_ms, decode_ms = [], [], [], []
    current = starts[0]
    with torch.no_grad():
        for k in range(chunks):
            switch = k > 0 and k in starts and starts[k] != current
            current = starts.get(k, current)
            t0 = time.perf_counter()
            stream = stream.generate(1, prompt=prompts[current] if switch else None, recache=recache and switch)
            chunk_ms.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            piece = decoder.decode(stream.newest_latents)  # [1, t, 3, H, W] in [-1, 1]
            decode_ms.append((time.perf_counter() - t0) * 1000)
            rows.append(frames_to_uint8(piece[0]))
            note = (" (switch, re-cache)" if recache else " (switch)") if switch else ""
            labels.append(f"chunk {k}{note}: {current}")
            logger.info("chunk %d/%d: %.0f ms (+%.0f ms decode)%s", k + 1, chunks, chunk_ms[-1], decode_ms[-1], note)

    frames = np.concatenate(rows, axis=0)
    info = write_video(frames, out, fps=fps)
    sheet = write_contact_sheet(sheet_path_for(out), rows, labels, frames_per_row=SHEET_FRAMES, scale=SHEET_SCALE)
    result = DemoResult(
        video=str(info.path), contact_sheet=str(sheet), frames=int(frames.shape[0]), fps=fps,
        video_seconds=round(frames.shape[0] / fps, 3), seconds=round(time.perf_counter() - t_start, 3),
        load_ms=round(load_ms, 1), chunk_ms=[round(v, 1) for v in chunk_ms], decode_ms=[round(v, 1) for v in decode_ms],
        prompts=[f"{k}: {p}" for k, p in sorted(starts.items())], recache=recache, codec=info.codec,
    )
    logger.info(
        "Wrote %s (%d frames, %.1f s of video, %s) and %s in %.1f s; per chunk %.0f ms generation + %.0f ms decode "
        "on average", result.video, result.frames, result.video_seconds, result.codec, result.contact_sheet,
        result.seconds, sum(chunk_ms) / len(chunk_ms), sum(decode_ms) / len(decode_ms),
    )
    return result


def run_demo_command(args: argparse.Namespace) -> DemoResult:
    """``demo`` from parsed arguments; prints the result as one JSON line on stdout."""
    schedule = args.schedule if args.schedule is not None else args.prompt
    if schedule is not None and not schedule.strip():
        option = "--schedule" if args.schedule is not None else "--prompt"
        raise InvalidInputError(
            f"{option} is empty; give a toy caption such as '{DEFAULT_PROMPTS[0]}', or leave {option} out for the "
            "default schedule."
        )
    result = run_demo(schedule=schedule, chunks=args.chunks, seed=args.seed, recache=args.recache, out=args.out,
                      bundle=args.bundle, threads=args.threads)
    sys.stdout.write(json.dumps(asdict(result)) + "\n")
    sys.stdout.flush()
    return result
