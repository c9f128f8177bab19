"""Write tiny random Causal Forcing models in ComfyUI's model-folder layout, for tests and smoke runs.

    python scripts/make_tiny_models.py MODELS_DIR [--full-size-vae]

writes, under ``MODELS_DIR``:

- ``diffusion_models/cf_tiny_chunkwise.safetensors`` and ``cf_tiny_framewise.safetensors``: tiny causal Wan DiTs
  (dim 64, 2 layers, text width 32) converted like released students, remembering their sampler variant;
- ``text_encoders/cf_tiny_umt5.pth`` and the tokenizer folder ``text_encoders/cf_tiny_umt5_tokenizer/``: a tiny umT5
  (width 32) for the Causal Forcing text encoder nodes;
- ``vae/cf_tiny_vae.safetensors``: a tiny Wan 2.1 VAE (dim 2) for the Causal Forcing VAE loader;
- ``vae_approx/cf_tiny_preview.safetensors``: a small TAEHV-style preview decoder;
- Wan-shaped for ComfyUI's own loaders (128-wide heads, Wan's 4096-wide text), all small:
  ``diffusion_models/cf_tiny_wan_chunkwise.safetensors`` (a causal DiT that Load Diffusion Model reads as a Wan 2.1
  T2V model, dim 128, 2 layers), ``text_encoders/cf_tiny_umt5_wide.safetensors`` (a umT5 of width 4096 with narrow
  attention, for the Causal Forcing text encoder nodes) and ``loras/cf_tiny_wan_lora.safetensors`` (a ComfyUI-format
  LoRA of that DiT that LoraLoaderModelOnly and the Causal Forcing LoRA node both read);
- with ``--full-size-vae``, ``vae/cf_random_wan21_vae.safetensors``: a random VAE of the real Wan 2.1 shape
  (bf16, about 250 MB) that ComfyUI's own Load VAE accepts.

The weights are random: the videos are noise-like, but every node, shape and file format is exercised for real.
Point ComfyUI at the folder with ``--extra-model-paths-config`` (see ``scripts/comfyui_smoke.py``) or set
``CF_MODELS_DIR`` outside ComfyUI.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from causal_forcing_core.checkpoint_convert import convert_release_to_safetensors  # noqa: E402
from causal_forcing_core.config import DiTConfig  # noqa: E402
from causal_forcing_core.preview import PreviewDecoder, TinyDecoderConfig, save_preview_decoder  # noqa: E402
from causal_forcing_core.vae import VAEConfig, WanVAE  # noqa: E402
from tiny import tiny_model  # noqa: E402
from tiny_text import tiny_reference_t5, tiny_wide_t5, write_tiny_tokenizer  # noqa: E402

logger = logging.getLogger("make_tiny_models")

STUDENTS = {"cf_tiny_chunkwise.safetensors": "chunkwise-4step", "cf_tiny_framewise.safetensors": "framewise-4step"}
TEXT_ENCODER = "cf_tiny_umt5.pth"
TOKENIZER = "cf_tiny_umt5_tokenizer"
TINY_VAE = "cf_tiny_vae.safetensors"
FULL_VAE = "cf_random_wan21_vae.safetensors"
PREVIEW = "cf_tiny_preview.safetensors"
WAN_STUDENT = "cf_tiny_wan_chunkwise.safetensors"
WIDE_TEXT_ENCODER = "cf_tiny_umt5_wide.safetensors"
WAN_LORA = "cf_tiny_wan_lora.safetensors"
#: the smallest DiT ComfyUI's Wan detection reads right: heads are dim / 128 there, the text width is always 4096
WAN_SHAPED = DiTConfig(dim=128, ffn_dim=256, num_heads=1, num_layers=2, text_dim=4096)
#: the layers the tiny LoRA changes, its rank and alpha
LORA_TARGETS = ("blocks.0.self_attn.q", "blocks.0.cross_attn.k", "blocks.1.ffn.2", "blocks.1.self_attn.o")
LORA_RANK, LORA_ALPHA = 4, 2.0


def _random_vae(config: VAEConfig, seed: int) -> dict[str, torch.Tensor]:
    """PyTorch's default initialisation (norm scales one): random, but activations stay finite at any size."""
    torch.manual_seed(seed)
    return {k: v.contiguous() for k, v in WanVAE(config).state_dict().items()}


def tiny_wan_lora(config: DiTConfig = WAN_SHAPED, seed: int = 5) -> dict[str, torch.Tensor]:
    """A random LoRA of :data:`LORA_TARGETS` in ComfyUI's format (``diffusion_model.<layer>.lora_down/lora_up``
    and ``.alpha``), strong enough to change a video visibly."""
    g = torch.Generator().manual_seed(seed)
    model = tiny_model(config, seed=0)
    modules = dict(model.named_modules())
    out: dict[str, torch.Tensor] = {}
    for name in LORA_TARGETS:
        rows, cols = modules[name].weight.shape
        key = f"diffusion_model.{name}"
        out[f"{key}.lora_down.weight"] = torch.randn(LORA_RANK, cols, generator=g) * cols**-0.5
        out[f"{key}.lora_up.weight"] = torch.randn(rows, LORA_RANK, generator=g) * 0.5
        out[f"{key}.alpha"] = torch.tensor(LORA_ALPHA)
    return out


def _write_student(release_dir: Path, out: Path, model: torch.nn.Module, variant: str, **kwargs: object) -> Path:
    release = release_dir / f"{out.stem}.pt"
    torch.save({"generator": {f"model.{k}": v for k, v in model.state_dict().items()}}, release)
    return convert_release_to_safetensors(release, out, variant=variant, **kwargs)  # type: ignore[arg-type]


def write_tiny_models(root: Path, full_size_vae: bool = False) -> dict[str, Path]:
    """Write every tiny model under ``root`` (idempotent); returns what was written by role."""
    written: dict[str, Path] = {}
    for folder in ("diffusion_models", "text_encoders", "vae", "vae_approx", "loras"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for seed, (name, variant) in enumerate(STUDENTS.items()):
            written[variant] = _write_student(
                Path(tmp), root / "diffusion_models" / name, tiny_model(seed=seed), variant, num_heads=2, text_len=16
            )
        written["wan_student"] = _write_student(
            Path(tmp), root / "diffusion_models" / WAN_STUDENT, tiny_model(WAN_SHAPED, seed=0), "chunkwise-4step",
            num_heads=WAN_SHAPED.num_heads, text_len=WAN_SHAPED.text_len,
        )
    save_file(tiny_wide_t5(WAN_SHAPED.text_dim), str(root / "text_encoders" / WIDE_TEXT_ENCODER))
    written["wide_text_encoder"] = root / "text_encoders" / WIDE_TEXT_ENCODER
    save_file(tiny_wan_lora(), str(root / "loras" / WAN_LORA))
    written["wan_lora"] = root / "loras" / WAN_LORA
    torch.save(tiny_reference_t5(), root / "text_encoders" / TEXT_ENCODER)
    written["text_encoder"] = root / "text_encoders" / TEXT_ENCODER
    written["tokenizer"] = write_tiny_tokenizer(root / "text_encoders" / TOKENIZER)
    save_file(_random_vae(VAEConfig(dim=2), 0), str(root / "vae" / TINY_VAE))
    written["vae"] = root / "vae" / TINY_VAE
    torch.manual_seed(0)
    written["preview"] = save_preview_decoder(
        PreviewDecoder(TinyDecoderConfig(widths=(16, 12, 8, 8))), root / "vae_approx" / PREVIEW
    )
    if full_size_vae:
        sd = {k: v.to(torch.bfloat16) for k, v in _random_vae(VAEConfig(), 0).items()}
        save_file(sd, str(root / "vae" / FULL_VAE))
        written["full_vae"] = root / "vae" / FULL_VAE
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models_dir", type=Path)
    parser.add_argument("--full-size-vae", action="store_true", help="also a random VAE of the real Wan 2.1 shape")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    written = write_tiny_models(args.models_dir, args.full_size_vae)
    print(json.dumps({k: str(v) for k, v in written.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
