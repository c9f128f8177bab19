"""The paper's central claim at toy scale: which stage-2 initialisation makes the best few-step student after DMD.

Arms (every student is chunk-wise, 4 steps, and evaluated with the fixed toy evaluation of
``causal_forcing_core.toy.eval_suite``):

  a  AR diffusion teacher, 48 Euler steps with CFG 3 (the upper reference; 2 x 48 DiT calls per block)
  b  Causal Forcing: causal ODE init from the AR teacher (teacher-forced) + asymmetric DMD
  c  ODE init from the bidirectional teacher (Self-Forcing style) + the same DMD
  d  DMD straight from the AR diffusion model, no ODE init
  e  causal consistency distillation init (Causal Forcing++) + the same DMD

The VAE, the data and both teachers come from one shared run (``--root``, trained first if missing, exactly as
``train-toy`` does); each seed re-runs stage 2 and stage 3 of every arm with that seed (ODE noise, batches,
rollouts) and evaluates with that seed's sampling noise; arm a varies only its sampling noise. The stage-2
students before DMD are scored too (rows ``b0``, ``c0``, ``e0``). Everything is resumable: finished arms are
read back from their ``scores.json``.

    python bench/toy_ablation.py --root runs/toy --seeds 0 1 2 --output bench/results/toy_ablation.json

Prints the JSON report; ``--markdown`` also writes the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_io import emit_report

from causal_forcing_core.config import sampler_preset
from causal_forcing_core.scheduler import FlowMatchScheduler
from causal_forcing_core.text_encoder import load_text_encoder
from causal_forcing_core.toy.eval_suite import EvalSettings, evaluate_model, ground_truth_generator
from causal_forcing_core.training.rollout import teacher_rollout
from causal_forcing_core.training.toy_recipe import (
    CDStageConfig,
    DMDStageConfig,
    ODEStageConfig,
    Shared,
    ToyRecipeConfig,
    evaluate_student,
    load_dit_weights,
    run_distillation,
    run_shared,
    run_stage_two,
)
from causal_forcing_core.vae import load_vae

logger = logging.getLogger("toy_ablation")
ARMS = {
    "gt": "ground truth through the VAE (the ceiling the toy VAE leaves)",
    "a": "AR teacher, 48 Euler steps + CFG 3",
    "b": "Causal Forcing: AR-teacher causal ODE init + DMD",
    "c": "bidirectional-teacher ODE init + DMD (Self Forcing)",
    "d": "DMD from the AR diffusion model, no ODE init",
    "e": "causal CD init + DMD (Causal Forcing++)",
    "b0": "stage 2 only: AR-teacher causal ODE",
    "c0": "stage 2 only: bidirectional-teacher ODE",
    "e0": "stage 2 only: causal CD",
}
INIT_OF = {"b": "ar_ode", "c": "bidir_ode", "d": "ar_diffusion", "e": "ar_cd"}
STAGE2_FILE = {"b0": ("ar_ode", "ode"), "c0": ("bidir_ode", "ode"), "e0": ("ar_cd", "cd")}
METRICS = ("instruction_following", "colour_direction_accuracy", "colour_accuracy", "shape_accuracy", "direction_accuracy", "speed_accuracy",
           "dynamic_degree", "mean_speed", "temporal_consistency", "object_found", "switch_followed_no_recache",
           "switch_latency_no_recache", "switch_followed_recache", "switch_latency_recache")
#: distillation budget of every arm (smaller than the shipped recipe's, so 4 arms x 3 seeds fit on a CPU)
REDUCED = {"ode": ODEStageConfig(clips=96, steps=250), "cd": CDStageConfig(steps=250),
           "dmd": DMDStageConfig(steps=120, ema_start=40)}
#: ``--quick``: two steps of everything, to check the script end to end
QUICK = {"ode": ODEStageConfig(clips=2, ode_steps=4, steps=2, batch=2), "cd": CDStageConfig(steps=2, batch=2, discretisation=4),
         "dmd": DMDStageConfig(steps=2, batch=1, critic_per_generator=1, ema_start=0)}


def _teacher_scores(shared: Shared, settings: EvalSettings) -> dict[str, float]:
    cfg = shared.config
    teacher = load_dit_weights(shared.ar_teacher, cfg.dit_config).eval().requires_grad_(False)
    encoder = load_text_encoder(shared.umt5, shared.tokenizer, dtype=torch.float32, text_len=cfg.dit_config.text_len)
    uncond = teacher.embed_text(encoder.encode([""]))
    fpb = sampler_preset(cfg.sampler).frames_per_block
    h = w = cfg.size // 8

    def generate(embeds: torch.Tensor, chunks: int, switch: tuple[torch.Tensor, int, bool] | None) -> torch.Tensor:
        b = embeds.shape[0]
        noise = torch.randn(b, chunks * fpb, cfg.dit_config.in_dim, h, w,
                            generator=torch.Generator().manual_seed(settings.noise_seed))
        batch_uncond = type(uncond)(uncond.k.expand(-1, b, -1, -1, -1), uncond.v.expand(-1, b, -1, -1, -1))
        other = None if switch is None else (teacher.embed_text(switch[0]), switch[1], switch[2])
        return teacher_rollout(teacher, teacher.embed_text(embeds), batch_uncond, noise=noise, frames_per_block=fpb,
                               num_steps=48, guidance=3.0, scheduler=FlowMatchScheduler(), switch=other)

    return evaluate_model(generate, encoder, load_vae(shared.vae), fpb, settings)


def _ground_truth_scores(shared: Shared, settings: EvalSettings) -> dict[str, float]:
    encoder = load_text_encoder(shared.umt5, shared.tokenizer, dtype=torch.float32,
                                text_len=shared.config.dit_config.text_len)
    vae = load_vae(shared.vae)
    fpb = sampler_preset(shared.config.sampler).frames_per_block
    return evaluate_model(ground_truth_generator(vae, settings, fpb), encoder, vae, fpb, settings)


def _cached(path: Path, compute) -> dict[str, float]:
    if path.is_file():
        return json.loads(path.read_text())
    started = time.monotonic()
    scores = compute()
    scores["eval_seconds"] = round(time.monotonic() - started, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(scores, indent=2) + "\n")
    return scores


def run_seed(shared: Shared, seed: int, arms: list[str], settings: EvalSettings,
             budget: dict[str, object]) -> dict[str, dict[str, float]]:
    cfg = dataclasses.replace(shared.config, seed=seed, **budget)
    seeded = dataclasses.replace(shared, config=cfg)
    folder = shared.root / "ablation" / f"seed{seed}"
    settings = dataclasses.replace(settings, noise_seed=seed)
    out: dict[str, dict[str, float]] = {}
    for arm in arms:
        logger.info("seed %d, arm %s: %s", seed, arm, ARMS[arm])
        if arm == "gt":
            out[arm] = _cached(folder / "ground_truth" / "scores.json", lambda: _ground_truth_scores(shared, settings))
        elif arm == "a":
            out[arm] = _cached(folder / "teacher" / "scores.json", lambda: _teacher_scores(shared, settings))
        elif arm in INIT_OF:
            started = time.monotonic()
            student = run_distillation(seeded, INIT_OF[arm], folder=folder / INIT_OF[arm])
            train_s = time.monotonic() - started
            out[arm] = _cached(folder / INIT_OF[arm] / "scores.json", lambda student=student: evaluate_student(shared, student, settings))
            out[arm].setdefault("train_seconds_this_call", round(train_s, 1))
        else:
            init, stage = STAGE2_FILE[arm]
            model = run_stage_two(seeded, init, folder=folder / init)  # already there when its full arm ran
            out[arm] = _cached(folder / init / stage / "scores.json", lambda model=model: evaluate_student(shared, model, settings))
    return out


def summarise(per_seed: dict[int, dict[str, dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean, sample standard deviation, min and max over seeds of every metric of every arm (NaNs skipped)."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    arms = sorted({a for runs in per_seed.values() for a in runs}, key=list(ARMS).index)
    for arm in arms:
        table[arm] = {}
        for metric in METRICS:
            values = [runs[arm][metric] for runs in per_seed.values() if arm in runs and metric in runs[arm]]
            values = [v for v in values if not math.isnan(v)]
            if not values:
                continue
            table[arm][metric] = {
                "mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "min": min(values), "max": max(values), "n": len(values),
            }
    return table


def markdown(table: dict[str, dict[str, dict[str, float]]], seeds: list[int]) -> str:
    shown = ("instruction_following", "colour_direction_accuracy", "colour_accuracy", "shape_accuracy", "direction_accuracy", "dynamic_degree",
             "mean_speed", "temporal_consistency", "switch_followed_no_recache", "switch_followed_recache")
    head = "| arm | " + " | ".join(m.replace("_", " ") for m in shown) + " |"
    lines = [f"Mean ± std over seeds {', '.join(map(str, seeds))}.", "", head, "|" + "---|" * (len(shown) + 1)]
    for arm, metrics in table.items():
        cells = [f"{metrics[m]['mean']:.3f} ± {metrics[m]['std']:.3f}" if m in metrics else "–" for m in shown]
        lines.append(f"| {arm}: {ARMS[arm]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("runs/toy"), help="shared run (trained if missing)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--prompts", type=int, default=16, help="text-to-video prompts per evaluation")
    parser.add_argument("--switches", type=int, default=8, help="prompt-switch pairs per evaluation (x2: with and "
                                                                 "without re-cache)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: the run's config)")
    parser.add_argument("--quick", action="store_true", help="two training steps per stage (a smoke run)")
    parser.add_argument("--output", type=Path, help="also write the JSON report here")
    parser.add_argument("--markdown", type=Path, help="write the markdown table here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("accelerate").setLevel(logging.WARNING)
    config_path = args.root / "config.json"
    base = ToyRecipeConfig()
    if config_path.is_file():
        base = ToyRecipeConfig.from_dict({**base.to_dict(), **json.loads(config_path.read_text())})
    if args.threads:
        base = dataclasses.replace(base, threads=args.threads)
    started = time.monotonic()
    shared = run_shared(base, args.root)
    settings = EvalSettings(num_prompts=args.prompts, num_switches=args.switches)
    budget = QUICK if args.quick else REDUCED
    per_seed = {seed: run_seed(shared, seed, args.arms, settings, budget) for seed in args.seeds}
    table = summarise(per_seed)
    report = {
        "benchmark": "toy_ablation",
        "arms": {a: ARMS[a] for a in table},
        "seeds": args.seeds,
        "eval": dataclasses.asdict(settings),
        "distillation_budget": {k: dataclasses.asdict(v) for k, v in budget.items()},
        "summary": table,
        "per_seed": {str(k): v for k, v in per_seed.items()},
        "seconds": round(time.monotonic() - started, 1),
        "torch_threads": torch.get_num_threads(),
    }
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown(table, args.seeds))
    emit_report(report, args.output)


if __name__ == "__main__":
    main()
