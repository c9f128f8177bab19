"""Students of other releases on the same backbone (causal_forcing_core/students.py, docs/student_presets.md).

The released settings are written out here once more, as read from each release's config (the doc gives file and
line), so a change to an entry is a change to this file too. The command line is run with a fake hub that serves
tiny files in each release's layout: a LongLive base ``.pt`` (``generator`` and a different ``generator_ema``) and
a rank-256 ``lora.pt`` nested under ``generator_lora``."""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from causal_forcing_core import cli
from causal_forcing_core import model_files as mf
from causal_forcing_core.config import SAMPLER_PRESETS, DiTConfig, sampler_preset
from causal_forcing_core.dit import CausalWanModel
from causal_forcing_core.errors import CheckpointError
from causal_forcing_core.kv_cache import validate_window
from causal_forcing_core.lora import LONGLIVE_KEY, Lora, LoraLayer
from causal_forcing_core.rolling import check_rolling_settings
from causal_forcing_core.sampling import chunk_timesteps
from causal_forcing_core.scheduler import FlowMatchScheduler
from causal_forcing_core.students import STUDENTS, StudentLora, student_for_file
from causal_forcing_core.video_io import read_video_frames
from test_cli import run_main, weights  # noqa: F401 - weights: fixture (tiny text encoder, tokenizer, VAE)
from tiny import tiny_model, tiny_stream

DOC = Path(__file__).resolve().parents[1] / "docs" / "student_presets.md"
#: a tiny DiT whose architecture a release .pt (no metadata) gives by its shapes: 128-wide heads, text width of the
#: tiny text encoder; shapes do not tell text_len, so it is Wan's 512
PT_CONFIG = DiTConfig(dim=128, ffn_dim=128, num_heads=1, num_layers=2, text_dim=32)

#: what each release says (docs/student_presets.md, "Where each setting comes from"): repo, weights, key, LoRA
#: (file, rank, alpha), window, sink, re-cache, and its sampler: steps, shift, warp, frames per block, rolling
RELEASED = {
    "chunkwise": ("zhuhz22/Causal-Forcing", "chunkwise/causal_forcing.pt", "generator", None, 0, 0, "off",
                  ((1000, 750, 500, 250), 5.0, True, 3, False)),
    "longlive": ("Efficient-Large-Model/LongLive-1.3B", "models/longlive_base.pt", "generator",
                 ("models/lora.pt", 256, 256.0), 12, 3, "recent", ((1000, 750, 500, 250), 5.0, True, 3, False)),
    "self-forcing": ("gdhe17/Self-Forcing", "checkpoints/self_forcing_dmd.pt", "generator_ema", None, 0, 0, "off",
                     ((1000, 750, 500, 250), 5.0, True, 3, False)),
    "rolling-forcing": ("TencentARC/RollingForcing", "checkpoints/rolling_forcing_dmd.pt", "generator_ema", None, 0,
                        0, "off", ((1000, 800, 600, 400, 200), 5.0, True, 3, True)),
    "causvid": ("tianweiy/CausVid", "autoregressive_checkpoint/model.pt", "generator", None, 0, 0, "off",
                ((1000, 757, 522), 8.0, False, 3, False)),
}
#: Causal Forcing's own releases as they were before other students joined (saved workflows and scripts name them)
CAUSAL_FORCING = {
    "chunkwise": ("chunkwise/causal_forcing.pt", "chunkwise-4step", False),
    "framewise": ("framewise/causal_forcing.pt", "framewise-4step", True),
    "framewise-2step": ("causal-forcing++/framewise-2step.pt", "framewise-2step", True),
    "framewise-1step": ("causal-forcing++/framewise-1step.pt", "framewise-1step", True),
    "longvideo": ("chunkwise/longvideo.pt", "rolling-4step", True),
}


# ------------------------------------------------------------------------------------------- the entries
def test_causal_forcing_releases_keep_their_names_and_files() -> None:
    assert mf.STUDENTS is STUDENTS and mf.STUDENT_REPO == "zhuhz22/Causal-Forcing"
    for name, (filename, variant, prefer_ema) in CAUSAL_FORCING.items():
        release = STUDENTS[name]
        assert (release.filename, release.variant, release.prefer_ema) == (filename, variant, prefer_ema), name
        assert release.repo == mf.STUDENT_REPO and release.lora is None and release.window_frames == 0
    for name in ("chunkwise-4step", "framewise-4step", "framewise-2step", "framewise-1step", "rolling-4step"):
        assert name in SAMPLER_PRESETS


@pytest.mark.parametrize("name", sorted(STUDENTS))
def test_every_student_resolves_to_a_preset_and_settings_it_can_run(name: str) -> None:
    release = STUDENTS[name]
    sampler = release.sampler
    assert sampler is sampler_preset(release.variant) and release.title
    validate_window(release.window_frames or None, release.sink_frames, sampler.frames_per_block)
    check_rolling_settings(sampler, release.window_frames or None, release.sink_frames, False)
    assert release.files()[0] == (release.repo, release.filename)
    assert len(release.files()) == (2 if release.lora else 1)


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_each_student_has_its_released_settings(name: str) -> None:
    repo, filename, key, lora, window, sink, recache, (steps, shift, warp, chunk, rolling) = RELEASED[name]
    release = STUDENTS[name]
    assert (release.repo, release.filename) == (repo, filename)
    assert release.prefer_ema == (key == "generator_ema")
    assert (None if release.lora is None else (release.lora.filename, release.lora.rank, release.lora.alpha)) == lora
    assert (release.window_frames, release.sink_frames, release.recache.value) == (window, sink, recache)
    s = release.sampler
    assert (s.denoising_steps, s.shift, s.warp, s.frames_per_block, s.rolling) == (steps, shift, warp, chunk, rolling)
    assert s.first_chunk_steps is None and s.context_noise == 0.0  # every release refreshes at t = 0


def _doc_rows() -> dict[str, dict[str, str]]:
    """The preset table of docs/student_presets.md, by student."""
    lines = [ln for ln in DOC.read_text().splitlines() if ln.startswith("| ")]
    header = next(ln for ln in lines if ln.startswith("| student | preset |"))
    names = [c.strip() for c in header.strip("|").split("|")]
    rows = {}
    for line in lines[lines.index(header) + 1:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if not cells[0].startswith("`") or len(cells) != len(names):
            break
        rows[cells[0].strip("`")] = dict(zip(names, cells))
    return rows


def test_the_doc_table_says_what_the_entries_hold() -> None:
    rows = _doc_rows()
    assert set(RELEASED) <= set(rows) <= set(STUDENTS)
    for name, row in rows.items():
        release, s = STUDENTS[name], STUDENTS[name].sampler
        assert row["preset"] == f"`{release.variant}`", name
        assert [int(x) for x in row["steps"].split(",")] == list(s.denoising_steps), name
        assert (float(row["shift"]), row["warp"] == "yes", int(row["chunk"])) == (s.shift, s.warp, s.frames_per_block)
        assert (int(row["window"]), int(row["sink"]), row["re-cache"]) == (
            release.window_frames, release.sink_frames, release.recache.value), name
        assert row["weights"] == f"`{release.repo}` `{release.filename}`", name
        assert row["key"] == ("`generator_ema`" if release.prefer_ema else "`generator`"), name
        lora = release.lora
        expected = "—" if lora is None else f"`{lora.filename}`, rank {lora.rank}, alpha {lora.alpha:g}"
        assert row["LoRA"] == expected, name


def test_the_new_presets_feed_the_released_timesteps() -> None:
    """rolling-5step warps its five steps through the shift-5 schedule; causvid-3step feeds its raw integers."""
    rolling = sampler_preset("rolling-5step")
    sigma = torch.tensor(rolling.denoising_steps, dtype=torch.float64) / 1000
    expected = 1000 * 5 * sigma / (1 + 4 * sigma)  # 1000, 952.38, 882.35, 769.23, 555.56
    got = chunk_timesteps(rolling, FlowMatchScheduler(rolling.shift), 0)
    assert torch.allclose(got.double(), expected, atol=1e-3) and got[1] == pytest.approx(952.381, abs=1e-3)
    causvid = sampler_preset("causvid-3step")
    assert chunk_timesteps(causvid, FlowMatchScheduler(causvid.shift), 4).tolist() == [1000.0, 757.0, 522.0]


def _record_timesteps(model: CausalWanModel) -> list[torch.Tensor]:
    """Every per-frame timestep [B, F] the model is run at (denoising and cache passes), in order."""
    seen: list[torch.Tensor] = []
    time = model._time

    def record(timestep: torch.Tensor):
        seen.append(timestep.detach().clone())
        return time(timestep)

    model._time = record  # type: ignore[method-assign]
    return seen


def test_a_causvid_stream_runs_three_raw_steps_and_a_clean_refresh() -> None:
    model = tiny_model()
    seen = _record_timesteps(model)
    tiny_stream(model, "causvid-3step").generate(2)
    per_pass = [sorted(set(t.flatten().tolist())) for t in seen]
    assert per_pass == [[1000.0], [757.0], [522.0], [0.0]] * 2


def test_a_rolling_forcing_stream_rolls_a_window_of_five_blocks() -> None:
    """Each window pass holds at most 5 blocks (15 frames) at the 5 warped levels, newest at 1000; chunks do not
    depend on how the work is split."""
    model = tiny_model()
    seen = _record_timesteps(model)
    whole = tiny_stream(model, "rolling-5step").generate(7).finish()
    windows = [t[0] for t in seen if float(t.max()) > 0]  # the window passes (cache passes run at t = 0)
    full = [w for w in windows if w.shape[0] == 15]
    assert max(w.shape[0] for w in windows) == 15 and full
    warped = chunk_timesteps(sampler_preset("rolling-5step"), FlowMatchScheduler(5.0), 0)
    assert torch.equal(full[0].view(5, 3)[:, 0], warped.flip(0))  # oldest block most denoised
    split = tiny_stream(model, "rolling-5step").generate(3).generate(4).finish()
    assert whole.num_frames == 33 and torch.equal(split.latents, whole.latents)


def test_a_release_lora_strength_comes_from_its_rank_and_alpha() -> None:
    def lora(rank: int, alpha: float | None) -> Lora:
        return Lora("x.pt", {"blocks.0.self_attn.q": LoraLayer(torch.zeros(rank, 8), torch.zeros(8, rank), alpha)},
                    "peft")

    released = StudentLora("x.pt", rank=4, alpha=8.0)
    assert released.strength_for(lora(4, None)) == 2.0  # the file has no alpha: alpha / rank comes in as strength
    assert released.strength_for(lora(4, 8.0)) == 1.0  # the file scales itself
    assert StudentLora("x.pt", rank=256, alpha=256.0).strength_for(lora(256, None)) == 1.0  # LongLive
    with pytest.raises(CheckpointError, match="rank 16, but the student's release .*has rank 4"):
        released.strength_for(lora(16, None))


# ------------------------------------------------------------------------------------------- the command line
def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_generate_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.mark.parametrize("model,flags,expected", [
    ("longlive", [], (12, 3, "recent")),
    ("longlive", ["--window", "21"], (21, 3, "recent")),  # the release's sink goes with any window
    ("longlive", ["--window", "0"], (0, 0, "recent")),  # no window: no sink
    ("longlive", ["--sink", "0"], (12, 0, "recent")),
    ("longlive", ["--recache", "off"], (12, 3, "off")),
    ("longlive", ["--recache", "window", "--window", "9", "--sink", "2"], (9, 2, "window")),
    ("chunkwise", [], (0, 0, "off")),
    ("self-forcing", ["--recache"], (0, 0, "recent")),
    ("student.safetensors", [], (0, 0, "off")),  # a file: no release, no defaults
    ("student.safetensors", ["--window", "6", "--sink", "3"], (6, 3, "off")),
])
def test_the_release_gives_the_defaults_and_flags_override_them(model, flags, expected) -> None:
    args = _parse("--model", model, *flags)
    cli.apply_student_defaults(args, STUDENTS.get(model))
    assert (args.window, args.sink, args.recache) == expected


def test_help_lists_every_release_with_its_defaults(capsys) -> None:
    from causal_forcing_core.__main__ import main

    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = capsys.readouterr().out
    for name, release in STUDENTS.items():
        assert re.search(rf"^  {re.escape(name)} +{re.escape(release.title)}; --steps {release.variant}", text,
                         re.M), name
    assert "--window 12 --sink 3 --recache recent + its LoRA (rank 256)" in text


@pytest.mark.parametrize("name", sorted(STUDENTS))
def test_each_release_file_is_recognised_by_its_name(name: str) -> None:
    """A release's own file, under the name the download gives it or a flat one a user saves it as."""
    release = STUDENTS[name]
    assert student_for_file(f"{release.repo}/{release.filename}") == (name, release)
    flat = f"{name.replace('-', '_')}_{Path(release.filename).name}"
    assert student_for_file(flat) == (name, release)


@pytest.mark.parametrize("file_name,expected", [
    ("chunkwise/longvideo.pt", "longvideo"),  # the file's own name before its folder
    ("framewise/causal_forcing.pt", "framewise"),
    ("Causal_Forcing_Framewise_1Step.safetensors", "framewise-1step"),
    ("cf_framewise_tiny_2step.safetensors", "framewise-2step"),
    ("causal_forcing_long_video.safetensors", "longvideo"),
    ("LongLive\\longlive_base.pt", "longlive"),
    ("SelfForcing_dmd.pt", "self-forcing"),
    ("model.pt", None),
    ("wan2.1_t2v_1.3B_fp16.safetensors", None),
])
def test_a_file_name_picks_the_student_it_names(file_name: str, expected: str | None) -> None:
    found = student_for_file(file_name)
    assert (found[0] if found else None) == expected


def _release_pt(path: Path, seed: int) -> Path:
    """A release .pt as the trainers save it: ``generator`` (prefixed ``model.``) and a different
    ``generator_ema`` (FSDP-prefixed), so taking the wrong one shows."""
    def prefixed(prefix: str, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {prefix + k: v.contiguous() for k, v in sd.items()}

    torch.save({"generator": prefixed("model.", tiny_model(PT_CONFIG, seed).state_dict()),
                "generator_ema": prefixed("model._fsdp_wrapped_module.", tiny_model(PT_CONFIG, seed + 1).state_dict())},
               path)
    return path


def _longlive_lora(path: Path, rank: int = 256) -> Path:
    """LongLive's lora.pt: ``{"generator_lora": <PEFT state dict>}`` on every linear layer of every block, as its
    adapter config targets them; no alpha (the config's alpha equals the rank)."""
    gen = torch.Generator().manual_seed(3)
    peft = {}
    for name, module in CausalWanModel(PT_CONFIG).blocks.named_modules(prefix="blocks"):
        if isinstance(module, torch.nn.Linear):
            out, inp = module.weight.shape
            peft[f"base_model.model.{name}.lora_A.weight"] = torch.randn(rank, inp, generator=gen) * 0.1
            peft[f"base_model.model.{name}.lora_B.weight"] = torch.randn(out, rank, generator=gen) * 0.1
    torch.save({LONGLIVE_KEY: peft}, path)
    return path


@pytest.fixture(scope="module")
def hub_files(tmp_path_factory) -> dict[tuple[str, str], Path]:
    """What the fake hub serves: each new release's files, in its repo, in its layout."""
    folder = tmp_path_factory.mktemp("hub")
    files = {}
    for i, name in enumerate(RELEASED):
        release = STUDENTS[name]
        files[(release.repo, release.filename)] = _release_pt(folder / f"{name}.pt", seed=20 + 2 * i)
        if release.lora is not None:
            files[(release.repo, release.lora.filename)] = _longlive_lora(folder / f"{name}_lora.pt")
    return files


@pytest.fixture
def hub(hub_files, monkeypatch) -> list[tuple[str, str]]:
    """huggingface_hub.hf_hub_download serving ``hub_files`` into the models folder; returns the calls made."""
    import huggingface_hub

    calls: list[tuple[str, str]] = []

    def hf_hub_download(*, repo_id: str, filename: str, local_dir: str) -> str:
        calls.append((repo_id, filename))
        if (repo_id, filename) not in hub_files:
            raise FileNotFoundError(f"404: {repo_id}/{filename}")
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(hub_files[(repo_id, filename)], target)
        return str(target)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    return calls


def _argv(weights: dict[str, Path], models: Path, *args: str) -> list[str]:  # noqa: F811
    return ["--text-encoder", str(weights["text"]), "--tokenizer", str(weights["tokenizer"]), "--vae",
            str(weights["vae"]), "--models-dir", str(models), "--height", "64", "--width", "64", "--device", "cpu",
            *args]


@pytest.mark.parametrize("name", sorted(set(RELEASED) - {"chunkwise"}))
def test_download_fetches_each_release_and_plans_its_run(name, weights, hub, tmp_path) -> None:  # noqa: F811
    """--download asks the student's own repo for its weights (and LoRA) once; the plan takes the released key,
    preset and defaults, and the weights are read only as far as their header."""
    release = STUDENTS[name]
    models = tmp_path / "models"
    argv = _argv(weights, models, "--model", name, "--download", "--prompt", "a cat", "--frames", "9",
                 "--output", str(tmp_path / "v.mp4"))
    plan = cli.check_generate(_parse(*argv))
    assert hub == release.files()
    assert plan.student == models / release.repo / release.filename and plan.student.is_file()
    assert plan.release is release and plan.sampler.name == release.variant
    assert plan.info.metadata["release_key"] == ("generator_ema" if release.prefer_ema else "generator")
    assert plan.info.config == PT_CONFIG
    if release.lora is not None:
        assert plan.release_lora == models / release.repo / release.lora.filename
    else:
        assert plan.release_lora is None
    cli.check_generate(_parse(*argv))  # everything is in the models folder now: nothing more to fetch
    assert hub == release.files()


def test_a_missing_release_lora_says_where_to_put_it(weights, hub, hub_files, tmp_path, caplog) -> None:  # noqa: F811
    release = STUDENTS["longlive"]
    models = tmp_path / "models"
    base = models / release.repo / release.filename
    base.parent.mkdir(parents=True)
    shutil.copyfile(hub_files[(release.repo, release.filename)], base)
    code, logged = run_main(["generate", *_argv(weights, models, "--model", "longlive", "--prompt", "a cat",
                                                "--output", str(tmp_path / "v.mp4"))], caplog)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert code == 2 and len(errors) == 1 and not hub, logged
    assert re.search(r"No longlive LoRA found: expected .*models/lora\.pt.*huggingface\.co/Efficient-Large-Model/"
                     r"LongLive-1\.3B, file models/lora\.pt.*--download", errors[0])


def test_a_longlive_run_downloads_merges_the_lora_and_follows_its_defaults(weights, hub, hub_files, tmp_path,  # noqa: F811
                                                                           caplog) -> None:
    """``--model longlive --download`` makes the video of the base's ``generator`` weights + its LoRA with a
    12-frame window, a 3-frame sink and re-cache at the switch: the same frames as those settings given by hand
    on a plain file; without the LoRA the video is another one."""
    release = STUDENTS["longlive"]
    models = tmp_path / "models"
    run = ["--schedule", "0: a red square moves left\n3: a blue circle moves up", "--frames", "57", "--seed", "2"]
    code, logged = run_main(["generate", *_argv(weights, models, "--model", "longlive", "--download", *run,
                                                "--output", str(tmp_path / "longlive") + "/")], caplog)
    assert code == 0, logged
    assert hub == release.files() and "longlive runs with --window 12 --sink 3 --recache recent" in logged
    linears = sum(isinstance(m, torch.nn.Linear) for m in CausalWanModel(PT_CONFIG).blocks.modules())
    assert f"Merged 1 LoRA(s) into {linears} layers" in logged  # every layer of the release's LoRA

    by_hand = tmp_path / "generator.safetensors"  # the base's generator weights, as a plain file
    save_file({k: v.contiguous() for k, v in tiny_model(PT_CONFIG, 20 + 2 * list(RELEASED).index("longlive"))
               .state_dict().items()}, str(by_hand),
              metadata={"dit_config": json.dumps(PT_CONFIG.to_dict()), "variant": "chunkwise-4step"})
    same = ["--window", "12", "--sink", "3", "--recache", "recent"]
    videos = {"longlive": read_video_frames(tmp_path / "longlive")}
    for out, extra in (("by_hand", ["--lora", str(models / release.repo / release.lora.filename)]), ("base", [])):
        code, logged = run_main(["generate", *_argv(weights, models, "--model", str(by_hand), *run, *same, *extra,
                                                    "--output", str(tmp_path / out) + "/")], caplog)
        assert code == 0, logged
        videos[out] = read_video_frames(tmp_path / out)
    assert videos["longlive"].shape == (57, 64, 64, 3)
    assert np.array_equal(videos["longlive"], videos["by_hand"])
    assert np.abs(videos["longlive"].astype(float) - videos["base"].astype(float)).mean() > 1


@pytest.mark.parametrize("file_name,key", [("longlive_base.pt", "generator"), ("self_forcing_dmd.pt", "generator_ema"),
                                            ("my_student.pt", "generator_ema")])  # unknown: EMA when there is one
def test_the_node_loader_takes_the_weights_the_release_runs(file_name, key, pack, tmp_path, monkeypatch, caplog) -> None:
    """Causal Forcing Model Loader on a release .pt: ``generator`` or ``generator_ema`` as the student's release
    says, its sampler, and for LongLive a log line naming the LoRA and the window it runs with."""
    import importlib

    from scripts.pack_import import run_node

    folder = tmp_path / "diffusion_models"
    folder.mkdir()
    _release_pt(folder / file_name, seed=4)
    monkeypatch.setenv("CF_MODELS_DIR", str(tmp_path))
    loader = importlib.import_module(f"{pack.__name__}.nodes.model_nodes").CausalForcingModelLoader
    with caplog.at_level(logging.INFO):
        (model,) = run_node(loader, file_name, "auto", "fp32", "none").result
    seed = 4 if key == "generator" else 5
    expected = tiny_model(PT_CONFIG, seed).state_dict()
    got = model.dit.state_dict()
    assert all(torch.equal(got[k], v) for k, v in expected.items())
    assert model.sampler.name == "chunkwise-4step"
    if file_name.startswith("longlive"):
        assert "lora.pt from Efficient-Large-Model/LongLive-1.3B through Causal Forcing LoRA (strength 1.0)" in caplog.text
        assert "window_frames 12 and sink_frames 3 on Causal Forcing Start (re-cache: recent)" in caplog.text
