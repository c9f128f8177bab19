"""The Wan 2.1 VAE: ``CausalForcingVAELoader`` -> ``CF_VAE``, ``CausalForcingDecode`` -> ``IMAGE`` and
``CausalForcingSaveVideo`` -> an mp4 written chunk by chunk (:mod:`causal_forcing_core.take_writer`).

Decoding streams chunk by chunk with the core's VAE and a persistent causal cache, so chunks join without seams
(ComfyUI's own VAEDecode restarts its cache per call). A native ``VAE`` (VAELoader with wan_2.1_vae) works too: the
core's VAE is built on the native module's own tensors (shared, not copied) for each run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from ..causal_forcing_core.errors import InvalidInputError
from ..causal_forcing_core.geometry import WAN21
from ..causal_forcing_core.latent_space import from_raw_latents
from ..causal_forcing_core.take_writer import new_take
from ..causal_forcing_core.vae import WanVAE, load_vae
from . import comfy_runtime as rt
from . import toy_entries as toy
from .common import CATEGORY, resolve_vae
from .payloads import CF_STREAM, CF_VAE, CFVae, StreamHandle

logger = logging.getLogger(__name__)

VAE_DTYPES = {"auto": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _latents_to_decode(stream: StreamHandle | None, samples: dict | None) -> torch.Tensor:
    """Normalised latents [1, F, 16, h, w] from a CF_STREAM or a LATENT (exactly one of them)."""
    if stream is not None and samples is not None:
        raise InvalidInputError("Connect a stream (CF_STREAM) or a LATENT to decode, not both.")
    if stream is not None:
        return stream.stream.latents
    if samples is None:
        raise InvalidInputError("Connect a stream (CF_STREAM) or a LATENT to decode.")
    if not isinstance(samples, dict) or "samples" not in samples:
        raise InvalidInputError("The LATENT input holds no 'samples'.")
    return from_raw_latents(samples["samples"])


def decoded_chunks(
    vae: WanVAE, latents: torch.Tensor, chunk: int, node_id: str | None = None
) -> Iterator[torch.Tensor]:
    """Normalised latents [B, F, 16, h, w] -> frames [B, t, 3, H, W] in [0, 1] on the CPU, ``chunk`` latent frames
    at a time through one causal decoder (the pieces join without seams), with one progress bar; interruption is
    checked between chunks."""
    if latents.shape[1] == 0:
        raise InvalidInputError("The stream has no frames yet; generate at least one chunk before decoding.")
    decoder = vae.stream_decoder()
    bar = rt.ProgressBar(latents.shape[1], node_id)
    with torch.no_grad():
        for start in range(0, latents.shape[1], chunk):
            rt.throw_if_interrupted()
            part = latents[:, start : start + chunk].to(vae.device, vae.dtype)
            pixels = decoder.decode(part).float().to(rt.intermediate_device())
            yield ((pixels + 1.0) / 2.0).clamp(0, 1)
            bar.update_absolute(min(start + chunk, latents.shape[1]))


def decode_streaming(vae: WanVAE, latents: torch.Tensor, chunk: int, node_id: str | None = None) -> torch.Tensor:
    """Normalised latents [B, F, 16, h, w] -> IMAGE [B * (1 + 4(F-1)), H, W, 3] in [0, 1] on the CPU
    (:func:`decoded_chunks` joined)."""
    images = torch.cat(list(decoded_chunks(vae, latents, chunk, node_id)), dim=1).permute(0, 1, 3, 4, 2)
    return images.reshape(-1, *images.shape[2:]).contiguous()


def output_folder_for(prefix: str) -> tuple[Path, str, str]:
    """``filename_prefix`` like ``causal_forcing/video`` -> (folder in the output directory, its subfolder as
    ``/view`` names it, the file prefix); a prefix that leaves the output folder is refused."""
    parts = PurePosixPath(prefix.replace("\\", "/")).parts
    if not parts or prefix.startswith(("/", "~")) or ".." in parts or any(":" in p for p in parts):
        raise InvalidInputError(f"filename_prefix {prefix!r} must be a name inside the output folder, like "
                                "'causal_forcing/video'.")
    subfolder = "/".join(parts[:-1])
    return rt.output_directory() / subfolder, subfolder, parts[-1]


def vae_choices() -> list[str]:
    """Files in ``models/vae``, then the embedded toy VAE when its bundle is available."""
    return toy.with_embedded(rt.model_file_list("vae"), toy.VAE_ENTRY)


def vae_path(name: str) -> str:
    """Full path of a listed VAE (the embedded toy entry resolves to its bundle file)."""
    if toy.is_embedded(name):
        return str(toy.embedded_path(name))
    return rt.model_file_path("vae", name)


class CausalForcingVAELoader:
    """Load a Wan 2.1 VAE file with the pack's own loader (reference .pth, ComfyUI safetensors, small test VAEs)."""

    DESCRIPTION = (
        "Loads a Wan 2.1 VAE from models/vae with the Causal Forcing core (also reads the reference Wan2.1_VAE.pth). "
        "The native Load VAE works for decoding too; this one also loads VAEs the native loader cannot."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = (CF_VAE,)
    RETURN_NAMES = ("cf_vae",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "vae_name": (vae_choices(), {
                    "tooltip": f"A Wan 2.1 VAE in models/vae; '{toy.VAE_ENTRY}' is the toy model's VAE.",
                }),
                "dtype": (list(VAE_DTYPES), {"default": "auto", "tooltip": "auto: bf16 on GPU, fp32 on CPU."}),
            }
        }

    def load(self, vae_name: str, dtype: str) -> tuple[CFVae]:
        device = rt.get_torch_device()
        chosen = VAE_DTYPES.get(dtype) or (torch.float32 if device.type == "cpu" else torch.bfloat16)
        vae = load_vae(vae_path(vae_name), device=rt.offload_device(), dtype=chosen)
        return (CFVae(vae, rt.manage_model(vae)),)


class CausalForcingDecode:
    """Decode a stream (or a Wan LATENT) into frames, chunk by chunk with a persistent cache (no seams)."""

    DESCRIPTION = (
        "Decodes a Causal Forcing stream or a Wan 2.1 LATENT into IMAGE frames (16 fps). Decoding streams chunk by "
        "chunk with the VAE's causal cache kept between chunks, so there are no seams. Connect a native VAE "
        "(wan_2.1_vae) or a CF_VAE."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "chunk_frames": ("INT", {
                    "default": 3, "min": 1, "max": 64,
                    "tooltip": "Latent frames decoded at once: smaller uses less memory, the result is the same.",
                }),
            },
            "optional": {
                "stream": (CF_STREAM, {"tooltip": "The stream to decode (all its frames so far)."}),
                "samples": ("LATENT", {"tooltip": "Or a Wan 2.1 video LATENT."}),
                "vae": ("VAE", {"tooltip": "Native Wan 2.1 VAE (Load VAE, wan_2.1_vae.safetensors)."}),
                "cf_vae": (CF_VAE, {"tooltip": "Or a VAE from Causal Forcing VAE Loader."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def decode(
        self, chunk_frames: int, stream: StreamHandle | None = None, samples: dict | None = None, vae: Any = None,
        cf_vae: CFVae | None = None, unique_id: str | None = None,
    ) -> tuple[torch.Tensor]:
        latents = _latents_to_decode(stream, samples)
        model = resolve_vae(vae, cf_vae)
        return (decode_streaming(model, latents, chunk_frames, unique_id),)


class CausalForcingSaveVideo:
    """Decode a stream chunk by chunk straight into an mp4 in the output folder (memory flat however long)."""

    DESCRIPTION = (
        "Decodes a Causal Forcing stream or a Wan 2.1 LATENT chunk by chunk and writes each chunk to an mp4 in the "
        "output folder as soon as it is decoded (H.264, 16 fps, plays in browsers). Memory stays flat however long "
        "the stream, and an interrupted or failed run leaves a playable file of what was decoded. Use it instead of "
        "Decode + Save for long streams."
    )
    CATEGORY = CATEGORY
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    OUTPUT_TOOLTIPS = ("The path of the saved mp4.",)
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        decode = CausalForcingDecode.INPUT_TYPES()
        return {
            "required": {
                "filename_prefix": ("STRING", {"default": "causal_forcing/video",
                                               "tooltip": "Saved as output/<prefix>_00001.mp4, numbered on."}),
                **decode["required"],
            },
            "optional": decode["optional"],
            "hidden": decode["hidden"],
        }

    def save(
        self, filename_prefix: str, chunk_frames: int, stream: StreamHandle | None = None, samples: dict | None = None,
        vae: Any = None, cf_vae: CFVae | None = None, unique_id: str | None = None,
    ) -> dict[str, Any]:
        latents = _latents_to_decode(stream, samples)
        if latents.shape[0] != 1:
            raise InvalidInputError(f"Save Video writes one video; this LATENT holds a batch of {latents.shape[0]}.")
        model = resolve_vae(vae, cf_vae)
        folder, subfolder, prefix = output_folder_for(filename_prefix)
        with new_take(folder, prefix, WAN21.fps) as take:  # closed on any end: the file keeps what was decoded
            for frames in decoded_chunks(model, latents, chunk_frames, unique_id):
                take.write(frames[0])
        saved = take.close()
        logger.info("Saved %s", saved)
        ui = {"images": [{"filename": saved.path.name, "subfolder": subfolder, "type": "output"}], "animated": [True]}
        return {"ui": ui, "result": (str(saved.path),)}


NODE_CLASS_MAPPINGS = {
    "CausalForcingVAELoader": CausalForcingVAELoader,
    "CausalForcingDecode": CausalForcingDecode,
    "CausalForcingSaveVideo": CausalForcingSaveVideo,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "CausalForcingVAELoader": "Causal Forcing VAE Loader",
    "CausalForcingDecode": "Causal Forcing Decode",
    "CausalForcingSaveVideo": "Causal Forcing Save Video",
}
