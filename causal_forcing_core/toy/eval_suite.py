"""The fixed evaluation of a toy model: generate from a fixed set of toy prompts, decode, and score with
:mod:`.evaluate`.

- text-to-video: ``num_prompts`` captions (fixed by ``seed``), ``chunks`` chunks each;
- prompt switches: ``num_switches`` caption pairs (the second changes colour or direction), ``switch_at`` chunks of
  the first then ``after`` chunks of the second, with and without LongLive KV re-cache.

Students generate through the real stream (:func:`..stream.start_stream`); the AR diffusion teacher through
:func:`..training.rollout.teacher_rollout`. Latents [B, F, C, h, w] decode to frames [F, H, W, 3] in [0, 1].
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..config import SamplerConfig
from ..dit import CausalWanModel
from ..geometry import WAN21
from ..stream import Prompt, start_stream
from ..text_encoder import TextEncoder
from ..vae import WanVAE
from .evaluate import aggregate, chunk_frame_ranges, score_video, switch_latency
from .world import COLOURS, DIRECTIONS, Caption, random_caption

#: generate latents [B, F, C, h, w] for prompt embeddings [B, L, D] (one chunk schedule per call)
Generator = Callable[[torch.Tensor, int, int], torch.Tensor]


@dataclass(frozen=True)
class EvalSettings:
    num_prompts: int = 24
    chunks: int = 3
    num_switches: int = 12
    switch_at: int = 2
    after: int = 3
    size: int = 64
    seed: int = 1234
    noise_seed: int = 0


def eval_captions(settings: EvalSettings) -> list[Caption]:
    rng = random.Random(settings.seed)
    return [random_caption(rng) for _ in range(settings.num_prompts)]


def switch_pairs(settings: EvalSettings) -> list[tuple[Caption, Caption]]:
    """Caption pairs whose second caption changes the colour or the direction (chosen by the settings' seed)."""
    rng = random.Random(settings.seed + 1)
    pairs = []
    for _ in range(settings.num_switches):
        first = random_caption(rng)
        if rng.random() < 0.5:
            second = Caption(rng.choice([c for c in COLOURS if c != first.colour]), first.shape, first.direction, first.speed)
        else:
            second = Caption(first.colour, first.shape, rng.choice([d for d in DIRECTIONS if d != first.direction]), first.speed)
        pairs.append((first, second))
    return pairs


def _frames(vae: WanVAE, latents: torch.Tensor) -> list[torch.Tensor]:
    video = vae.decode(latents)  # [B, T, 3, H, W] in [-1, 1]
    return [((v.permute(0, 2, 3, 1) + 1) / 2).clamp(0, 1).cpu() for v in video]


def student_videos(
    model: CausalWanModel, sampler: SamplerConfig, embeds: torch.Tensor, *, chunks: int, size: int, seed: int,
    switch: tuple[torch.Tensor, int, bool] | None = None,
) -> torch.Tensor:
    """Stream-generated latents [B, chunks * n, C, h, w]; ``switch`` = (new embeds, at chunk, recache);
    ``seed``: the stream's noise seed."""
    stream = start_stream(model, sampler, height=size, width=size, prompt=Prompt(embeds), seed=seed,
                          batch=embeds.shape[0])
    if switch is None:
        return stream.generate(chunks).latents
    other, at, recache = switch
    stream = stream.generate(at)
    return stream.generate(chunks - at, prompt=Prompt(other), recache=recache).latents


def evaluate_model(
    generate: Callable[[torch.Tensor, int, tuple[torch.Tensor, int, bool] | None], torch.Tensor],
    text_encoder: TextEncoder, vae: WanVAE, frames_per_block: int, settings: EvalSettings = EvalSettings(),
    *, switches: bool = True,
) -> dict[str, float]:
    """Metrics of one model. ``generate(embeds [B, L, D], chunks, switch)`` returns latents [B, F, C, h, w]."""
    captions = eval_captions(settings)
    latents = generate(text_encoder.encode([c.text for c in captions]), settings.chunks, None)
    ranges = chunk_frame_ranges(latents.shape[1], frames_per_block)
    scores = [score_video(f, ranges, [c] * len(ranges)) for f, c in zip(_frames(vae, latents), captions)]
    metrics = aggregate(scores)
    if not switches or settings.num_switches == 0:
        return metrics
    pairs = switch_pairs(settings)
    total = settings.switch_at + settings.after
    first = text_encoder.encode([a.text for a, _ in pairs])
    second = text_encoder.encode([b.text for _, b in pairs])
    for recache in (False, True):
        latents = generate(first, total, (second, settings.switch_at, recache))
        ranges = chunk_frame_ranges(latents.shape[1], frames_per_block)
        # the pairs change colour or direction: the switch counts as followed once that change shows
        lat = [switch_latency(f, ranges, a, b, settings.switch_at, only_changed=True)
               for f, (a, b) in zip(_frames(vae, latents), pairs)]
        name = "recache" if recache else "no_recache"
        hits = [v for v in lat if v is not None]
        metrics[f"switch_followed_{name}"] = len(hits) / len(lat)
        metrics[f"switch_latency_{name}"] = sum(hits) / len(hits) if hits else float("nan")
    return metrics


def ground_truth_generator(vae: WanVAE, settings: EvalSettings, frames_per_block: int):
    """A ``generate`` for :func:`evaluate_model` that renders the toy world itself for the captions it is asked
    for (the switch at the first frame of the switch chunk) and encodes it with ``vae``: scored like a model, it
    gives the ceiling the VAE's round trip leaves. Captions are recovered from the embeddings by the caller's
    order, so it must be used with the settings' own caption lists."""
    from .world import render_clip

    captions, pairs = eval_captions(settings), switch_pairs(settings)

    def generate(embeds: torch.Tensor, chunks: int, switch: tuple[torch.Tensor, int, bool] | None) -> torch.Tensor:
        frames = WAN21.pixel_frames(chunks * frames_per_block)
        rng = random.Random(settings.noise_seed)
        clips = []
        for i in range(embeds.shape[0]):
            start = (rng.uniform(0, settings.size), rng.uniform(0, settings.size))
            if switch is None:
                timeline = [(0, captions[i])]
            else:
                at = WAN21.pixel_frames(switch[1] * frames_per_block)
                timeline = [(0, pairs[i][0]), (at, pairs[i][1])]
            clips.append(render_clip(timeline, num_frames=frames, height=settings.size, width=settings.size,
                                     start=start).frames)
        return vae.encode(torch.stack(clips).permute(0, 4, 1, 2, 3) * 2 - 1)

    return generate
