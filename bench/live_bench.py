"""Benchmark of the live loop: long runs with flat memory, prompt-change latency, and live frames/s per decoder.

Prints one JSON document on stdout (logs go to stderr). Tiny random models written by
``scripts/make_tiny_models.py`` (the chunk-wise student, the tiny umT5, the tiny TAEHV-style preview decoder and
the tiny Wan VAE) into a temporary folder; random weights, so speed and memory are real but the video is noise.

    python bench/live_bench.py --quick            # a small version, a few seconds
    python bench/live_bench.py                    # 1000 chunks, 10 prompt changes, 40 chunks per decoder

Sections:

- ``long_run``: ``--chunks`` chunks of the chunk-wise student with a rolling window (12 + 3 sink frames), through
  :class:`LiveLoop`, switching prompts every ``--switch-every`` chunks with LongLive re-cache. Per chunk: time,
  KV-cache bytes, process RSS and the bytes of the committed latents the stream keeps (these grow linearly by
  design: every snapshot can rewind, fork and decode the whole video). Reports early vs late per-chunk time (with
  a fixed reference chunk interleaved every few chunks, so a busy machine shows up in both), cache bytes (flat
  with a window), RSS growth next to the growth the committed latents explain, and a global-attention stream run
  to its 21-frame capacity for contrast. With CUDA (not ``--quick``) the same runs at the Wan2.1-1.3B shape.
- ``prompt_change_latency``: a :class:`LiveLoop` on a thread (``realtime`` on, 0.75 s per chunk, lead 1; and off),
  steered from the main thread at seeded random moments; the time from ``control.set_prompt`` to the first frame
  decoded (latent->RGB preview, in ``on_chunk``) from a chunk made with the new prompt, in ms and in chunks.
- ``live_fps``: pixel frames per second of the live loop (``realtime`` off) decoding every chunk in ``on_chunk``
  with each decoder (none, latent2rgb, the tiny preview decoder, the tiny Wan VAE's streaming decoder),
  interleaved over repeats.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import logging
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "scripts", ROOT / "bench"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench_io import emit_report, sync  # noqa: E402
from make_tiny_models import write_tiny_models  # noqa: E402

from causal_forcing_core.checkpoints import load_dit  # noqa: E402
from causal_forcing_core.config import DIT_PRESETS, sampler_preset  # noqa: E402
from causal_forcing_core.live import LiveControl, LiveLoop  # noqa: E402
from causal_forcing_core.preview import load_preview_decoder  # noqa: E402
from causal_forcing_core.preview_fallback import LatentRGBPreview  # noqa: E402
from causal_forcing_core.stream import (  # noqa: E402
    ChunkEvent,
    ContextEvent,
    Prompt,
    Stream,
    start_stream,
)
from causal_forcing_core.vae import load_vae  # noqa: E402

logger = logging.getLogger("live_bench")

MB = 2**20
TEXTS = ["a red fox runs through snow", "a lighthouse at night, waves", "a paper boat on a rainy street",
         "a city from above at dusk", "an astronaut walks on red sand", "a jellyfish glows in dark water",
         "a steam train crosses a bridge", "autumn leaves fall in a park", "a candle flickers in the wind",
         "a hummingbird hovers over a flower"]


# ----------------------------------------------------------------------------------------------- small helpers
def rss_bytes() -> int:
    """Resident set size of this process now (VmRSS), in bytes; 0 where /proc is missing."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def malloc_trim() -> bool:
    """Return freed heap pages to the OS (glibc); False where unavailable."""
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def malloc_heap() -> dict[str, int] | None:
    """glibc's malloc counters (mallinfo2): bytes in use and bytes held from the OS; None where unavailable.

    In use growing like the committed latents while RSS grows more means freed-but-kept heap (fragmentation),
    not a leak."""
    try:
        fn = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = _MallInfo2
    info = fn()
    return {"in_use": info.uordblks + info.hblkhd, "held": info.arena + info.hblkhd}


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def summary_ms(times_s: list[float]) -> dict[str, float]:
    """median / p90 / min / max / stdev of a list of seconds, in ms."""
    if not times_s:
        return {}
    ordered = sorted(times_s)
    return {
        "median": _ms(statistics.median(ordered)),
        "p90": _ms(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]),
        "min": _ms(ordered[0]),
        "max": _ms(ordered[-1]),
        "stdev": _ms(statistics.stdev(ordered)) if len(ordered) > 1 else 0.0,
        "n": len(ordered),
    }


def spread(values: list[float], digits: int = 3) -> dict[str, float]:
    """median and min/max of repeated measurements."""
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits), "values": [round(v, digits) for v in values]}


def committed_bytes(event) -> tuple[int, int]:  # noqa: ANN001 - a stream event
    """(logical bytes, bytes of the storage kept alive) of one event's committed latents; (0, 0) for re-caches."""
    if not isinstance(event, (ChunkEvent, ContextEvent)):
        return 0, 0
    return event.latents.nbytes, event.latents.untyped_storage().nbytes()


def cpu_description() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


class Models:
    """The tiny models, loaded once: student, text encoder (umT5 or seeded random embeddings), previewers."""

    def __init__(self, folder: Path, device: torch.device) -> None:
        written = write_tiny_models(folder)
        loaded = load_dit(written["chunkwise-4step"], device=device)
        self.model = loaded.model
        self.config = loaded.config
        self.sampler = loaded.sampler or sampler_preset("chunkwise-4step")
        self.paths = written
        self.text_encoder = None
        self.text_encoder_kind = "seeded random embeddings"
        try:
            from causal_forcing_core.text_encoder import load_text_encoder

            self.text_encoder = load_text_encoder(written["text_encoder"], written["tokenizer"],
                                                  dtype=torch.float32, text_len=self.config.text_len)
            self.text_encoder.encode(["warm up"])
            self.text_encoder_kind = "tiny umT5 (cf_tiny_umt5.pth), float32, on the loop thread"
        except Exception as err:  # noqa: BLE001 - e.g. no transformers/sentencepiece: random embeddings instead
            logger.warning("tiny text encoder unavailable (%s); using seeded random embeddings", err)
        self.preview = load_preview_decoder(written["preview"])
        self.vae = load_vae(written["vae"])

    def encode(self, text: str) -> Prompt:
        if self.text_encoder is not None:
            return Prompt(self.text_encoder.encode([text]), label=text)
        return random_prompt(text, self.config.text_dim, min(16, self.config.text_len))


def random_prompt(text: str, text_dim: int, length: int) -> Prompt:
    g = torch.Generator().manual_seed(zlib.crc32(text.encode()))
    return Prompt(torch.randn(1, length, text_dim, generator=g), label=text)


# ----------------------------------------------------------------------------------------------- long run
def long_run(model, sampler, encode: Callable[[str], Prompt], *, size: tuple[int, int], chunks: int, window: int,
             sink: int, switch_every: int, device: torch.device, probe_every: int, mem_at: int) -> dict:
    """One live run of ``chunks`` chunks with a window, recording time / cache / RSS / latents per chunk."""
    height, width = size
    gc.collect()
    malloc_trim()
    stream = start_stream(model, sampler, height=height, width=width, prompt=encode(TEXTS[0]), seed=0,
                          window_frames=window, sink_frames=sink)
    # the interleaved reference: one chunk after 2 chunks of a global stream, from the same snapshot every time
    # (a rewind, not a replay), so its cost only moves with the machine's load
    probe_base = start_stream(model, sampler, height=height, width=width, prompt=encode(TEXTS[1]), seed=1).generate(2)
    probe_base.generate(1)
    control = LiveControl()
    rec: dict[str, list] = {"time_s": [], "cache_bytes": [], "rss": [], "latent_bytes": [], "latent_storage": [],
                            "cuda_allocated": []}
    probes: list[tuple[int, float]] = []
    totals = [0, 0]
    switch_chunks: list[int] = []
    marks: dict[str, dict] = {}
    clock = {"end": 0.0}

    def on_chunk(snapshot: Stream, index: int) -> None:
        sync(device)
        entered = time.perf_counter()
        rec["time_s"].append(entered - clock["end"])
        logical, kept = committed_bytes(snapshot.history[-1])
        totals[0] += logical
        totals[1] += kept
        rec["latent_bytes"].append(totals[0])
        rec["latent_storage"].append(totals[1])
        rec["cache_bytes"].append(snapshot.storage.cache.nbytes)
        rec["rss"].append(rss_bytes())
        if device.type == "cuda":
            rec["cuda_allocated"].append(torch.cuda.memory_allocated(device))
        made = index + 1
        if made in (mem_at, chunks):
            t0 = time.perf_counter()
            everything = snapshot.latents  # what a LongLive re-cache concatenates (every committed latent)
            concat_s = time.perf_counter() - t0
            del everything
            marks[f"chunk_{made}"] = {"history_events": len(snapshot.history), "python_gc_objects": len(gc.get_objects()),
                                      "latents_concat_ms": _ms(concat_s), "malloc": malloc_heap()}
        if probe_every and index % probe_every == 0:
            sync(device)
            t0 = time.perf_counter()
            probe_base.generate(1)
            sync(device)
            probes.append((index, time.perf_counter() - t0))
        if made % switch_every == 0 and made < chunks:
            switch_chunks.append(made)  # the chunk this prompt change applies to (0-based index)
            control.set_prompt(f"{TEXTS[(made // switch_every) % len(TEXTS)]} (part {made // switch_every})")
        if index % 100 == 99:
            logger.info("  chunk %d: %.1f ms, rss %.1f MB", made, rec["time_s"][-1] * 1000, rec["rss"][-1] / MB)
        clock["end"] = time.perf_counter()

    loop = LiveLoop(stream, encode, control, TEXTS[0], max_chunks=chunks, chunk_seconds=0.75, realtime=False,
                    on_chunk=on_chunk)
    sync(device)
    started = clock["end"] = time.perf_counter()
    result = loop.run()
    wall = time.perf_counter() - started
    rss_end_before_trim = rss_bytes()
    trimmed = malloc_trim()
    rss_after_trim = rss_bytes()
    final_latents = result.stream.latents  # the property concatenates every committed chunk
    n = min(100, max(1, chunks // 2))
    times = rec["time_s"]
    first, last = times[:n], times[-n:]
    probes_first = [t for i, t in probes if i < n]
    probes_last = [t for i, t in probes if i >= chunks - n]
    ratio = statistics.median(last) / statistics.median(first)
    out: dict = {
        "chunks": result.chunks,
        "wall_s": round(wall, 3),
        "window_frames": window,
        "sink_frames": sink,
        "switch_every": switch_every,
        "prompt_switches": len(switch_chunks),
        "per_chunk_ms": {
            f"first_{n}": summary_ms(first),
            f"last_{n}": summary_ms(last),
            "last_over_first_median": round(ratio, 4),
        },
    }
    if probes_first and probes_last:
        probe_ratio = statistics.median(probes_last) / statistics.median(probes_first)
        out["per_chunk_ms"]["reference_chunk"] = {
            "what": f"one fixed chunk of a separate stream, timed every {probe_every} chunks (tracks machine load)",
            f"first_{n}": summary_ms(probes_first),
            f"last_{n}": summary_ms(probes_last),
            "last_over_first_median": round(probe_ratio, 4),
        }
        out["per_chunk_ms"]["load_corrected_ratio"] = round(ratio / probe_ratio, 4)
    if switch_chunks:
        after = [times[c] for c in switch_chunks if c < len(times)]
        switched = set(switch_chunks)
        others = [t for i, t in enumerate(times) if i not in switched]
        out["prompt_switch_chunks_ms"] = {
            "what": "time of each chunk that starts with a prompt change (encode + LongLive re-cache + chunk)",
            "chunk_index": switch_chunks,
            "ms": [_ms(t) for t in after],
            "other_chunks_median": _ms(statistics.median(others)),
        }
    cache = rec["cache_bytes"]
    at10 = cache[min(9, len(cache) - 1)]
    out["kv_cache_bytes"] = {
        "at_chunk_10": at10,
        "at_end": cache[-1],
        "equal": at10 == cache[-1],
        "distinct_values": sorted(set(cache)),
    }
    m = min(mem_at, chunks) - 1
    latent_growth = rec["latent_storage"][-1] - rec["latent_storage"][m]
    rss_growth = rec["rss"][-1] - rec["rss"][m]
    out["rss_mb"] = {
        f"at_chunk_{m + 1}": round(rec["rss"][m] / MB, 2),
        "at_end": round(rec["rss"][-1] / MB, 2),
        "growth": round(rss_growth / MB, 2),
        "expected_growth_from_committed_latents": round(latent_growth / MB, 2),
        "growth_beyond_latents": round((rss_growth - latent_growth) / MB, 2),
        "at_end_after_malloc_trim": round(rss_after_trim / MB, 2) if trimmed else None,
        "at_end_before_malloc_trim": round(rss_end_before_trim / MB, 2),
    }
    heap_m, heap_end = marks.get(f"chunk_{m + 1}", {}).get("malloc"), marks.get(f"chunk_{chunks}", {}).get("malloc")
    if heap_m and heap_end:
        out["malloc_heap_mb"] = {
            "what": "glibc mallinfo2 at the same two chunks: bytes in use by live allocations and bytes held from "
                    "the OS (held - in use = freed memory the heap keeps)",
            "in_use_growth": round((heap_end["in_use"] - heap_m["in_use"]) / MB, 2),
            "held_growth": round((heap_end["held"] - heap_m["held"]) / MB, 2),
            "in_use_growth_beyond_latents": round((heap_end["in_use"] - heap_m["in_use"] - latent_growth) / MB, 2),
            f"free_kept_at_chunk_{m + 1}": round((heap_m["held"] - heap_m["in_use"]) / MB, 2),
            "free_kept_at_end": round((heap_end["held"] - heap_end["in_use"]) / MB, 2),
        }
    out["committed_latents"] = {
        "note": "stream.latents grows linearly by design (every snapshot keeps its whole committed video so it can "
                "rewind, fork, replay and decode); this is Python-side memory, not the KV cache",
        "bytes_per_chunk": rec["latent_bytes"][0],
        f"bytes_at_chunk_{m + 1}": rec["latent_bytes"][m],
        "bytes_at_end": rec["latent_bytes"][-1],
        "storage_bytes_at_end": rec["latent_storage"][-1],
        f"concat_ms_at_chunk_{m + 1}": marks.get(f"chunk_{m + 1}", {}).get("latents_concat_ms"),
        "concat_ms_at_end": marks.get(f"chunk_{chunks}", {}).get("latents_concat_ms"),
        "concat_note": "stream.latents concatenates every committed chunk (callers that need the whole video pay "
                       "this); a LongLive re-cache joins only the window's frames (committed_frames)",
        "stream_latents_nbytes_at_end": final_latents.nbytes,
        "shape_at_end": list(final_latents.shape),
    }
    out["python_objects"] = {
        "note": "history events (chunks + re-caches) and gc-tracked Python objects",
        **marks,
        "live_prompt_events": len(result.events),
    }
    if rec["cuda_allocated"]:
        out["cuda_allocated_mb"] = {f"at_chunk_{m + 1}": round(rec["cuda_allocated"][m] / MB, 2),
                                    "at_end": round(rec["cuda_allocated"][-1] / MB, 2)}
    return out


def global_contrast(model, sampler, encode, *, size: tuple[int, int], device: torch.device,
                    chunks: int = 7, window_cache_bytes: int | None = None) -> dict:
    """A global-attention stream run to its 21-frame capacity: per-chunk time and cache bytes."""
    height, width = size
    control = LiveControl()
    times, cache = [], []
    clock = {"end": 0.0}

    def on_chunk(snapshot: Stream, index: int) -> None:
        sync(device)
        times.append(time.perf_counter() - clock["end"])
        cache.append(snapshot.storage.cache.nbytes)
        clock["end"] = time.perf_counter()

    stream = start_stream(model, sampler, height=height, width=width, prompt=encode(TEXTS[0]), seed=0)
    loop = LiveLoop(stream, encode, control, TEXTS[0], max_chunks=chunks, chunk_seconds=0.75, on_chunk=on_chunk)
    clock["end"] = time.perf_counter()
    result = loop.run()
    out = {
        "chunks": result.chunks,
        "latent_frames": result.stream.num_frames,
        "kv_cache_bytes_per_chunk": cache,
        "kv_cache_capacity_frames": result.stream.storage.cache.capacity_frames,
        "per_chunk_ms": [_ms(t) for t in times],
        "per_chunk_ms_median": _ms(statistics.median(times)),
    }
    if window_cache_bytes:
        out["global_over_window_cache_bytes"] = round(cache[-1] / window_cache_bytes, 3)
    return out


def long_run_section(models: Models, args: argparse.Namespace) -> dict:
    size = (args.size, args.size)
    device = torch.device("cpu")
    runs = []
    for r in range(args.repeats):
        logger.info("long_run repeat %d/%d: %d chunks at %dx%d", r + 1, args.repeats, args.chunks, *size)
        runs.append(long_run(models.model, models.sampler, models.encode, size=size, chunks=args.chunks,
                             window=args.window, sink=args.sink, switch_every=args.switch_every, device=device,
                             probe_every=args.probe_every, mem_at=min(100, args.chunks // 2)))
        gc.collect()
    head = dict(runs[0])

    def load(run: dict) -> float:  # the slower of the reference chunk's early and late medians
        ref = run["per_chunk_ms"].get("reference_chunk")
        return max(v["median"] for k, v in ref.items() if isinstance(v, dict)) if ref else 0.0

    quietest = min(range(len(runs)), key=lambda i: load(runs[i]))
    head["per_chunk_ms"] = runs[quietest]["per_chunk_ms"]
    head["per_chunk_ms_from_repeat"] = quietest + 1
    head["note"] = ("memory figures are from the first repeat (a fresh process), per_chunk_ms from the repeat whose "
                    "interleaved reference chunk was fastest (the least loaded machine); the committed latents grow "
                    "linearly by design, so RSS is expected to grow by about "
                    "rss_mb.expected_growth_from_committed_latents and no more; the KV cache must stay flat")
    if len(runs) > 1:
        key = next(k for k in runs[0]["per_chunk_ms"] if k.startswith("first_"))
        lkey = key.replace("first_", "last_")
        head["repeats"] = {
            "n": len(runs),
            "first_median_ms": spread([x["per_chunk_ms"][key]["median"] for x in runs]),
            "last_median_ms": spread([x["per_chunk_ms"][lkey]["median"] for x in runs]),
            "last_over_first_median": spread([x["per_chunk_ms"]["last_over_first_median"] for x in runs], 4),
            "load_corrected_ratio": spread([x["per_chunk_ms"].get("load_corrected_ratio", float("nan"))
                                            for x in runs], 4),
            "rss_growth_mb": spread([x["rss_mb"]["growth"] for x in runs], 2),
            "rss_growth_beyond_latents_mb": spread([x["rss_mb"]["growth_beyond_latents"] for x in runs], 2),
            "malloc_in_use_growth_beyond_latents_mb": spread(
                [x["malloc_heap_mb"]["in_use_growth_beyond_latents"] for x in runs if "malloc_heap_mb" in x] or [0.0], 2),
            "kv_cache_equal": [x["kv_cache_bytes"]["equal"] for x in runs],
        }
    logger.info("global-attention contrast")
    head["global_attention"] = global_contrast(models.model, models.sampler, models.encode, size=size,
                                               device=device, window_cache_bytes=head["kv_cache_bytes"]["at_end"])
    return head


def gpu_long_run(args: argparse.Namespace) -> dict:
    """The Wan2.1-1.3B shape at 480x832 on CUDA, bf16, random weights and random prompt embeddings."""
    from stream_bench import random_model

    device = torch.device("cuda")
    cfg = DIT_PRESETS["wan2.1-1.3b"]
    model = random_model(cfg, device, torch.bfloat16)
    sampler = sampler_preset("chunkwise-4step")

    def encode(text: str) -> Prompt:
        return random_prompt(text, cfg.text_dim, 32)

    torch.cuda.reset_peak_memory_stats(device)
    out = long_run(model, sampler, encode, size=(480, 832), chunks=args.gpu_chunks, window=args.window,
                   sink=args.sink, switch_every=min(args.switch_every, max(1, args.gpu_chunks // 4)), device=device,
                   probe_every=0, mem_at=min(10, args.gpu_chunks))
    out["gpu"] = torch.cuda.get_device_name(0)
    out["model"] = "wan2.1-1.3b"
    out["size"] = [480, 832]
    out["cuda_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated(device) / MB, 1)
    out["global_attention"] = global_contrast(model, sampler, encode, size=(480, 832), device=device,
                                              window_cache_bytes=out["kv_cache_bytes"]["at_end"])
    del model
    torch.cuda.empty_cache()
    return out


# ----------------------------------------------------------------------------------------------- prompt changes
def prompt_change_run(models: Models, *, realtime: bool, changes: int, seed: int, size: int, window: int, sink: int,
                      chunk_seconds: float, gaps_s: tuple[float, float]) -> dict:
    """A LiveLoop on a thread, steered from here at random moments; latency to the first new-prompt frame."""
    rng = random.Random(seed)
    stream = start_stream(models.model, models.sampler, height=size, width=size, prompt=models.encode(TEXTS[0]),
                          seed=seed, window_frames=window, sink_frames=sink)
    control = LiveControl()
    preview = LatentRGBPreview().stream()
    lock = threading.Lock()
    state: dict = {"want": None, "first_frame_t": None}
    first_chunk = threading.Event()
    seen = threading.Event()
    found: list[dict] = []
    decode_s: list[float] = []

    def on_chunk(snapshot: Stream, index: int) -> None:
        event = snapshot.history[-1]
        t0 = time.perf_counter()
        frames = preview.decode(event.latents)
        done = time.perf_counter()
        decode_s.append(done - t0)
        assert frames.shape[1] > 0
        if state["first_frame_t"] is None:
            state["first_frame_t"] = done
            first_chunk.set()
        with lock:
            want = state["want"]
            if want is not None and event.prompt.label == want["text"]:
                found.append({**want, "index": index, "decoded_t": done})
                state["want"] = None
                seen.set()

    loop = LiveLoop(stream, models.encode, control, TEXTS[0], max_chunks=1_000_000, chunk_seconds=chunk_seconds,
                    realtime=realtime, lead_chunks=1, on_chunk=on_chunk)
    box: dict = {}

    def target() -> None:
        cpu0 = time.thread_time()
        t0 = time.perf_counter()
        box["result"] = loop.run()
        box["loop_thread_cpu_s"] = time.thread_time() - cpu0
        box["wall_s"] = time.perf_counter() - t0

    thread = threading.Thread(target=target, name="live-loop", daemon=True)
    thread.start()
    if not first_chunk.wait(60):
        raise RuntimeError("the live loop made no chunk within 60 s")
    missed = 0
    for i in range(changes):
        time.sleep(rng.uniform(*gaps_s))
        text = f"{TEXTS[(i + 1) % len(TEXTS)]} (change {i + 1})"
        seen.clear()
        with lock:
            chunks_done = control.chunk
            in_progress = control.generating
            state["want"] = {"text": text, "set_t": time.perf_counter(), "chunks_done": chunks_done,
                             "in_progress": in_progress}
            state["want"]["request"] = control.set_prompt(text)  # the loop encodes it, then says its chunk
        if not seen.wait(60):
            missed += 1
            logger.warning("prompt change %d not seen within 60 s", i + 1)
    control.stop()
    thread.join(120)
    result = box["result"]
    latencies = [f["decoded_t"] - f["set_t"] for f in found]
    in_chunks = [f["index"] - f["chunks_done"] + 1 for f in found]
    out: dict = {
        "realtime": realtime,
        "chunk_seconds": chunk_seconds,
        "lead_chunks": 1,
        "changes": changes,
        "seen": len(found),
        "missed": missed,
        "latency_ms": {"median": _ms(statistics.median(latencies)), "max": _ms(max(latencies)),
                       "min": _ms(min(latencies)), "values": [_ms(x) for x in latencies]} if latencies else {},
        "latency_chunks": {"median": statistics.median(in_chunks), "max": max(in_chunks), "values": in_chunks,
                           "what": "chunks finished after set_prompt up to and including the first chunk made "
                                   "with the new prompt (1 = the very next chunk)"} if in_chunks else {},
        "announced_chunk_wrong": sum(f["request"].wait(0) != f["index"] for f in found),
        "changes_during_a_chunk": sum(bool(f["in_progress"]) for f in found),
        "chunks_made": result.chunks,
        "wall_s": round(box["wall_s"], 3),
        "loop_thread_cpu_s": round(box["loop_thread_cpu_s"], 3),
        "latent2rgb_decode_ms_median": _ms(statistics.median(decode_s)),
        "ended_by": result.ended_by,
    }
    if realtime and found:
        # a viewer that starts playing when chunk 0's frames arrive and then plays chunk_seconds per chunk
        shown = [max(f["decoded_t"], state["first_frame_t"] + f["index"] * chunk_seconds) - f["set_t"] for f in found]
        out["shown_latency_ms"] = {
            "what": "until the viewer sees the new prompt, if playback starts when chunk 0 arrives and runs at "
                    "chunk_seconds per chunk",
            "median": _ms(statistics.median(shown)), "max": _ms(max(shown)),
        }
        out["loop_thread_cpu_fraction"] = round(box["loop_thread_cpu_s"] / box["wall_s"], 3)
    return out


# ----------------------------------------------------------------------------------------------- live fps
def live_fps_section(models: Models, *, chunks: int, repeats: int, size: int, window: int, sink: int) -> dict:
    decoders: dict[str, Callable[[], Callable[[torch.Tensor], torch.Tensor] | None]] = {
        "none": lambda: None,
        "latent2rgb": lambda: LatentRGBPreview().stream().decode,
        "tiny_preview": lambda: models.preview.stream().decode,
        "tiny_wan_vae": lambda: models.vae.stream_decoder().decode,
    }
    frames_per_block = models.sampler.frames_per_block

    def one(name: str, n: int) -> tuple[float, int, list[float]]:
        decode = decoders[name]()
        count = [0]
        dec_s: list[float] = []

        def on_chunk(snapshot: Stream, index: int) -> None:
            if decode is None:
                return
            t0 = time.perf_counter()
            frames = decode(snapshot.history[-1].latents)
            dec_s.append(time.perf_counter() - t0)
            count[0] += frames.shape[1]

        stream = start_stream(models.model, models.sampler, height=size, width=size,
                              prompt=models.encode(TEXTS[0]), seed=0, window_frames=window, sink_frames=sink)
        loop = LiveLoop(stream, models.encode, LiveControl(), TEXTS[0], max_chunks=n, chunk_seconds=0.75,
                        on_chunk=on_chunk)
        t0 = time.perf_counter()
        loop.run()
        wall = time.perf_counter() - t0
        if decode is None:  # the frames a Wan VAE would make of these latents
            count[0] = max(0, 4 * n * frames_per_block - 3)
        return wall, count[0], dec_s

    for name in decoders:  # warm-up
        one(name, 2)
    samples: dict[str, list[tuple[float, int, list[float]]]] = {k: [] for k in decoders}
    names = list(decoders)
    for r in range(repeats):  # interleaved, rotating the order, so a busy moment hits every decoder alike
        for name in names[r % len(names):] + names[: r % len(names)]:
            samples[name].append(one(name, chunks))
    out: dict = {"chunks_per_run": chunks, "repeats": repeats, "size": [size, size], "decoders": {}}
    for name, runs in samples.items():
        fps = [frames / wall for wall, frames, _ in runs]
        dec = [t for _, _, d in runs for t in d]
        out["decoders"][name] = {
            "pixel_frames_per_s": spread(fps, 1),
            "latent_frames_per_s": spread([chunks * frames_per_block / wall for wall, _, _ in runs], 1),
            "per_chunk_ms": spread([wall / chunks * 1000 for wall, _, _ in runs], 2),
            "decode_per_chunk_ms": summary_ms(dec) if dec else None,
            "frames_per_run": runs[0][1],
        }
    out["note"] = ("pixel frames counted as decoded; for 'none' the frames a Wan VAE would make of the latents "
                   "(4 per latent frame, 3 fewer for the first), i.e. the loop's ceiling")
    return out


# ----------------------------------------------------------------------------------------------- main
def run(args: argparse.Namespace) -> dict:
    torch.set_grad_enabled(False)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    with tempfile.TemporaryDirectory(prefix="cf_live_bench_") as tmp:
        logger.info("writing tiny models to %s", tmp)
        models = Models(Path(tmp) / "models", torch.device("cpu"))
        report: dict = {
            "header": {
                "torch": torch.__version__,
                "python": platform.python_version(),
                "threads": torch.get_num_threads(),
                "cpu_count": os.cpu_count(),
                "machine": platform.machine(),
                "cpu": cpu_description(),
                "platform": platform.platform(),
                "device": "cpu",
                "cuda_available": torch.cuda.is_available(),
                "size": [args.size, args.size],
                "quick": args.quick,
                "seed": args.seed,
                "model": {"file": "cf_tiny_chunkwise.safetensors", "config": models.config.to_dict(),
                          "sampler": models.sampler.to_dict(), "dtype": str(models.model.compute_dtype),
                          "parameters": sum(p.numel() for p in models.model.parameters())},
                "text_encoder": models.text_encoder_kind,
                "preview_decoder": {"file": "cf_tiny_preview.safetensors", "widths": list(models.preview.config.widths)},
                "vae": {"file": "cf_tiny_vae.safetensors", "config": str(models.vae.config)},
                "window_frames": args.window,
                "sink_frames": args.sink,
                "load_average_at_start": list(load_start) if load_start else None,
            }
        }
        logger.info("long_run")
        report["long_run"] = long_run_section(models, args)
        logger.info("prompt_change_latency")
        report["prompt_change_latency"] = {
            "decoder": "latent2rgb (LatentRGBPreview) in on_chunk",
            "realtime": prompt_change_run(models, realtime=True, changes=args.changes, seed=args.seed,
                                          size=args.size, window=args.window, sink=args.sink, chunk_seconds=0.75,
                                          gaps_s=(0.1, 1.5)),
            "not_realtime": prompt_change_run(models, realtime=False, changes=args.changes, seed=args.seed + 1,
                                              size=args.size, window=args.window, sink=args.sink,
                                              chunk_seconds=0.75, gaps_s=(0.005, 0.15)),
        }
        logger.info("live_fps")
        report["live_fps"] = live_fps_section(models, chunks=args.fps_chunks, repeats=args.fps_repeats,
                                              size=args.size, window=args.window, sink=args.sink)
        if torch.cuda.is_available() and not args.quick:
            logger.info("long_run on CUDA at the Wan2.1-1.3B shape")
            report["long_run_gpu"] = gpu_long_run(args)
    load_end = os.getloadavg() if hasattr(os, "getloadavg") else None
    report["header"]["load_average_at_end"] = list(load_end) if load_end else None
    report["header"]["total_wall_s"] = round(time.perf_counter() - started, 2)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="small version: 60 chunks, 3 prompt changes, 8 chunks per decoder, no repeats")
    parser.add_argument("--chunks", type=int, default=None, help="chunks of the long run (default 1000; quick 60)")
    parser.add_argument("--size", type=int, default=64, help="width = height in pixels (multiple of 16)")
    parser.add_argument("--window", type=int, default=12, help="window frames of the long run")
    parser.add_argument("--sink", type=int, default=3, help="sink frames of the long run")
    parser.add_argument("--switch-every", type=int, default=None, help="prompt switch every N chunks (100; quick 20)")
    parser.add_argument("--repeats", type=int, default=None, help="long runs (default 3; quick 1)")
    parser.add_argument("--probe-every", type=int, default=2, help="time a reference chunk every N chunks (0: off)")
    parser.add_argument("--changes", type=int, default=None, help="prompt changes per latency run (10; quick 3)")
    parser.add_argument("--fps-chunks", type=int, default=None, help="chunks per decoder run (40; quick 8)")
    parser.add_argument("--fps-repeats", type=int, default=None, help="interleaved rounds of decoder runs (3; quick 1)")
    parser.add_argument("--gpu-chunks", type=int, default=100, help="chunks of the CUDA long run (Wan2.1-1.3B shape)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {"chunks": (1000, 60), "switch_every": (100, 20), "repeats": (3, 1), "changes": (10, 3),
                "fps_chunks": (40, 8), "fps_repeats": (3, 1)}
    for name, (full, small) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    if args.chunks < 2:
        parser.error("--chunks must be at least 2")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    emit_report(run(args), args.output)


if __name__ == "__main__":
    main()
