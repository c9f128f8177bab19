"""Training stages on micro configs: the rollouts match inference, each stage runs, runs resume exactly, and bad
resumes / corrupt checkpoints are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from causal_forcing_core.config import sampler_preset
from causal_forcing_core.errors import CheckpointError
from causal_forcing_core.noise import SeededNoise
from causal_forcing_core.scheduler import FlowMatchScheduler
from causal_forcing_core.stream import start_stream
from causal_forcing_core.training.consistency import consistency_loss
from causal_forcing_core.training.diffusion import teacher_forcing_loss
from causal_forcing_core.training.dmd import DMDSettings, critic_loss, dmd_generator_loss, rollout
from causal_forcing_core.training.loop import OptimConfig, Stage, make_accelerator
from causal_forcing_core.training.ode import integrate_teacher
from causal_forcing_core.training.rollout import student_rollout
from causal_forcing_core.training.state import config_difference
from tests.tiny import tiny_model, tiny_prompt

SCHED = FlowMatchScheduler()


@pytest.mark.parametrize("preset", ["chunkwise-4step", "framewise-2step"])
def test_training_rollout_is_the_stream_sampler(preset: str) -> None:
    """Without exit steps, grad or context noise, the training rollout reproduces inference bit for bit."""
    model, prompt = tiny_model(), tiny_prompt(1)
    sampler = sampler_preset(preset)
    stream = start_stream(model, sampler, height=64, width=64, prompt=prompt, seed=7).generate(3)
    with torch.no_grad():
        out = student_rollout(model, model.embed_text(prompt.embeds), sampler, SeededNoise(7), batch=1,
                              num_frames=3 * sampler.frames_per_block, latent_size=(8, 8), scheduler=SCHED)
    assert torch.equal(out, stream.latents)


def test_self_rollout_gradients_flow_through_exit_steps_only() -> None:
    """The rollout's output carries a graph to the weights, while the cached K/V of finished blocks are detached."""
    from causal_forcing_core.sampling import dit_flow
    from causal_forcing_core.training.rollout import DetachedPrefixCache

    model = tiny_model().train().requires_grad_(True)
    text = tiny_prompt(1).embeds
    x = rollout(model, text, sampler_preset("chunkwise-4step"), num_frames=6, latent_size=(8, 8), scheduler=SCHED,
                rng=torch.Generator().manual_seed(0), grad=True)
    grads = torch.autograd.grad(x[:, 3:].sum(), list(model.parameters()), allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    cache = DetachedPrefixCache(model.config.num_layers)
    block = torch.randn(1, 3, 16, 8, 8)
    cache.open_block(0, 3)
    dit_flow(model, block, torch.zeros(1, 3), text, cache=cache, start_frame=0)
    assert cache.current[0][0].requires_grad
    cache.commit_block()
    assert not any(k.requires_grad or v.requires_grad for k, v in cache.past)
    cache.open_block(3, 3)
    dit_flow(model, block, torch.full((1, 3), 500.0), text, cache=cache, start_frame=3)
    k, _ = cache.keys_values(0)
    assert k.shape[1] == 2 * cache.past[0][0].shape[1] and k.requires_grad


def test_ode_pairs_keep_the_warped_four_step_times() -> None:
    teacher = tiny_model()
    x0 = torch.randn(2, 6, 16, 8, 8)
    pairs = integrate_teacher(teacher, x0, tiny_prompt(1).embeds.expand(2, -1, -1), tiny_prompt(2).embeds.expand(2, -1, -1),
                              causal=True, frames_per_block=3, scheduler=SCHED, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(pairs.timesteps, SCHED.warp([1000, 750, 500, 250]))
    assert pairs.states.shape == (2, 4, 6, 16, 8, 8)
    assert torch.equal(pairs.context, x0)  # teacher-forced on the ground truth


def test_losses_train_only_the_student() -> None:
    student, teacher, critic = (tiny_model(seed=s).train().requires_grad_(True) for s in (0, 1, 2))
    x0, text, unc = torch.randn(2, 6, 16, 8, 8), tiny_prompt(1).embeds.expand(2, -1, -1), tiny_prompt(2).embeds.expand(2, -1, -1)
    g = torch.Generator().manual_seed(0)
    loss = teacher_forcing_loss(student, x0, text, frames_per_block=3, scheduler=SCHED, generator=g)
    loss = loss + consistency_loss(student, teacher, teacher, x0, text, unc, frames_per_block=3, num_steps=8,
                                   scheduler=SCHED, generator=g)
    x = rollout(student, text, sampler_preset("chunkwise-4step"), num_frames=6, latent_size=(8, 8), scheduler=SCHED,
                rng=g, grad=True)
    dmd, info = dmd_generator_loss(x, teacher, critic, text, unc, DMDSettings(), g)
    (loss + dmd).backward()
    assert all(p.grad is not None for p in student.parameters() if p.requires_grad)
    assert all(p.grad is None for m in (teacher, critic) for p in m.parameters())
    assert torch.isfinite(dmd) and 20 <= info["dmd_t"] <= 980
    c = critic_loss(x.detach(), critic, text, DMDSettings(), g)
    c.backward()
    assert all(p.grad is not None for p in critic.parameters())


def _stage_run(folder: Path, steps: int, stop_at: int | None = None) -> torch.nn.Module:
    model = tiny_model(seed=3).train()
    stage = Stage("tf", folder, make_accelerator(cpu=True), total_steps=steps, seed=5, log_every=1, save_every=1)
    model = stage.add("model", model, OptimConfig(1e-3))

    def step(i: int) -> dict[str, float]:
        if i == stop_at:
            raise KeyboardInterrupt
        x0 = torch.randn(2, 6, 16, 8, 8, generator=stage.rng)
        loss = teacher_forcing_loss(model, x0, tiny_prompt(1).embeds, frames_per_block=3, scheduler=SCHED,
                                    generator=stage.rng)
        return {"loss": float(loss.detach()), "grad_norm": stage.optimise("model", loss)}

    stage.run(step)
    return stage.unwrap("model")


def test_an_interrupted_stage_resumes_to_the_same_weights(tmp_path: Path) -> None:
    straight = _stage_run(tmp_path / "a", 4)
    with pytest.raises(KeyboardInterrupt):
        _stage_run(tmp_path / "b", 4, stop_at=2)
    resumed = _stage_run(tmp_path / "b", 4)
    for (name, p), q in zip(straight.named_parameters(), resumed.parameters()):
        assert torch.equal(p, q), name
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_a_corrupt_checkpoint_is_reported_not_half_loaded(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "checkpoint.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError, match="corrupt"):
        _stage_run(tmp_path / "c", 2)


def test_config_difference_names_every_change() -> None:
    old = {"seed": 0, "dmd": {"steps": 300, "batch": 4}}
    new = {"seed": 0, "dmd": {"steps": 400, "batch": 4, "ema": 0.9}}
    assert config_difference(old, new) == ["dmd.ema: (absent) -> 0.9", "dmd.steps: 300 -> 400"]


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """`train-toy --micro --no-eval` once for the module: two steps of every stage."""
    from causal_forcing_core.training.cli import load_recipe_config
    from causal_forcing_core.training.toy_recipe import train_toy

    out = tmp_path_factory.mktemp("micro") / "run"
    config = load_recipe_config(type("Args", (), {"micro": True, "config": None, "seed": None})())
    return out, train_toy(config, out, evaluate=False)


def test_micro_recipe_trains_every_stage_and_resumes(
    micro_run: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Release layout + safetensors and a loadable bundle; running the command again is a no-op; a changed config
    is refused with the difference."""
    from causal_forcing_core.__main__ import main
    from causal_forcing_core.checkpoints import load_dit
    from causal_forcing_core.toy.bundle import load_toy_model

    out, summary = micro_run
    release = torch.load(out / "ar_ode" / "dmd" / "release.pt", weights_only=True)
    assert set(release) == {"generator", "generator_ema"}
    student = load_dit(summary["student"])
    assert student.sampler is not None and student.sampler.name == "chunkwise-4step"
    toy = load_toy_model(out / "bundle")
    assert toy.student.config == student.config and toy.manifest["sampler"] == "chunkwise-4step"
    for stage in ("vae", "teacher_bidirectional", "teacher_ar", "ar_ode/ode", "ar_ode/dmd"):
        assert (out / stage / "done.json").is_file(), stage
    assert main(["train-toy", "--micro", "--no-eval", "--out", str(out)]) == 0  # finished stages are skipped
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["student"] == summary["student"]
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps({"bidirectional": {"steps": 3}}))
    assert main(["train-toy", "--micro", "--no-eval", "--out", str(out), "--config", str(changed)]) == 2
    assert "bidirectional.steps: 2 -> 3" in caplog.text


@pytest.mark.parametrize("init", ["bidir_ode", "ar_cd", "ar_diffusion"])
def test_other_stage_two_inits_run(micro_run: tuple[Path, dict], init: str) -> None:
    from causal_forcing_core.training.toy_recipe import micro_config, run_distillation, run_shared

    out, _ = micro_run
    shared = run_shared(micro_config(), out)  # every shared stage is finished: nothing retrains
    student = run_distillation(shared, init)
    assert student.is_file() and (out / init / "dmd" / "done.json").is_file()


def test_unknown_recipe_fields_are_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from causal_forcing_core.__main__ import main

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"stepz": 3}))
    assert main(["train-toy", "--micro", "--out", str(tmp_path / "r"), "--config", str(bad)]) == 2
    assert "stepz" in caplog.text and not (tmp_path / "r").exists()


@pytest.mark.slow
def test_two_processes_run_the_same_recipe(tmp_path: Path) -> None:
    """`torchrun --nproc_per_node 2` (gloo on the CPU): both processes train, gradients are averaged, only the main
    process writes; the result is a complete run folder."""
    import os
    import subprocess
    import sys

    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "causal_forcing_core",
         "train-toy", "--micro", "--no-eval", "--out", str(out)],
        check=False, capture_output=True, text=True, timeout=600, env=env, cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "accelerate: 2 process(es)" in proc.stderr
    assert (out / "bundle" / "manifest.json").is_file() and (out / "ar_ode" / "dmd" / "done.json").is_file()


@pytest.mark.slow
def test_the_ablation_bench_runs_end_to_end(micro_run: tuple[Path, dict], tmp_path: Path) -> None:
    """`bench/toy_ablation.py --quick` on the micro run: arms train, evaluate, and the JSON + markdown come out."""
    import subprocess
    import sys

    out, _ = micro_run
    repo = Path(__file__).resolve().parents[1]
    report, table = tmp_path / "ablation.json", tmp_path / "ablation.md"
    proc = subprocess.run(
        [sys.executable, str(repo / "bench" / "toy_ablation.py"), "--root", str(out), "--seeds", "0", "--quick",
         "--arms", "gt", "a", "b", "c0", "--prompts", "2", "--switches", "1", "--threads", "1",
         "--output", str(report), "--markdown", str(table)],
        check=False, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(report.read_text())
    assert set(data["summary"]) == {"gt", "a", "b", "c0"}
    assert 0.0 <= data["summary"]["b"]["colour_accuracy"]["mean"] <= 1.0
    assert "| b: Causal Forcing" in table.read_text()
