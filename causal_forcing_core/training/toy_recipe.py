"""The whole Causal Forcing recipe on the toy world, one resumable command.

Shared part (``<out>/``):
  components   frozen tiny umT5 (seeded) + word-level tokenizer
  vae          tiny Wan VAE trained on toy clips, latent statistics folded in
  data         toy clips encoded to latents + caption embeddings
  vae_decoder  the VAE's decoder fine-tuned on long clips (encoder frozen: the latents above stay valid)
  teacher_bidirectional   bidirectional diffusion (Wan's objective): the DMD real score and the critic's start,
                          and the base the AR teacher is fine-tuned from (as Wan2.1 is for the real model)
  teacher_ar   stage 1: teacher-forcing AR diffusion
Distillation (``<out>/<init>/``), by ``init``:
  ar_ode       stage 2a: ODE pairs from the AR teacher (teacher-forced), x0 regression   <- Causal Forcing
  bidir_ode    ODE pairs from the bidirectional teacher, same regression                 <- Self Forcing style
  ar_cd        stage 2b: causal consistency distillation                                 <- Causal Forcing++
  ar_diffusion no stage 2: DMD starts from the AR diffusion model
  then stage 3: asymmetric DMD with self-rollout -> ``release.pt`` + ``student.safetensors``.

Toy deviations from the reference, all forced by training from scratch on two CPU cores: learning rates are
larger (nothing is pre-trained), the teachers drop the caption 10% of the time (Wan learnt its unconditional model
in pre-training; the toy teachers must learn it here for CFG), and the step counts are small.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..checkpoint_convert import convert_release_to_safetensors, dit_metadata
from ..config import DiTConfig, sampler_preset
from ..dit import CausalWanModel
from ..scheduler import FlowMatchScheduler
from ..text_encoder import load_text_encoder
from ..toy.bundle import write_bundle
from ..toy.components import TOY_UMT5, tiny_umt5_weights, write_toy_tokenizer
from ..toy.eval_suite import EvalSettings, evaluate_model, student_videos
from ..toy.world import BACKGROUND
from ..vae import VAEConfig, WanVAE, load_vae
from ..weights import read_state_dict
from .consistency import consistency_loss
from .diffusion import bidirectional_loss, teacher_forcing_loss
from .dmd import DMDSettings, critic_loss, dmd_generator_loss, rollout
from .loop import OptimConfig, Stage, make_accelerator
from .ode import ODEPairs, integrate_teacher, ode_regression_loss
from .state import guard_config
from .toy_config import (  # noqa: F401 - the configs are part of this module's interface
    CDStageConfig,
    DiffusionStageConfig,
    DMDStageConfig,
    ODEStageConfig,
    ToyRecipeConfig,
    VAEStageConfig,
    micro_config,
)
from .toy_data import (
    LatentDataset,
    build_latent_dataset,
    fold_latent_statistics,
    toy_video_batch,
    vae_loss,
)

logger = logging.getLogger(__name__)
INITS = ("ar_ode", "bidir_ode", "ar_cd", "ar_diffusion")
#: toy clip seeds of the VAE's training stream and of its statistics batch (apart from the DiT's seeds 0..N-1)
VAE_CLIP_SEEDS = 10**9
VAE_STATS_SEEDS = 5 * 10**8


# --------------------------------------------------------------------------------------------------- helpers
def _save_model(model: torch.nn.Module, path: Path, **metadata: str) -> None:
    """Safetensors of ``model``; a DiT records its architecture (its head count is not visible in the shapes)."""
    if isinstance(model, CausalWanModel):
        metadata = dit_metadata(model.config, **metadata)
    tmp = path.with_name(f".{path.name}.partial")
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(tmp), metadata=metadata)
    tmp.replace(path)


def load_dit_weights(path: Path, config: DiTConfig) -> CausalWanModel:
    """A trainable DiT of ``config`` with the weights of a safetensors file written by this recipe."""
    model = CausalWanModel(config)
    model.load_state_dict(read_state_dict(path, what="DiT written by the toy recipe"))
    return model


def _new_dit(config: DiTConfig, seed: int) -> CausalWanModel:
    torch.manual_seed(seed)
    return CausalWanModel(config)


def _drop_text(embeds: torch.Tensor, uncond: torch.Tensor, p: float, rng: torch.Generator) -> torch.Tensor:
    """Replace each prompt by the empty prompt with probability ``p`` (the teachers must learn the unconditional
    model for CFG). embeds [B, L, D], uncond [1, L, D]."""
    drop = (torch.rand(embeds.shape[0], generator=rng) < p).to(embeds.device)
    return torch.where(drop.view(-1, 1, 1), uncond.expand_as(embeds), embeds)


@dataclass
class Shared:
    """Outputs of the shared part of the recipe."""

    root: Path
    config: ToyRecipeConfig
    umt5: Path
    tokenizer: Path
    vae: Path
    data: LatentDataset
    bidirectional: Path
    ar_teacher: Path


# --------------------------------------------------------------------------------------------------- shared stages
def _components(root: Path) -> tuple[Path, Path]:
    folder = root / "components"
    folder.mkdir(parents=True, exist_ok=True)
    umt5, tokenizer = folder / "cf_toy_umt5.safetensors", folder / "cf_toy_tokenizer"
    if not umt5.is_file():
        save_file({k: v.contiguous() for k, v in tiny_umt5_weights(TOY_UMT5).items()}, str(umt5))
    if not (tokenizer / "tokenizer.json").is_file():
        write_toy_tokenizer(tokenizer)
    return umt5, tokenizer


def _train_vae(cfg: ToyRecipeConfig, root: Path, acc: Any) -> Path:
    out = root / "vae" / "cf_toy_vae.safetensors"
    stage = Stage("vae", root / "vae", acc, total_steps=cfg.vae.steps, seed=cfg.seed, log_every=cfg.log_every,
                  save_every=cfg.save_every)
    if stage.done:
        return out
    torch.manual_seed(cfg.seed)
    vae = stage.add("vae", WanVAE(VAEConfig(dim=cfg.vae_dim)), OptimConfig(cfg.vae.lr, weight_decay=0.0, grad_clip=1e9))

    def step(i: int) -> dict[str, float]:
        frames = cfg.vae.long_frames if i >= cfg.vae.long_from else cfg.vae.frames
        batch, frames = (cfg.vae.batch, frames) if i % 2 else (cfg.vae.image_batch, 1)
        clips = [VAE_CLIP_SEEDS + i * 1000 + j for j in range(batch)]  # fresh clips every step
        for group in stage.optimizers["vae"].param_groups:
            group["lr"] = cfg.vae.lr * (1 - 0.9 * i / max(1, cfg.vae.steps))
        video = toy_video_batch(clips, frames, cfg.size)
        loss, parts = vae_loss(vae, video, object_weight=cfg.vae.object_weight, warmup=i < cfg.vae.warmup_steps)
        return {"loss": float(loss.detach()), "grad_norm": stage.optimise("vae", loss), **parts}

    stage.run(step)
    final = stage.unwrap("vae").eval().cpu()
    stats = fold_latent_statistics(final, toy_video_batch(list(range(VAE_STATS_SEEDS, VAE_STATS_SEEDS + 32)), 9, cfg.size))
    stage.on_main(lambda: _save_model(final, out))
    stage.finish({"file": out.name, "latent_stats_before_folding": stats})
    return out


def _finetune_decoder(cfg: ToyRecipeConfig, root: Path, acc: Any, vae_path: Path) -> Path:
    """Train ``conv2`` + decoder of the VAE on long clips with the encoder frozen; returns the final VAE file."""
    out = root / "vae_decoder" / "cf_toy_vae.safetensors"
    stage = Stage("vae_decoder", root / "vae_decoder", acc, total_steps=cfg.vae.decoder_steps, seed=cfg.seed,
                  log_every=cfg.log_every, save_every=cfg.save_every)
    if stage.done:
        return out
    vae = load_vae(vae_path, device=acc.device)
    decoder = torch.nn.ModuleDict({"conv2": vae.conv2, "decoder": vae.decoder})
    stage.add("decoder", decoder, OptimConfig(cfg.vae.decoder_lr, weight_decay=0.0, grad_clip=1e9))

    def step(i: int) -> dict[str, float]:
        clips = [VAE_CLIP_SEEDS // 2 + i * 1000 + j for j in range(cfg.vae.decoder_batch)]
        video = toy_video_batch(clips, cfg.vae.decoder_frames, cfg.size).to(acc.device)
        with torch.no_grad():
            mu, _ = vae.encode_posterior(video)
        recon = vae.decode_raw(mu)
        background = torch.tensor(BACKGROUND, dtype=video.dtype, device=video.device).view(1, 3, 1, 1, 1) / 127.5 - 1
        on_object = ((video - background).abs().amax(dim=1, keepdim=True) > 0.1).float()
        loss = ((recon - video).pow(2) * (1 + cfg.vae.object_weight * on_object)).mean()
        return {"loss": float(loss.detach()), "grad_norm": stage.optimise("decoder", loss)}

    stage.run(step)
    stage.on_main(lambda: _save_model(vae.eval().cpu(), out))
    stage.finish({"file": out.name, "encoder_from": str(vae_path)})
    return out


def _build_data(cfg: ToyRecipeConfig, root: Path, vae_path: Path, umt5: Path, tokenizer: Path) -> LatentDataset:
    path = root / "data" / "latents.safetensors"
    if path.is_file():
        return LatentDataset.load(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    encoder = load_text_encoder(umt5, tokenizer, dtype=torch.float32, text_len=cfg.dit_config.text_len)
    data = build_latent_dataset(load_vae(vae_path), encoder, seeds=range(cfg.dataset_clips), num_frames=cfg.num_frames,
                                size=cfg.size)
    data.save(path)
    return data


def _train_diffusion(cfg: ToyRecipeConfig, root: Path, acc: Any, data: LatentDataset, *, name: str, causal: bool,
                     stage_cfg: DiffusionStageConfig, init: Path | None) -> Path:
    out = root / name / "model.safetensors"
    stage = Stage(name, root / name, acc, total_steps=stage_cfg.steps, seed=cfg.seed, log_every=cfg.log_every,
                  save_every=cfg.save_every)
    if stage.done:
        return out
    model = load_dit_weights(init, cfg.dit_config) if init else _new_dit(cfg.dit_config, cfg.seed)
    model = stage.add("model", model, OptimConfig(stage_cfg.lr, stage_cfg.betas))
    scheduler = FlowMatchScheduler()
    fpb = sampler_preset(cfg.sampler).frames_per_block

    def step(i: int) -> dict[str, float]:
        x0, text = data.batch(stage_cfg.batch, stage.rng, acc.device)
        text = _drop_text(text, data.uncond_batch(1, acc.device), cfg.text_dropout, stage.rng)
        if causal:
            loss = teacher_forcing_loss(model, x0, text, frames_per_block=fpb, scheduler=scheduler, generator=stage.rng)
        else:
            loss = bidirectional_loss(model, x0, text, scheduler=scheduler, generator=stage.rng)
        norm = stage.optimise("model", loss)
        return {"loss": float(loss.detach()), "grad_norm": norm}

    stage.run(step)
    stage.on_main(lambda: _save_model(stage.unwrap("model"), out))
    stage.finish({"file": out.name})
    return out


def run_shared(cfg: ToyRecipeConfig, root: Path, acc: Any | None = None) -> Shared:
    """Components, VAE, latent data and both teachers (each stage skipped when already finished)."""
    torch.set_num_threads(cfg.threads)
    acc = acc or make_accelerator()
    guard_config(root, cfg.shared_part())
    if acc.is_main_process:
        _components(root)
    acc.wait_for_everyone()
    umt5, tokenizer = _components(root)
    encoder_vae = _train_vae(cfg, root, acc)
    if acc.is_main_process:
        _build_data(cfg, root, encoder_vae, umt5, tokenizer)
    acc.wait_for_everyone()
    data = _build_data(cfg, root, encoder_vae, umt5, tokenizer)
    vae = _finetune_decoder(cfg, root, acc, encoder_vae)
    bidir = _train_diffusion(cfg, root, acc, data, name="teacher_bidirectional", causal=False,
                             stage_cfg=cfg.bidirectional, init=None)
    ar = _train_diffusion(cfg, root, acc, data, name="teacher_ar", causal=True, stage_cfg=cfg.ar_teacher, init=bidir)
    return Shared(root, cfg, umt5, tokenizer, vae, data, bidir, ar)


# --------------------------------------------------------------------------------------------------- stage 2
def _ode_pairs(shared: Shared, folder: Path, acc: Any, *, causal: bool, teacher: Path) -> ODEPairs:
    """ODE pairs for the first ``ode.clips`` clips (every process computes the same pairs; the main one saves them)."""
    cfg = shared.config
    path = folder / "ode_pairs.safetensors"
    if path.is_file():
        t = read_state_dict(path, what="ODE pairs", advice="delete it to recompute them")
        return ODEPairs(t["states"], t["timesteps"], t["endpoints"], t["context"])
    model = load_dit_weights(teacher, cfg.dit_config).to(acc.device).eval().requires_grad_(False)
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + 17)
    fpb = sampler_preset(cfg.sampler).frames_per_block
    keep = tuple(cfg.ode.ode_steps * k // 4 for k in range(4))
    parts = []
    started = time.monotonic()
    for i in range(0, cfg.ode.clips, 16):
        index = torch.arange(i, min(i + 16, cfg.ode.clips)) % len(shared.data)
        x0, text = shared.data.latents[index].to(acc.device), shared.data.embeds[index].to(acc.device)
        parts.append(integrate_teacher(
            model, x0, text, shared.data.uncond_batch(len(index), acc.device), causal=causal, frames_per_block=fpb,
            num_steps=cfg.ode.ode_steps, guidance=cfg.ode.guidance, keep=keep, scheduler=FlowMatchScheduler(),
            generator=gen))
    pairs = ODEPairs(torch.cat([p.states for p in parts]).cpu(), parts[0].timesteps,
                     torch.cat([p.endpoints for p in parts]).cpu(), torch.cat([p.context for p in parts]).cpu())
    if not acc.is_main_process:
        return pairs
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"states": pairs.states, "timesteps": pairs.timesteps, "endpoints": pairs.endpoints,
               "context": pairs.context, "index": torch.arange(cfg.ode.clips) % len(shared.data)}, str(path))
    logger.info("ODE pairs (%s teacher): %d clips in %.0f s", "AR" if causal else "bidirectional", cfg.ode.clips,
                time.monotonic() - started)
    return pairs


def _train_ode(shared: Shared, folder: Path, acc: Any, *, causal: bool) -> Path:
    cfg = shared.config
    out = folder / "ode" / "model.safetensors"
    stage = Stage("ode", folder / "ode", acc, total_steps=cfg.ode.steps, seed=cfg.seed, log_every=cfg.log_every,
                  save_every=cfg.save_every)
    if stage.done:
        return out
    pairs = _ode_pairs(shared, folder / "ode", acc, causal=causal,
                       teacher=shared.ar_teacher if causal else shared.bidirectional)
    index = torch.arange(pairs.states.shape[0]) % len(shared.data)
    model = stage.add("model", load_dit_weights(shared.ar_teacher, cfg.dit_config), OptimConfig(cfg.ode.lr, cfg.ode.betas))
    scheduler = FlowMatchScheduler()
    fpb = sampler_preset(cfg.sampler).frames_per_block

    def step(i: int) -> dict[str, float]:
        pick = torch.randint(0, pairs.states.shape[0], (cfg.ode.batch,), generator=stage.rng)
        dev = acc.device
        loss = ode_regression_loss(
            model, pairs.states[pick].to(dev), pairs.timesteps, pairs.endpoints[pick].to(dev),
            pairs.context[pick].to(dev), shared.data.embeds[index[pick]].to(dev), frames_per_block=fpb,
            scheduler=scheduler, generator=stage.rng)
        return {"loss": float(loss.detach()), "grad_norm": stage.optimise("model", loss)}

    stage.run(step)
    stage.on_main(lambda: _save_model(stage.unwrap("model"), out))
    stage.finish({"file": out.name, "teacher": "ar" if causal else "bidirectional"})
    return out


def _train_cd(shared: Shared, folder: Path, acc: Any) -> Path:
    cfg = shared.config
    out = folder / "cd" / "model.safetensors"
    stage = Stage("cd", folder / "cd", acc, total_steps=cfg.cd.steps, seed=cfg.seed, log_every=cfg.log_every,
                  save_every=cfg.save_every)
    if stage.done:
        return out
    teacher = load_dit_weights(shared.ar_teacher, cfg.dit_config).to(acc.device).eval().requires_grad_(False)
    student = stage.add("model", load_dit_weights(shared.ar_teacher, cfg.dit_config), OptimConfig(cfg.cd.lr, cfg.cd.betas),
                        ema_decay=cfg.cd.ema_decay)
    ema_model = load_dit_weights(shared.ar_teacher, cfg.dit_config).to(acc.device).eval().requires_grad_(False)
    scheduler = FlowMatchScheduler()
    fpb = sampler_preset(cfg.sampler).frames_per_block

    def step(i: int) -> dict[str, float]:
        stage.emas["model"].copy_to(ema_model)
        x0, text = shared.data.batch(cfg.cd.batch, stage.rng, acc.device)
        loss = consistency_loss(student, ema_model, teacher, x0, text, shared.data.uncond_batch(x0.shape[0], acc.device),
                                frames_per_block=fpb, num_steps=cfg.cd.discretisation, guidance=cfg.cd.guidance,
                                scheduler=scheduler, generator=stage.rng)
        norm = stage.optimise("model", loss)
        stage.update_ema("model")
        return {"loss": float(loss.detach()), "grad_norm": norm}

    stage.run(step)
    stage.on_main(lambda: _save_model(stage.unwrap("model"), out))
    stage.finish({"file": out.name})
    return out


# --------------------------------------------------------------------------------------------------- stage 3
def _train_dmd(shared: Shared, folder: Path, acc: Any, init: Path) -> Path:
    cfg = shared.config
    d = cfg.dmd
    out, student = folder / "dmd" / "release.pt", folder / "dmd" / "student.safetensors"
    stage = Stage("dmd", folder / "dmd", acc, total_steps=d.steps, seed=cfg.seed, log_every=cfg.log_every,
                  save_every=cfg.save_every)
    if stage.done:
        return student
    sampler = sampler_preset(cfg.sampler)
    generator = stage.add("generator", load_dit_weights(init, cfg.dit_config), OptimConfig(d.generator_lr, d.betas),
                          ema_decay=d.ema_decay)
    critic = stage.add("critic", load_dit_weights(shared.bidirectional, cfg.dit_config), OptimConfig(d.critic_lr, d.betas))
    real = load_dit_weights(shared.bidirectional, cfg.dit_config).to(acc.device).eval().requires_grad_(False)
    settings = DMDSettings(real_guidance=d.real_guidance)
    scheduler = FlowMatchScheduler()
    frames = shared.data.latents.shape[1]
    latent_size = tuple(shared.data.latents.shape[3:])
    state = {"generator_steps": 0}

    def step(i: int) -> dict[str, float]:
        metrics: dict[str, float] = {}
        _, text = shared.data.batch(d.batch, stage.rng, acc.device)
        uncond = shared.data.uncond_batch(d.batch, acc.device)
        if i % d.critic_per_generator == 0:
            x = rollout(generator, text, sampler, num_frames=frames, latent_size=latent_size, scheduler=scheduler,
                        rng=stage.rng, grad=True)
            loss, info = dmd_generator_loss(x, real, critic, text, uncond, settings, stage.rng)
            metrics.update(generator_loss=float(loss.detach()), generator_grad_norm=stage.optimise("generator", loss), **info)
            state["generator_steps"] += 1
            stage.update_ema("generator", d.ema_start * d.critic_per_generator)
        _, text = shared.data.batch(d.batch, stage.rng, acc.device)
        with torch.no_grad():
            x = rollout(generator, text, sampler, num_frames=frames, latent_size=latent_size, scheduler=scheduler,
                        rng=stage.rng, grad=False)
        loss = critic_loss(x, critic, text, settings, stage.rng)
        metrics.update(critic_loss=float(loss.detach()), critic_grad_norm=stage.optimise("critic", loss))
        return metrics

    stage.run(step)
    ema = load_dit_weights(init, cfg.dit_config)
    stage.emas["generator"].copy_to(ema)
    release = {"generator": {k: v.cpu() for k, v in stage.unwrap("generator").state_dict().items()},
               "generator_ema": ema.state_dict()}

    def write() -> None:
        torch.save(release, out)
        convert_release_to_safetensors(out, student, variant=cfg.sampler, prefer_ema=True, config=cfg.dit_config)

    stage.on_main(write)
    stage.finish({"release": out.name, "safetensors": student.name, "ema": "generator_ema"})
    return student


def run_stage_two(shared: Shared, init: str, folder: Path | None = None, acc: Any | None = None) -> Path:
    """Stage 2 by ``init`` into ``folder`` (default ``<root>/<init>``); returns the model DMD starts from."""
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    acc = acc or make_accelerator()
    folder = folder or shared.root / init
    guard_config(folder, shared.config.distill_part(init))
    if init == "ar_ode":
        return _train_ode(shared, folder, acc, causal=True)
    if init == "bidir_ode":
        return _train_ode(shared, folder, acc, causal=False)
    if init == "ar_cd":
        return _train_cd(shared, folder, acc)
    return shared.ar_teacher


def run_distillation(shared: Shared, init: str, folder: Path | None = None, acc: Any | None = None) -> Path:
    """Stage 2 (by ``init``) then stage 3 into ``folder`` (default ``<root>/<init>``); returns the student file."""
    acc = acc or make_accelerator()
    folder = folder or shared.root / init
    start = run_stage_two(shared, init, folder, acc)
    return _train_dmd(shared, folder, acc, start)


def evaluate_student(shared: Shared, student: Path, settings: EvalSettings | None = None) -> dict[str, float]:
    """Scores of a student safetensors file on the fixed evaluation (see :mod:`..toy.eval_suite`; default settings
    when None)."""
    from ..checkpoints import load_dit

    settings = settings or EvalSettings()
    loaded = load_dit(student, weight_dtype="fp32")
    encoder = load_text_encoder(shared.umt5, shared.tokenizer, dtype=torch.float32, text_len=loaded.config.text_len)
    sampler = loaded.sampler or sampler_preset(shared.config.sampler)

    def generate(embeds: torch.Tensor, chunks: int, switch: tuple[torch.Tensor, int, bool] | None) -> torch.Tensor:
        return student_videos(loaded.model, sampler, embeds, chunks=chunks, size=settings.size, seed=settings.noise_seed,
                              switch=switch)

    return evaluate_model(generate, encoder, load_vae(shared.vae), sampler.frames_per_block, settings)


def export_bundle(shared: Shared, student: Path, folder: Path, scores: dict[str, float] | None = None) -> Path:
    """Write the bundle (student, text encoder, tokenizer, VAE, manifest) for this run into ``folder``."""
    manifest = {
        "recipe": shared.config.to_dict(),
        "scores": scores or {},
        "sampler": shared.config.sampler,
        "trained_with": "python -m causal_forcing_core train-toy",
    }
    write_bundle(folder, dit=student, text_encoder=shared.umt5, tokenizer=shared.tokenizer, vae=shared.vae,
                 manifest=manifest)
    return folder


def train_toy(cfg: ToyRecipeConfig, root: Path, *, init: str = "ar_ode", evaluate: bool = True) -> dict[str, Any]:
    """The whole recipe: shared stages, stage 2 by ``init``, stage 3, evaluation and the bundle in ``root/bundle``."""
    started = time.monotonic()
    acc = make_accelerator()
    shared = run_shared(cfg, root, acc)
    student = run_distillation(shared, init, acc=acc)
    if not acc.is_main_process:
        return {"student": str(student)}
    scores = evaluate_student(shared, student) if evaluate else {}
    bundle = export_bundle(shared, student, root / "bundle", scores)
    summary = {"student": str(student), "bundle": str(bundle), "scores": scores,
               "seconds": round(time.monotonic() - started, 1)}
    (root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
