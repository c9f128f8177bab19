"""``python -m causal_forcing_core generate``: a prompt (or a schedule) to a video file, with live progress.

Everything that can be wrong with the command is found before anything loads (:func:`check_generate`): the output
path, suffix and fps, the report path, the size, frame count and schedule against the student's sampler, the
image and the student's kind (image-to-video, ``--steps``), the prompts' length (with the tokenizer alone), and
whether the KV cache, the weights and the decoded frames fit in memory (from the student's header and shapes).

A release name (``--model longlive``, :data:`.students.STUDENTS`) brings its files from its own hub repo (with
``--download``; a release LoRA is merged into the weights) and its window, sink and re-cache settings, which the
user's own flags replace (:func:`apply_student_defaults`).

Order of work keeps peak memory low: prompts are encoded first and the text encoder is released, then the DiT
generates chunk by chunk, then the VAE decodes the latents chunk by chunk (streaming) into the output file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import model_files as mf
from .checkpoints import DiTFileInfo, describe_dit, estimate_dit_bytes, load_dit
from .config import (
    SAMPLER_PRESETS,
    WAN_TEXT_LEN,
    DiTConfig,
    SamplerConfig,
    check_sampler_fits,
    sampler_kind,
    sampler_preset,
)
from .dit import CausalWanModel
from .errors import InvalidInputError
from .geometry import WAN21
from .kv_cache import KVCache, Recache, validate_window
from .lora import load_lora, merge_loras, parse_lora_argument, plan_loras
from .prompt import Prompt, trim_padding
from .rolling import check_rolling_settings
from .schedule import ScheduleEntry, parse_schedule
from .stream import Stream, cache_frames_for, start_stream
from .students import DEFAULT_SAMPLER, STUDENTS, StudentRelease
from .video_io import check_file_target, check_fps, check_video_target

logger = logging.getLogger("causal_forcing_core.cli")

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
    what.add_argument("--window", type=int, default=None,
                      help="local attention window in latent frames (0 = all; default: the release's, else 0)")
    what.add_argument("--sink", type=int, default=None,
                      help="sink frames kept at the start of the window (default: the release's with its window, "
                           "else 0)")
    what.add_argument("--recache", nargs="?", const=Recache.RECENT.value, default=None,
                      choices=[m.value for m in Recache],
                      help="re-encode cached frames under the new prompt at each switch: recent (the default of a "
                           "bare --recache: the frames after the sink; the sink keeps the first frames), window "
                           "(the last window of frames, whose oldest become the sink, as LongLive trains) or off "
                           "(default: the release's, else off)")
    what.add_argument("--output", type=Path, default=Path("output.mp4"), help=".mp4, .webp, .gif or a folder (PNGs)")
    what.add_argument("--fps", type=int, default=WAN21.fps)
    models = parser.add_argument_group("models")
    models.add_argument("--model", default="chunkwise",
                        help=f"a student file/folder, or a release name: {', '.join(STUDENTS)} (listed below)")
    models.add_argument("--steps", choices=["auto", *SAMPLER_PRESETS], default="auto",
                        help="sampler preset (auto: from the release name or the file's metadata)")
    models.add_argument("--text-encoder", help=f"umT5 weights (default {mf.TEXT_ENCODER_FILE} in the models dir)")
    models.add_argument("--tokenizer", help="umT5 tokenizer folder (default google/umt5-xxl in the models dir)")
    models.add_argument("--vae", help=f"Wan 2.1 VAE weights (default {mf.VAE_FILE} in the models dir)")
    models.add_argument("--models-dir", type=Path, default=None, help="where model files live (or are downloaded)")
    models.add_argument("--download", action="store_true", help="fetch missing files from the Hugging Face hub")
    models.add_argument("--lora", action="append", default=[], metavar="FILE[:STRENGTH]",
                        help="a LoRA merged into the student (repeatable; strength 1.0 by default)")
    models.add_argument("--lora-ignore-unmatched", action="store_true",
                        help="apply a LoRA's matching layers even if others match nothing in the student")
    run = parser.add_argument_group("runtime")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    run.add_argument("--dtype", choices=["auto", "bf16", "fp16", "fp32"], default="auto")
    run.add_argument("--report", type=Path, help="also write the timing report as JSON here")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter  # keeps the list below one student a line
    parser.epilog = "release names (--model; sources of every setting: docs/student_presets.md):\n" + "\n".join(
        f"  {name:<16} {release.title}; {_defaults_text(release)}" for name, release in STUDENTS.items()
    )


def _defaults_text(release: StudentRelease) -> str:
    """What a release runs with by default, in --help's words."""
    parts = [f"--steps {release.variant}"]
    if release.window_frames:
        parts.append(f"--window {release.window_frames} --sink {release.sink_frames}")
    if release.recache:
        parts.append(f"--recache {release.recache.value}")
    if release.lora is not None:
        parts.append(f"+ its LoRA (rank {release.lora.rank})")
    return " ".join(parts)


def apply_student_defaults(args: argparse.Namespace, release: StudentRelease | None) -> None:
    """Fill ``--window``, ``--sink`` and ``--recache`` the user left out with the release's settings (a file
    that is no release: no window, no sink, no re-cache). ``--sink`` follows the window it goes with: the
    release's sink for any window the user sets, none with ``--window 0``."""
    if args.window is None:
        args.window = release.window_frames if release else 0
    if args.sink is None:
        args.sink = release.sink_frames if release and args.window else 0
    if args.recache is None:
        args.recache = (release.recache if release else Recache.OFF).value
    if release is not None and (release.window_frames or release.recache):
        logger.info("%s runs with --window %d --sink %d --recache %s", args.model, args.window, args.sink,
                    args.recache)


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
        return _read_schedule_file(args.schedule_file)
    return args.schedule or args.prompt


def _read_schedule_file(path: Path) -> str:
    """The text of ``--schedule-file`` (UTF-8), or InvalidInputError saying why it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInputError(
            f"--schedule-file {path} does not exist; give a text file with lines like '0: a cat walks'."
        ) from None
    except IsADirectoryError:
        raise InvalidInputError(f"--schedule-file {path} is a folder; give a text file.") from None
    except UnicodeDecodeError as err:
        raise InvalidInputError(
            f"--schedule-file {path} is not UTF-8 text (byte 0x{err.object[err.start]:02x} at position {err.start}); "
            "save it as UTF-8."
        ) from None
    except OSError as err:
        raise InvalidInputError(f"Cannot read --schedule-file {path}: {err.strerror or err}.") from None


def _probe_folder(folder: Path, what: str, path: Path) -> None:
    """Create ``folder`` (as writing will) and a file in it, so a folder that cannot be written fails now (the
    permission bits alone do not tell: root, read-only mounts, /proc)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".cf-write-check.", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as err:
        raise InvalidInputError(f"Cannot write the {what} {path}: {err.strerror or err} ({folder}).") from None


def check_outputs(args: argparse.Namespace) -> None:
    """``--output`` (a suffix write_video supports, nothing in the way), ``--fps`` and ``--report``, before any
    work; the output's folder is created."""
    check_fps(args.fps)
    check_video_target(args.output)
    _probe_folder(args.output.expanduser().parent, "output", args.output)  # files, PNGs, the temporary sibling
    if args.report is not None:
        check_file_target(args.report.expanduser(), what="timing report")
        _probe_folder(args.report.expanduser().parent, "timing report", args.report)


def plan_chunks(
    args: argparse.Namespace, sampler: SamplerConfig, latent_frames: int, text: str
) -> tuple[int, list[ScheduleEntry]]:
    """The number of chunks ``--frames`` asks of ``sampler`` (an I2V image is the first latent frame) and the
    schedule over them; raises InvalidInputError naming the nearest frame counts, or what is wrong with the
    schedule (every bad line; chunk indices past the end; more ``a | b`` segments than chunks)."""
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


def check_model_kind(
    args: argparse.Namespace, name: str, own: SamplerConfig | None, planned: SamplerConfig
) -> None:
    """``--steps`` must make chunks of the size the student was trained on (``own``: what its metadata or
    release name says, None when unknown), and ``--image`` needs a frame-wise student."""
    if args.steps != "auto":
        check_sampler_fits(own, planned, name, "--steps")
    if args.image is not None and not planned.supports_i2v:
        unknown = "" if own is not None else (" The file does not say its kind; if it is frame-wise, say so with "
                                              "--steps framewise-4step (or -2step / -1step).")
        raise InvalidInputError(
            f"--image needs a frame-wise student (image-to-video starts from the image as the first 1-frame chunk), "
            f"but {name} runs {sampler_kind(planned)} ({planned.name}, {planned.frames_per_block}-frame chunks). Use "
            f"--model framewise (or framewise-2step / framewise-1step) or a frame-wise file.{unknown}"
        )


def available_memory(device: torch.device) -> int | None:
    """Bytes the run may use on ``device``: free CUDA memory, MPS's recommended maximum, else the machine's
    physical RAM; None when the platform does not say."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "mps" and hasattr(torch.mps, "recommended_max_memory"):
        return int(torch.mps.recommended_max_memory())
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows)
        return None


def cache_frames(args: argparse.Namespace, sampler: SamplerConfig, latent_frames: int) -> int:
    """Latent frames the KV cache holds (:func:`.stream.cache_frames_for`; a global cache is allocated once for the
    whole video, up front)."""
    return cache_frames_for(sampler, args.window or None, latent_frames)


def memory_estimate(
    config: DiTConfig, args: argparse.Namespace, sampler: SamplerConfig, latent_frames: int, dtype: torch.dtype
) -> dict[str, int]:
    """Bytes the run needs, from the architecture alone: ``kv_cache`` and ``weights`` on the device (the formula
    the cache itself allocates by, :meth:`.kv_cache.KVCache.estimate_bytes`), ``frames`` (the decoded video: uint8
    pieces and their concatenation) in host memory."""
    lat_h, lat_w = WAN21.latent_size(args.height, args.width, config.patch_size[1:])
    kv = KVCache.estimate_bytes(
        num_layers=config.num_layers, batch=1, num_heads=config.num_heads, head_dim=config.head_dim,
        frame_tokens=config.tokens_per_frame(lat_h, lat_w), capacity_frames=cache_frames(args, sampler, latent_frames),
        dtype=dtype,
    )
    pixels = WAN21.pixel_frames(latent_frames) * 3 * args.height * args.width
    return {"kv_cache": kv, "weights": estimate_dit_bytes(config, dtype), "frames": 2 * pixels}


def check_memory(
    config: DiTConfig, args: argparse.Namespace, sampler: SamplerConfig, latent_frames: int, device: torch.device,
    dtype: torch.dtype,
) -> None:
    """Refuse a size whose KV cache and weights (on the device) or decoded frames (in RAM) cannot fit, with the
    estimate in the message."""
    need = memory_estimate(config, args, sampler, latent_frames, dtype)
    gib = 2**30
    what = (f"--height {args.height} --width {args.width} with {args.frames} frames"
            + (f" and --window {args.window}" if args.window else ""))
    model = f"this model (dim {config.dim}, {config.num_layers} layers, {dtype})".replace("torch.", "")
    on_device = need["kv_cache"] + need["weights"] + (need["frames"] if device.type == "cpu" else 0)
    available = available_memory(device)
    if available is not None and on_device > available:
        frames = f" and {need['frames'] / gib:.1f} GiB of decoded frames" if device.type == "cpu" else ""
        raise InvalidInputError(
            f"{what} needs about {need['kv_cache'] / gib:.1f} GiB of KV cache for {model}, plus "
            f"{need['weights'] / gib:.1f} GiB of weights{frames}: {on_device / gib:.1f} GiB on {device}; at most "
            f"{available / gib:.1f} GiB is available. Use a smaller size, fewer frames or a local window (--window)."
        )
    host = available_memory(torch.device("cpu")) if device.type != "cpu" else None
    if host is not None and need["frames"] > host:
        raise InvalidInputError(
            f"{what} decodes to about {need['frames'] / gib:.1f} GiB of frames in memory; this machine has "
            f"{host / gib:.1f} GiB. Use a smaller size or fewer frames."
        )


@dataclass
class GeneratePlan:
    """What :func:`check_generate` found: every file, the student's architecture and sampler, the schedule."""

    device: torch.device
    dtype: torch.dtype
    latent_frames: int
    text: str
    prompts: list[str]
    student: Path
    encoder: Path
    tokenizer: Any
    vae: Path
    info: DiTFileInfo
    sampler: SamplerConfig
    num_chunks: int
    schedule: list[ScheduleEntry]
    image: torch.Tensor | None
    prefer_ema: bool | None
    variant: str | None
    loras: list[tuple[Path, float]]
    #: the release the student is (None: a file), and the LoRA its release adds (merged before ``loras``)
    release: StudentRelease | None = None
    release_lora: Path | None = None


def check_generate(args: argparse.Namespace) -> GeneratePlan:
    """Every check of ``generate`` that needs no weights, in the order a user fixes things; raises
    InvalidInputError / CheckpointError with one line saying what to do. Reads only the student's header and
    shapes, the tokenizer and the image. Fills in ``args`` what the user left to the release
    (:func:`apply_student_defaults`), so the run that follows uses the same settings."""
    from .image_io import load_image
    from .text_encoder import TextEncoder, load_tokenizer

    release = STUDENTS.get(args.model)
    apply_student_defaults(args, release)
    device = _device(args.device)
    dtype = _dtype(args.dtype, device)
    models_dir = args.models_dir or mf.default_models_dir()
    check_outputs(args)
    WAN21.check_size(args.height, args.width, WAN21.size_multiple(), what="--height and --width")
    latent_frames = WAN21.latent_frames(args.frames, what="--frames")
    text = _schedule_text(args)
    image = None
    if args.image is not None:  # small: read (and checked) now, encoded once the VAE is there
        image = load_image(args.image, args.height, args.width, mode=args.image_mode)

    # ---- every file, so a missing one fails before minutes of work
    student = mf.resolve(
        None if release else args.model, release.repo if release else mf.STUDENT_REPO,
        release.filename if release else "", models_dir, download=args.download, what="student",
    )
    release_lora = None
    if release is not None and release.lora is not None:
        release_lora = mf.resolve(None, release.repo, release.lora.filename, models_dir, download=args.download,
                                  what=f"{args.model} LoRA")
    encoder = mf.resolve(args.text_encoder, mf.WAN_BASE_REPO, mf.TEXT_ENCODER_FILE, models_dir,
                         download=args.download, what="umT5 text encoder")
    tokenizer_path = mf.resolve(args.tokenizer, mf.WAN_BASE_REPO, mf.TOKENIZER_DIR + "/*", models_dir,
                                download=args.download, what="umT5 tokenizer")
    vae = mf.resolve(args.vae, mf.WAN_BASE_REPO, mf.VAE_FILE, models_dir, download=args.download, what="VAE")

    # ---- the student from its header and shapes: kind, sampler, frame count, schedule, memory
    variant = args.steps if args.steps != "auto" else (release.variant if release else None)
    prefer_ema = release.prefer_ema if release else None
    info = describe_dit(student, prefer_ema=prefer_ema, variant=variant)
    own = info.own_sampler or (sampler_preset(release.variant) if release else None)
    sampler = info.sampler or sampler_preset(DEFAULT_SAMPLER)
    check_model_kind(args, student.name if not release else f"the {args.model} release", own, sampler)
    validate_window(args.window or None, args.sink, sampler.frames_per_block)
    check_rolling_settings(sampler, args.window or None, args.sink, args.image is not None)
    num_chunks, schedule = plan_chunks(args, sampler, latent_frames, text)  # every bad line at once
    prompts = list(dict.fromkeys(e.prompt for e in schedule))
    check_memory(info.config, args, sampler, latent_frames, device, dtype)
    loras = [parse_lora_argument(text) for text in args.lora]
    with torch.device("meta"):  # names and shapes only: every LoRA fits, before any weight is read
        shapes = CausalWanModel(info.config)
        if release_lora is not None:  # the release's own LoRA: its rank, and every layer must match
            own = load_lora(release_lora, device="meta")
            release.lora.strength_for(own)
            plan_loras(shapes, [(own, 1.0)])
        plan_loras(shapes, [(load_lora(path, device="meta"), strength) for path, strength in loras],
                   ignore_unmatched=args.lora_ignore_unmatched)

    # ---- the prompts' length, with the tokenizer alone
    tokenizer = load_tokenizer(tokenizer_path, allow_download=args.download)
    TextEncoder(None, tokenizer, text_len=min(WAN_TEXT_LEN, info.config.text_len)).check_prompts(prompts)
    if info.sampler is None:
        logger.warning("No sampler preset known for %s; using %s (set --steps).", student.name, DEFAULT_SAMPLER)
    return GeneratePlan(device, dtype, latent_frames, text, prompts, student, encoder, tokenizer, vae, info, sampler,
                        num_chunks, schedule, image, prefer_ema, variant, loras, release, release_lora)


def run_generate(args: argparse.Namespace) -> Timing:
    """The whole ``generate`` command (everything checked first, :func:`check_generate`); returns the timing
    report."""
    from .text_encoder import load_text_encoder
    from .vae import load_vae
    from .video_io import frames_to_uint8, write_video

    t_start = time.perf_counter()
    timing = Timing()
    plan = check_generate(args)
    device, dtype = plan.device, plan.dtype

    # ---- 1. prompts, then free the text encoder
    t0 = time.perf_counter()
    encoder = load_text_encoder(plan.encoder, device=device, dtype=dtype, tokenizer=plan.tokenizer)
    embeddings = dict(zip(plan.prompts, encoder.encode(plan.prompts).split(1)))
    encoder.release()
    del encoder
    timing.text_encoding_s = time.perf_counter() - t0

    # ---- 2. the student
    t0 = time.perf_counter()
    loaded = load_dit(plan.student, weight_dtype=dtype if dtype != torch.float32 else "fp32", compute_dtype=dtype,
                      device=device, prefer_ema=plan.prefer_ema, variant=plan.variant)
    loras = [(load_lora(path), strength) for path, strength in plan.loras]
    if plan.release_lora is not None:
        own = load_lora(plan.release_lora)
        loras.insert(0, (own, plan.release.lora.strength_for(own)))
    if loras:
        merge_loras(loaded.model, loras, ignore_unmatched=args.lora_ignore_unmatched, keep_originals=False)
    vae = load_vae(plan.vae, device=device, dtype=dtype)
    timing.model_load_s = time.perf_counter() - t0
    text_len = loaded.config.text_len
    prompts = {p: Prompt(trim_padding(e, text_len), p) for p, e in embeddings.items()}

    context = None
    if plan.image is not None:
        with torch.no_grad():
            context = vae.encode(plan.image.to(device, dtype))
    sampler, schedule, num_chunks = plan.sampler, plan.schedule, plan.num_chunks
    n = sampler.frames_per_block
    generated = num_chunks * n

    # ---- 3. generate chunk by chunk
    stream = start_stream(loaded.model, sampler, height=args.height, width=args.width,
                          prompt=prompts[schedule[0].prompt], seed=args.seed, window_frames=args.window or None,
                          sink_frames=args.sink, context=context,
                          capacity_frames=cache_frames(args, plan.sampler, plan.latent_frames))
    stream, timing.first_chunk_s, timing.generation_s = _generate_with_progress(
        stream, schedule, prompts, num_chunks, Recache.of(args.recache), device
    )

    # ---- 4. decode (streaming) and write
    t0 = time.perf_counter()
    decoder = vae.stream_decoder()
    pieces = []  # uint8 [t, H, W, 3] per chunk: a quarter of the float frames' memory
    with torch.no_grad():
        latents = stream.latents
        for s in range(0, latents.shape[1], n):
            pieces.append(frames_to_uint8(decoder.decode(latents[:, s : s + n])[0]))
    video = np.concatenate(pieces)
    del pieces
    info = write_video(video, args.output, fps=args.fps)
    _sync(device)
    timing.decode_s = time.perf_counter() - t0

    timing.latent_frames = stream.num_frames
    timing.pixel_frames = int(video.shape[0])
    timing.pixel_fps_without_decode = (
        WAN21.added_pixel_frames(generated) / timing.generation_s if timing.generation_s else 0.0
    )
    timing.total_s = time.perf_counter() - t_start
    logger.info("Wrote %s: %s", info.path, info)
    return timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _generate_with_progress(
    stream: Stream, schedule, prompts: dict[str, Prompt], num_chunks: int, recache: Recache, device: torch.device
) -> tuple[Stream, float, float]:
    """Generate ``num_chunks`` chunks following ``schedule``, with a progress bar and live frames/s.

    A Rolling Forcing video of at least one window ends the official way: its last ``num_steps - 1`` chunks are
    finished by draining the window (:meth:`.stream.Stream.finish`), so the file is the official long-video
    pipeline's ``num_chunks`` blocks."""
    from tqdm import tqdm

    sampler = stream.settings.sampler
    drained = sampler.num_steps - 1 if sampler.rolling and num_chunks >= sampler.num_steps else 0
    starts = {e.start: e.prompt for e in schedule}
    first_chunk = 0.0
    t0 = time.perf_counter()
    with tqdm(total=num_chunks, unit="chunk", desc="generating", dynamic_ncols=True) as bar:
        for chunk in range(num_chunks - drained):
            prompt = prompts[starts[chunk]] if chunk in starts else None
            t_chunk = time.perf_counter()
            stream = stream.generate(1, prompt=prompt, recache=recache if chunk > 0 else Recache.OFF)
            _sync(device)
            if chunk == 0:
                first_chunk = time.perf_counter() - t_chunk
            elapsed = time.perf_counter() - t0
            frames = (chunk + 1) * WAN21.added_pixel_frames(sampler.frames_per_block)
            bar.set_postfix(fps=f"{frames / elapsed:.1f}")
            bar.update(1)
        if drained:
            late = [c for c in starts if c >= num_chunks - drained]
            if late:  # the blocks being finished are all in the window already: the prompt applies to the rest
                logger.info("The prompt scheduled at chunk %d applies to the window's finishing steps", max(late))
                stream = stream.switch_prompt(prompts[starts[max(late)]])
            stream = stream.finish()
            _sync(device)
            bar.update(drained)
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
