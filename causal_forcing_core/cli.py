"""``python -m causal_forcing_core generate``: a prompt (or a schedule) to a video file, with live progress.

Order of work keeps peak memory low: prompts are encoded first and the text encoder is released, then the DiT
generates chunk by chunk, then the VAE decodes the latents chunk by chunk (streaming) into the output file.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from . import model_files as mf
from .checkpoints import load_dit, sampler_of_file
from .config import SAMPLER_PRESETS, SamplerConfig, sampler_preset
from .errors import InvalidInputError
from .geometry import WAN21
from .prompt import Prompt, trim_padding
from .schedule import ScheduleEntry, parse_schedule, schedule_prompts
from .stream import Stream, start_stream

logger = logging.getLogger("causal_forcing_core.cli")
#: the sampler of a student whose file and name do not say (the released chunk-wise student's)
DEFAULT_SAMPLER = "chunkwise-4step"

@dataclass
class Timing:
    """What the run took, in seconds, and its throughput."""

    text_encoding_s: float = 0.0
    model_load_s: float = 0.0
    first_chunk_s: float = 0.0
    generation_s: float = 0.0
    decode_s: float = 0.0
    total_s: float = 0.0
    latent_frames: int = 0
    pixel_frames: int = 0
    pixel_fps_without_decode: float = 0.0


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_argument_group("what to make")
    what.add_argument("--prompt", help="one prompt for the whole video")
    what.add_argument("--schedule", help="'0: a cat walks\\n5: the cat jumps' (chunk indices) or 'a | b | c'")
    what.add_argument("--schedule-file", type=Path, help="a file holding a schedule")
    what.add_argument("--frames", type=int, default=WAN21.pixel_frames(WAN21.trained_latent_frames),
                      help="pixel frames (1 + 4k; 81 = 5 s at 16 fps)")
    what.add_argument("--height", type=int, default=480)
    what.add_argument("--width", type=int, default=832)
    what.add_argument("--seed", type=int, default=0)
    what.add_argument("--image", type=Path, help="first frame for image-to-video (frame-wise students)")
    what.add_argument("--image-mode", choices=["crop", "pad", "stretch"], default="crop")
    what.add_argument("--window", type=int, default=0, help="local attention window in latent frames (0 = all)")
    what.add_argument("--sink", type=int, default=0, help="sink frames kept at the start of the window")
    what.add_argument("--recache", action="store_true", help="re-encode the cached frames on prompt switches")
    what.add_argument("--output", type=Path, default=Path("output.mp4"), help=".mp4, .webp, .gif or a folder (PNGs)")
    what.add_argument("--fps", type=int, default=WAN21.fps)
    models = parser.add_argument_group("models")
    models.add_argument("--model", default="chunkwise",
                        help=f"a student file/folder, or a release name: {', '.join(mf.STUDENTS)}")
    models.add_argument("--steps", choices=["auto", *SAMPLER_PRESETS], default="auto",
                        help="sampler preset (auto: from the release name or the file's metadata)")
    models.add_argument("--text-encoder", help=f"umT5 weights (default {mf.TEXT_ENCODER_FILE} in the models dir)")
    models.add_argument("--tokenizer", help="umT5 tokenizer folder (default google/umt5-xxl in the models dir)")
    models.add_argument("--vae", help=f"Wan 2.1 VAE weights (default {mf.VAE_FILE} in the models dir)")
    models.add_argument("--models-dir", type=Path, default=None, help="where model files live (or are downloaded)")
    models.add_argument("--download", action="store_true", help="fetch missing files from the Hugging Face hub")
    run = parser.add_argument_group("runtime")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    run.add_argument("--dtype", choices=["auto", "bf16", "fp16", "fp32"], default="auto")
    run.add_argument("--report", type=Path, help="also write the timing report as JSON here")


def _device(name: str) -> torch.device:
    """``--device``: auto (CUDA when present, else the CPU), cpu, cuda[:N] or mps; one that is not there is
    refused before anything loads (the core runs on MPS: nothing in it needs float64 there)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise InvalidInputError(f"--device {name!r} is not a device this command runs on; use auto, cpu, cuda, "
                                "cuda:1 or mps.")
    present = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not present[device.type]:
        raise InvalidInputError(f"--device {name}: this machine has no {device.type.upper()} device that torch can "
                                "use; use --device cpu (or auto).")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise InvalidInputError(f"--device {name}: there are only {torch.cuda.device_count()} CUDA devices.")
    return device


def _dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


def _schedule_text(args: argparse.Namespace) -> str:
    given = [x for x in (args.prompt, args.schedule, args.schedule_file) if x]
    if len(given) != 1:
        raise InvalidInputError("Give exactly one of --prompt, --schedule or --schedule-file.")
    if args.schedule_file:
        return args.schedule_file.read_text()
    return args.schedule or args.prompt


def _check_output(path: Path) -> None:
    """Fail before any heavy work when the output cannot be written."""
    target = path if not path.suffix else path.parent
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InvalidInputError(f"Cannot write the output {path}: {err.strerror} ({target}).") from None
    if path.suffix and path.is_dir():
        raise InvalidInputError(f"The output {path} is a folder; give a file name such as {path / 'video.mp4'}.")


def plan_chunks(
    args: argparse.Namespace, sampler: SamplerConfig, latent_frames: int, text: str
) -> tuple[int, list[ScheduleEntry]]:
    """The number of chunks ``--frames`` asks of ``sampler`` (an I2V image is the first latent frame) and the
    schedule over them; raises InvalidInputError naming the nearest frame counts, or what is wrong with the
    schedule."""
    given = 1 if args.image is not None else 0
    generated = latent_frames - given
    n = sampler.frames_per_block
    if generated < n or generated % n:
        chunks = max(generated // n, 1)
        raise InvalidInputError(
            f"--frames {args.frames} leaves {generated} latent frames to generate, not a whole number of {n}-frame "
            f"chunks for {sampler.name}; try --frames {WAN21.pixel_frames(chunks * n + given)} or "
            f"{WAN21.pixel_frames((chunks + 1) * n + given)}."
        )
    return generated // n, parse_schedule(text, generated // n)


def run_generate(args: argparse.Namespace) -> Timing:
    """The whole ``generate`` command; returns the timing report."""
    from .image_io import load_image
    from .text_encoder import load_text_encoder
    from .vae import load_vae
    from .video_io import frames_to_uint8, write_video

    t_start = time.perf_counter()
    timing = Timing()
    device = _device(args.device)
    dtype = _dtype(args.dtype, device)
    models_dir = args.models_dir or mf.default_models_dir()
    _check_output(args.output)
    WAN21.check_size(args.height, args.width, WAN21.size_multiple(), what="--height and --width")
    latent_frames = WAN21.latent_frames(args.frames, what="--frames")
    text = _schedule_text(args)

    # ---- resolve every file first, so a missing one fails before minutes of work
    release = mf.STUDENTS.get(args.model)
    student_path = mf.resolve(
        None if release else args.model, mf.STUDENT_REPO, release.filename if release else "",
        models_dir, download=args.download, what="student",
    )
    encoder_path = mf.resolve(args.text_encoder, mf.WAN_BASE_REPO, mf.TEXT_ENCODER_FILE, models_dir,
                              download=args.download, what="umT5 text encoder")
    tokenizer_path = mf.resolve(args.tokenizer, mf.WAN_BASE_REPO, mf.TOKENIZER_DIR + "/*", models_dir,
                                download=args.download, what="umT5 tokenizer")
    vae_path = mf.resolve(args.vae, mf.WAN_BASE_REPO, mf.VAE_FILE, models_dir, download=args.download, what="VAE")
    # ---- and the frame count and schedule against the student's sampler (from its metadata), before any loading
    variant = args.steps if args.steps != "auto" else (release.variant if release else None)
    planned = sampler_of_file(student_path, variant) or sampler_preset(DEFAULT_SAMPLER)
    plan_chunks(args, planned, latent_frames, text)

    # ---- 1. prompts, then free the text encoder
    t0 = time.perf_counter()
    encoder = load_text_encoder(encoder_path, tokenizer_path, device=device, dtype=dtype,
                                allow_download=args.download)
    prompts_text = schedule_prompts(text)
    embeddings = dict(zip(prompts_text, encoder.encode(prompts_text).split(1)))
    encoder.release()
    del encoder
    timing.text_encoding_s = time.perf_counter() - t0

    # ---- 2. the student
    t0 = time.perf_counter()
    loaded = load_dit(student_path, weight_dtype=dtype if dtype != torch.float32 else "fp32", compute_dtype=dtype,
                      device=device, prefer_ema=release.prefer_ema if release else None, variant=variant)
    sampler = loaded.sampler or sampler_preset(DEFAULT_SAMPLER)
    if loaded.sampler is None:
        logger.warning("No sampler preset known for %s; using %s (set --steps).", student_path.name, DEFAULT_SAMPLER)
    vae = load_vae(vae_path, device=device, dtype=dtype)
    timing.model_load_s = time.perf_counter() - t0
    text_len = loaded.config.text_len
    prompts = {p: Prompt(trim_padding(e, text_len), p) for p, e in embeddings.items()}

    context = None
    if args.image is not None:
        image = load_image(args.image, args.height, args.width, mode=args.image_mode).to(device, dtype)
        with torch.no_grad():
            context = vae.encode(image)
    num_chunks, schedule = plan_chunks(args, sampler, latent_frames, text)  # again: a folder's sampler shows now
    n = sampler.frames_per_block
    generated = num_chunks * n

    # ---- 3. generate chunk by chunk
    stream = start_stream(loaded.model, sampler, height=args.height, width=args.width,
                          prompt=prompts[schedule[0].prompt], seed=args.seed, window_frames=args.window or None,
                          sink_frames=args.sink, context=context)
    stream, timing.first_chunk_s, timing.generation_s = _generate_with_progress(
        stream, schedule, prompts, num_chunks, args.recache, device
    )

    # ---- 4. decode (streaming) and write
    t0 = time.perf_counter()
    decoder = vae.stream_decoder()
    pieces = []
    with torch.no_grad():
        latents = stream.latents
        for s in range(0, latents.shape[1], n):
            pieces.append(decoder.decode(latents[:, s : s + n]).float().cpu())
    video = torch.cat(pieces, dim=1)[0]  # [T, 3, H, W] in [-1, 1]
    info = write_video(frames_to_uint8(video), args.output, fps=args.fps)
    _sync(device)
    timing.decode_s = time.perf_counter() - t0

    timing.latent_frames = stream.num_frames
    timing.pixel_frames = int(video.shape[0])
    timing.pixel_fps_without_decode = (
        WAN21.added_pixel_frames(generated) / timing.generation_s if timing.generation_s else 0.0
    )
    timing.total_s = time.perf_counter() - t_start
    logger.info("Wrote %s: %s", args.output, info)
    return timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _generate_with_progress(
    stream: Stream, schedule, prompts: dict[str, Prompt], num_chunks: int, recache: bool, device: torch.device
) -> tuple[Stream, float, float]:
    """Generate ``num_chunks`` chunks following ``schedule``, with a progress bar and live frames/s."""
    from tqdm import tqdm

    starts = {e.start: e.prompt for e in schedule}
    first_chunk = 0.0
    t0 = time.perf_counter()
    with tqdm(total=num_chunks, unit="chunk", desc="generating", dynamic_ncols=True) as bar:
        for chunk in range(num_chunks):
            prompt = prompts[starts[chunk]] if chunk in starts else None
            t_chunk = time.perf_counter()
            stream = stream.generate(1, prompt=prompt, recache=recache and chunk > 0)
            _sync(device)
            if chunk == 0:
                first_chunk = time.perf_counter() - t_chunk
            elapsed = time.perf_counter() - t0
            frames = (chunk + 1) * WAN21.added_pixel_frames(stream.settings.sampler.frames_per_block)
            bar.set_postfix(fps=f"{frames / elapsed:.1f}")
            bar.update(1)
    return stream, first_chunk, time.perf_counter() - t0


def report(timing: Timing, path: Path | None) -> None:
    data = asdict(timing)
    logger.info(
        "first chunk %.2f s | generation %.2f s (%.1f frames/s without decode) | decode %.2f s | total %.2f s",
        timing.first_chunk_s, timing.generation_s, timing.pixel_fps_without_decode, timing.decode_s, timing.total_s,
    )
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2))
