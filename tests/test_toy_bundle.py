"""The shipped toy bundle: complete, small, loads with the ordinary loaders, and still follows toy prompts.

The thresholds sit below the scores measured on the shipped model (recorded in its manifest, and in the closing
note of the training issue) with a margin, so a regression in the core, the sampler or the evaluator shows up here.
"""

from __future__ import annotations

import pytest
import torch

from causal_forcing_core.config import SAMPLER_PRESETS
from causal_forcing_core.toy.bundle import BUNDLE_DIR, ToyBundlePaths, load_toy_model
from causal_forcing_core.toy.eval_suite import EvalSettings, evaluate_model, student_videos

#: minimum scores on the fixed prompts below. The shipped model measured (prompts seed 99, noise seed 5):
#: object_found 0.75, colour 0.75, direction 0.47, colour + direction 0.44, dynamic degree 0.61 (chance: colour and
#: direction 0.25, colour + direction 0.06); the generation is deterministic, the margins absorb numeric drift
#: across platforms and torch versions
THRESHOLDS = {
    "object_found": 0.6,
    "colour_accuracy": 0.55,
    "direction_accuracy": 0.35,
    "colour_direction_accuracy": 0.3,
    "dynamic_degree": 0.45,
}
#: fraction of 6 prompt switches (colour or direction) followed within the video, with re-cache; measured 0.67
SWITCH_THRESHOLD = 0.5


@pytest.fixture(scope="module")
def toy():
    torch.set_num_threads(1)
    return load_toy_model(BUNDLE_DIR)


def test_the_bundle_is_complete_small_and_safetensors() -> None:
    paths = ToyBundlePaths.of(BUNDLE_DIR)
    assert paths.missing() == []
    files = [p for p in paths.folder.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 25 * 2**20
    assert not [p for p in files if p.suffix in (".pt", ".pth", ".bin", ".ckpt")]  # no pickles shipped
    manifest = paths.read_manifest()
    assert manifest["sampler"] in SAMPLER_PRESETS and manifest["scores"]["instruction_following"] > 0


def _generate(toy, settings: EvalSettings):
    def generate(embeds, chunks, switch):
        return student_videos(toy.student.model, toy.student.sampler, embeds, chunks=chunks, size=settings.size,
                              seed=settings.noise_seed, switch=switch)

    return generate


@pytest.mark.slow
def test_the_shipped_model_follows_toy_prompts(toy) -> None:
    settings = EvalSettings(num_prompts=12, num_switches=0, seed=99, noise_seed=5)
    scores = evaluate_model(_generate(toy, settings), toy.text_encoder, toy.vae,
                            toy.student.sampler.frames_per_block, settings, switches=False)
    low = {k: round(scores[k], 3) for k, v in THRESHOLDS.items() if not scores[k] >= v}
    assert not low, f"below threshold: {low} (all scores: {scores})"


@pytest.mark.slow
def test_the_shipped_model_follows_prompt_switches(toy) -> None:
    settings = EvalSettings(num_prompts=1, num_switches=6, seed=7, noise_seed=3)
    scores = evaluate_model(_generate(toy, settings), toy.text_encoder, toy.vae,
                            toy.student.sampler.frames_per_block, settings)
    assert scores["switch_followed_recache"] >= SWITCH_THRESHOLD, scores
