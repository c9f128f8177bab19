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
from comfy_api.latest import io

from ..causal_forcing_core.errors import InvalidInputError
from ..causal_forcing_core.geometry import WAN21
from ..causal_forcing_core.latent_space import from_raw_latents
from ..causal_forcing_core.take_writer import new_take
from ..causal_forcing_core.vae import WanVAE, load_vae
from . import comfy_runtime as rt
from . import toy_entries as toy
from .common import CATEGORY, resolve_vae
from .payloads import CFVae, StreamHandle, StreamSocket, VAESocket

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


class CausalForcingVAELoader(io.ComfyNode):
    """Load a Wan 2.1 VAE file with the pack's own loader (reference .pth, ComfyUI safetensors, small test VAEs)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CausalForcingVAELoader", display_name="Causal Forcing VAE Loader", category=CATEGORY,
            description=(
                "Loads a Wan 2.1 VAE from models/vae with the Causal Forcing core (also reads the reference "
                "Wan2.1_VAE.pth). The native Load VAE works for decoding too; this one also loads VAEs the native "
                "loader cannot."
            ),
            inputs=[
                io.Combo.Input("vae_name", options=vae_choices(),
                               tooltip=f"A Wan 2.1 VAE in models/vae; '{toy.VAE_ENTRY}' is the toy model's VAE."),
                io.Combo.Input("dtype", options=list(VAE_DTYPES), default="auto", tooltip="auto: bf16 on GPU, fp32 on CPU."),
            ],
            outputs=[VAESocket.Output(display_name="cf_vae")],
        )

    @classmethod
    def execute(cls, vae_name: str, dtype: str) -> io.NodeOutput:
        device = rt.get_torch_device()
        chosen = VAE_DTYPES.get(dtype) or (torch.float32 if device.type == "cpu" else torch.bfloat16)
        vae = load_vae(vae_path(vae_name), device=rt.offload_device(), dtype=chosen)
        return io.NodeOutput(CFVae(vae, rt.manage_model(vae)))


def _decode_inputs() -> list[Any]:
    """What both decoding nodes take: the chunk size, then a stream or a LATENT, and a VAE of either kind."""
    return [
        io.Int.Input("chunk_frames", default=3, min=1, max=64,
                     tooltip="Latent frames decoded at once: smaller uses less memory, the result is the same."),
        StreamSocket.Input("stream", optional=True, tooltip="The stream to decode (all its frames so far)."),
        io.Latent.Input("samples", optional=True, tooltip="Or a Wan 2.1 video LATENT."),
        io.Vae.Input("vae", optional=True, tooltip="Native Wan 2.1 VAE (Load VAE, wan_2.1_vae.safetensors)."),
        VAESocket.Input("cf_vae", optional=True, tooltip="Or a VAE from Causal Forcing VAE Loader."),
    ]


class CausalForcingDecode(io.ComfyNode):
    """Decode a stream (or a Wan LATENT) into frames, chunk by chunk with a persistent cache (no seams)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CausalForcingDecode", display_name="Causal Forcing Decode", category=CATEGORY,
            description=(
                "Decodes a Causal Forcing stream or a Wan 2.1 LATENT into IMAGE frames (16 fps). Decoding streams "
                "chunk by chunk with the VAE's causal cache kept between chunks, so there are no seams. Connect a "
                "native VAE (wan_2.1_vae) or a CF_VAE."
            ),
            inputs=_decode_inputs(),
            outputs=[io.Image.Output(display_name="images")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(
        cls, chunk_frames: int, stream: StreamHandle | None = None, samples: dict | None = None, vae: Any = None,
        cf_vae: CFVae | None = None,
    ) -> io.NodeOutput:
        latents = _latents_to_decode(stream, samples)
        model = resolve_vae(vae, cf_vae)
        return io.NodeOutput(decode_streaming(model, latents, chunk_frames, cls.hidden.unique_id))


class CausalForcingSaveVideo(io.ComfyNode):
    """Decode a stream chunk by chunk straight into an mp4 in the output folder (memory flat however long)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CausalForcingSaveVideo", display_name="Causal Forcing Save Video", category=CATEGORY,
            description=(
                "Decodes a Causal Forcing stream or a Wan 2.1 LATENT chunk by chunk and writes each chunk to an mp4 "
                "in the output folder as soon as it is decoded (H.264, 16 fps, plays in browsers). Memory stays flat "
                "however long the stream, and an interrupted or failed run leaves a playable file of what was "
                "decoded. Use it instead of Decode + Save for long streams."
            ),
            inputs=[
                io.String.Input("filename_prefix", default="causal_forcing/video",
                                tooltip="Saved as output/<prefix>_00001.mp4, numbered on."),
                *_decode_inputs(),
            ],
            outputs=[io.String.Output(display_name="path", tooltip="The path of the saved mp4.")],
            hidden=[io.Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    def execute(
        cls, filename_prefix: str, chunk_frames: int, stream: StreamHandle | None = None, samples: dict | None = None,
        vae: Any = None, cf_vae: CFVae | None = None,
    ) -> io.NodeOutput:
        latents = _latents_to_decode(stream, samples)
        if latents.shape[0] != 1:
            raise InvalidInputError(f"Save Video writes one video; this LATENT holds a batch of {latents.shape[0]}.")
        model = resolve_vae(vae, cf_vae)
        folder, subfolder, prefix = output_folder_for(filename_prefix)
        with new_take(folder, prefix, WAN21.fps) as take:  # closed on any end: the file keeps what was decoded
            for frames in decoded_chunks(model, latents, chunk_frames, cls.hidden.unique_id):
                take.write(frames[0])
        saved = take.close()
        logger.info("Saved %s", saved)
        ui = {"images": [{"filename": saved.path.name, "subfolder": subfolder, "type": "output"}], "animated": [True]}
        return io.NodeOutput(str(saved.path), ui=ui)


#: the nodes of this module, registered by :mod:`nodes`
NODES: tuple[type[io.ComfyNode], ...] = (CausalForcingVAELoader, CausalForcingDecode, CausalForcingSaveVideo)
