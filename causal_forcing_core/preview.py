"""Cheap previews of Wan 2.1 latents: a TAEHV-style tiny decoder with streaming memory, and a linear fallback.

Both previewers consume **normalised** Wan 2.1 latents, ``z = (mu - mean) / std`` (what the student generates and
what the Wan VAE's ``decode_to_pixel`` un-normalises; reference §4.2), laid out ``[B, T, 16, h, w]`` (NTCHW, the
core's layout; a ComfyUI ``LATENT`` is ``[B, 16, T, h, w]`` in raw VAE space and must be normalised and permuted
first). Both return frames ``[B, t, 3, H, W]`` float32 in ``[0, 1]`` and share one interface
(:class:`.preview_fallback.Previewer`): ``previewer.stream().decode(chunk)`` for chunk-by-chunk generation, ``previewer.decode(all)``
for a whole video. :func:`.preview_fallback.make_preview_decoder` picks one so callers need no branches.

Tiny decoder (reference §4.3, madebyollin's TAEHV "taew2_1")
------------------------------------------------------------
A 2D-conv decoder with one step of causal memory per :class:`MemBlock`. With widths ``(256, 128, 64, 64)``::

    Clamp tanh(x/3)*3 -> conv 16->256 -> ReLU
    -> 3 x MemBlock(256) -> upsample x2 -> TGrow(256, x1) -> conv 256->128 (no bias)
    -> 3 x MemBlock(128) -> upsample x2 -> TGrow(128, x2) -> conv 128->64  (no bias)
    -> 3 x MemBlock(64)  -> upsample x2 -> TGrow(64, x2)  -> conv 64->64   (no bias)
    -> ReLU -> conv 64->3 -> clamp to [0, 1]

Spatial x8, temporal x4; the first ``frames_to_trim = 3`` output frames are dropped, so latent 0 yields 1 frame
and every later latent 4 (``T`` latents -> ``1 + 4 (T - 1)`` frames, the Wan VAE's count: 21 -> 81).

- ``MemBlock(x_t) = ReLU(convs(cat[x_t, x_{t-1}]) + x_t)`` where ``x_{t-1}`` is the block's *input* at the previous
  time step (zeros before the first one); ``convs`` = conv3x3(2C->C), ReLU, conv3x3, ReLU, conv3x3.
- ``TGrow(stride s)``: a 1x1 conv C -> s*C, reshaped so frame ``t`` becomes frames ``s*t .. s*t+s-1``, frame
  ``s*t+k`` taking output channels ``[k*C, (k+1)*C)``. It works per frame, so it carries no state between calls.

State-dict layout (the published ``taew2_1.pth`` / ``taew2_1.safetensors``): one ``nn.Sequential`` named
``decoder`` with 23 entries, so the keys are::

    decoder.1.{weight,bias}                       conv 16 -> 256
    decoder.{3,4,5,9,10,11,15,16,17}.conv.{0,2,4}.{weight,bias}   MemBlock convs
    decoder.{7,13,19}.conv.weight                 TGrow 1x1 convs (no bias)
    decoder.{8,14,20}.weight                      stage-end convs (no bias)
    decoder.22.{weight,bias}                      conv 64 -> 3

(indices 0, 2, 6, 12, 18, 21 are Clamp/ReLU/Upsample, which have no parameters; MemBlock skips are identities
because input and output widths match, so they have no keys either). The published files also carry the TAEHV
encoder (``encoder.*``); the loader ignores those keys explicitly and rejects anything else. This layout was taken
from the public description of TAEHV (module names and order, read, not copied); the loader checks every key and
shape, so a file with a different layout fails loudly with the names of the keys that differ.

Streaming
---------
:meth:`PreviewDecoder.stream` returns a :class:`TinyDecoderStream` that keeps, for every MemBlock, its input
feature map at the last time step seen, plus how many frames were produced (for the 3-frame trim). Each chunk
runs in parallel over its own time steps with that memory standing in for the zero padding, so decoding
latents in any chunking gives the same frames as decoding them all at once (up to float rounding), with no
re-decoded overlap (the reference demo instead re-decodes the previous 3 latents per block).

The weight-free fallback with the same interface is in :mod:`.preview_fallback`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .errors import CheckpointError, InvalidInputError
from .weights import read_state_dict

logger = logging.getLogger(__name__)

WAN21_LATENT_CHANNELS = 16
DECODER_PREFIX = "decoder."
ENCODER_PREFIX = "encoder."
TAEW21_FILE_HINT = "taew2_1.pth or taew2_1.safetensors (madebyollin's TAEHV for Wan 2.1, in models/vae_approx)"



# --------------------------------------------------------------------------------------------- tiny decoder
@dataclass(frozen=True)
class TinyDecoderConfig:
    """Architecture of the TAEHV-style decoder. The defaults are ``taew2_1`` (Wan 2.1, 16 latent channels).

    ``widths`` are the channel counts of the three MemBlock stages and of the last conv's input;
    ``time_upscale[i]`` / ``space_upscale[i]`` say whether stage ``i`` doubles time / height and width.
    """

    latent_channels: int = WAN21_LATENT_CHANNELS
    widths: tuple[int, int, int, int] = (256, 128, 64, 64)
    time_upscale: tuple[bool, bool, bool] = (False, True, True)
    space_upscale: tuple[bool, bool, bool] = (True, True, True)
    blocks_per_stage: int = 3

    @property
    def time_scale(self) -> int:
        """Raw output frames per latent frame (4 for taew2_1)."""
        return 2 ** sum(self.time_upscale)

    @property
    def spatial_scale(self) -> int:
        """Output pixels per latent pixel along each side (8 for taew2_1)."""
        return 2 ** sum(self.space_upscale)

    @property
    def frames_to_trim(self) -> int:
        """Leading raw frames dropped so latent 0 gives one frame, like the Wan VAE (3 for taew2_1)."""
        return self.time_scale - 1


class Clamp(nn.Module):
    """Soft clamp of the latents to about [-3, 3]: ``tanh(x / 3) * 3``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class MemBlock(nn.Module):
    """Residual conv block that also sees its own input one time step earlier.

    ``forward(x, past)``: ``x`` and ``past`` are ``[N, C, H, W]`` (``past`` = the same block's input at the previous
    time step of each of the N frames, zeros for a stream's first frame); returns ``[N, C, H, W]``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(2 * channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )
        self.skip = nn.Identity()  # widths match inside a stage, so the published files hold no skip weights
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor, past: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(torch.cat([x, past], dim=1)) + self.skip(x))


class TGrow(nn.Module):
    """Temporal upsampling by ``stride``: ``[N*T, C, H, W] -> [N*T*stride, C, H, W]`` (a 1x1 conv to stride*C).

    Output frame ``stride*t + k`` is channel group ``k`` of the conv applied to input frame ``t``.
    """

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(channels, channels * stride, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames, channels, height, width = x.shape
        return self.conv(x).reshape(frames * self.stride, channels, height, width)


def _build_decoder(cfg: TinyDecoderConfig) -> nn.Sequential:
    w = cfg.widths
    layers: list[nn.Module] = [Clamp(), nn.Conv2d(cfg.latent_channels, w[0], 3, padding=1), nn.ReLU()]
    for stage in range(3):
        layers += [MemBlock(w[stage]) for _ in range(cfg.blocks_per_stage)]
        layers += [
            nn.Upsample(scale_factor=2 if cfg.space_upscale[stage] else 1, mode="nearest"),
            TGrow(w[stage], 2 if cfg.time_upscale[stage] else 1),
            nn.Conv2d(w[stage], w[stage + 1], 3, padding=1, bias=False),
        ]
    layers += [nn.ReLU(), nn.Conv2d(w[3], 3, 3, padding=1)]
    return nn.Sequential(*layers)


def _check_latents(latents: Any, channels: int, what: str) -> torch.Tensor:
    if not isinstance(latents, torch.Tensor):
        raise InvalidInputError(
            f"{what} needs a torch tensor of latents [B, T, {channels}, h, w], got {type(latents).__name__}."
        )
    if latents.ndim != 5 or latents.shape[2] != channels:
        hint = ""
        if latents.ndim == 5 and latents.shape[1] == channels:
            hint = " This looks like [B, C, T, h, w] (ComfyUI LATENT layout); pass latents.permute(0, 2, 1, 3, 4)."
        elif latents.ndim == 4 and latents.shape[1] == channels:
            hint = " Add the batch dimension with latents.unsqueeze(0)."
        raise InvalidInputError(
            f"{what} expects normalised Wan 2.1 latents [B, T, {channels}, h, w], "
            f"got shape {tuple(latents.shape)}.{hint}"
        )
    if not latents.is_floating_point():
        raise InvalidInputError(f"{what} expects floating-point latents, got dtype {latents.dtype}.")
    return latents


class TinyDecoderStream:
    """Chunk-by-chunk decoding with the decoder's causal memory kept between calls.

    ``decode(chunk [B, n, C, h, w]) -> frames [B, t, 3, 8h, 8w]`` in [0, 1] (float32); ``t = 4n`` except for the
    stream's first chunk, which loses the 3 trimmed frames. Batch size and latent size must stay the same until
    :meth:`reset`.
    """

    def __init__(self, decoder: PreviewDecoder) -> None:
        self._decoder = decoder
        self._memory: dict[int, torch.Tensor] = {}
        self._raw_frames = 0
        self._geometry: tuple[int, int, int] | None = None
        self.latents_seen = 0
        self.frames_emitted = 0

    def reset(self) -> None:
        """Forget all memory: the next chunk starts a new video."""
        self._memory.clear()
        self._raw_frames = 0
        self._geometry = None
        self.latents_seen = 0
        self.frames_emitted = 0

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Decode the next ``n`` latent frames ``[B, n, C, h, w]`` into ``[B, t, 3, H, W]`` frames in [0, 1]."""
        dec = self._decoder
        cfg = dec.config
        latents = _check_latents(latents, cfg.latent_channels, "PreviewDecoder stream decode")
        batch, n, _, height, width = latents.shape
        if self._geometry is not None and self._geometry != (batch, height, width):
            raise InvalidInputError(
                f"This preview stream decoded latents of batch {self._geometry[0]} and size "
                f"{self._geometry[1]}x{self._geometry[2]}, now got batch {batch} and size {height}x{width}. A stream "
                "keeps per-video memory; call reset() (or start a new stream()) before decoding another video."
            )
        scale = cfg.spatial_scale
        if n == 0:
            return latents.new_zeros((batch, 0, 3, height * scale, width * scale), dtype=torch.float32)
        self._geometry = (batch, height, width)
        param = next(dec.parameters())
        x = latents.to(device=param.device, dtype=param.dtype).reshape(batch * n, cfg.latent_channels, height, width)
        steps = n  # time steps per batch element at the current layer
        for index, layer in enumerate(dec.decoder):
            if isinstance(layer, MemBlock):
                cur = x.reshape(batch, steps, *x.shape[1:])
                prev = self._memory.get(index)
                if prev is None:
                    prev = torch.zeros_like(cur[:, :1])
                past = torch.cat([prev, cur[:, :-1]], dim=1).reshape(x.shape)
                self._memory[index] = cur[:, -1:].clone()  # clone: do not keep the whole chunk alive
                x = layer(x, past)
            elif isinstance(layer, TGrow):
                x = layer(x)
                steps *= layer.stride
            else:
                x = layer(x)
        frames = x.reshape(batch, steps, 3, height * scale, width * scale)
        skip = max(0, cfg.frames_to_trim - self._raw_frames)
        self._raw_frames += steps
        self.latents_seen += n
        frames = torch.nan_to_num(frames[:, skip:].float().clamp(0, 1), nan=0.0)
        self.frames_emitted += frames.shape[1]
        return frames


class PreviewDecoder(nn.Module):
    """TAEHV-style tiny decoder for normalised Wan 2.1 latents (see the module docstring for the layout).

    ``decode(latents [B, T, 16, h, w]) -> [B, 1 + 4(T-1), 3, 8h, 8w]`` in [0, 1]. Build it with random weights
    (tests) or load the published ``taew2_1`` weights with :func:`load_preview_decoder`.
    """

    kind = "taehv"

    def __init__(self, config: TinyDecoderConfig | None = None) -> None:
        super().__init__()
        self.config = config or TinyDecoderConfig()
        if len(self.config.widths) != 4 or len(self.config.time_upscale) != 3 or len(self.config.space_upscale) != 3:
            raise InvalidInputError(
                f"TinyDecoderConfig needs 4 widths and 3 time/space upscale flags, got {self.config}."
            )
        self.decoder = _build_decoder(self.config)
        self.eval()

    @property
    def spatial_scale(self) -> int:
        return self.config.spatial_scale

    def output_frames(self, num_latents: int) -> int:
        """Frames produced for ``num_latents`` latent frames decoded from the start of a video."""
        return max(0, num_latents * self.config.time_scale - self.config.frames_to_trim)

    def stream(self) -> TinyDecoderStream:
        """A new streaming decoder with empty memory."""
        return TinyDecoderStream(self)

    def decode(self, latents: torch.Tensor, chunk_size: int | None = 3) -> torch.Tensor:
        """Decode a whole video ``[B, T, C, h, w]`` from its start.

        Runs ``chunk_size`` latents at a time through one stream (``None``: all at once). The frames are the same
        either way; chunks bound the memory (all 21 latents of a 480x832 video at once need ~10 GB in fp32).
        """
        latents = _check_latents(latents, self.config.latent_channels, "PreviewDecoder.decode")
        if chunk_size is not None and chunk_size < 1:
            raise InvalidInputError(f"chunk_size must be a positive number of latent frames or None, got {chunk_size}.")
        stream = self.stream()
        step = chunk_size or max(1, latents.shape[1])
        parts = [stream.decode(latents[:, i : i + step]) for i in range(0, latents.shape[1], step)]
        if not parts:
            return stream.decode(latents)
        return torch.cat(parts, dim=1)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decode(latents)


# ------------------------------------------------------------------------------------------------- loading
def read_preview_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a ``.pth``/``.pt`` (weights-only torch pickle, a nested ``state_dict`` unwrapped) or
    ``.safetensors`` file, keys as stored (see :mod:`.weights`)."""
    return read_state_dict(path, what="preview decoder file", expected=TAEW21_FILE_HINT)


def _layout_hint(keys: list[str]) -> str:
    sample = " ".join(keys[:50])
    vae_parts = ("decoder.conv1", "decoder.middle", "decoder.upsamples")
    if any(part in sample for part in vae_parts) or "conv2.weight" in keys:
        return (" This looks like the full Wan 2.1 VAE (Wan2.1_VAE.pth / wan_2.1_vae.safetensors), not the tiny "
                "preview decoder; load it as the VAE instead.")
    if "blocks.0.self_attn" in sample or "diffusion_model" in sample or "patch_embedding" in sample:
        return " This looks like a Wan DiT (diffusion model), not the tiny preview decoder."
    if any(k.startswith("decoder.") for k in keys):
        return ""
    return f" First keys: {', '.join(keys[:6])}."


def _infer_config(decoder_sd: Mapping[str, torch.Tensor]) -> TinyDecoderConfig:
    """Widths, latent channels and temporal strides from tensor shapes; falls back to the taew2_1 defaults."""
    default = TinyDecoderConfig()

    def dim(key: str, axis: int) -> int | None:
        t = decoder_sd.get(key)
        return int(t.shape[axis]) if t is not None and t.ndim == 4 else None

    first = dim("1.weight", 0)
    widths = (first, dim("8.weight", 0), dim("14.weight", 0), dim("20.weight", 0))
    if any(w is None for w in widths):
        return default
    grows = []
    for stage, key in enumerate(("7.conv.weight", "13.conv.weight", "19.conv.weight")):
        out = dim(key, 0)
        grows.append(out == 2 * widths[stage] if out is not None else default.time_upscale[stage])
    return TinyDecoderConfig(
        latent_channels=dim("1.weight", 1) or default.latent_channels,
        widths=tuple(int(w) for w in widths),  # type: ignore[arg-type]
        time_upscale=tuple(grows),  # type: ignore[arg-type]
    )


def preview_decoder_from_state_dict(state_dict: Mapping[str, torch.Tensor], name: str = "state dict") -> PreviewDecoder:
    """Build a :class:`PreviewDecoder` from TAEHV keys; ``encoder.*`` is ignored, everything else checked by name."""
    keys = list(state_dict)
    decoder_sd = {k[len(DECODER_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(DECODER_PREFIX)}
    encoder_keys = [k for k in keys if k.startswith(ENCODER_PREFIX)]
    foreign = [k for k in keys if not k.startswith((DECODER_PREFIX, ENCODER_PREFIX))]
    if not decoder_sd:
        raise CheckpointError(
            f"{name} has no 'decoder.*' keys ({len(keys)} keys in all), so it is not a TAEHV preview decoder. "
            f"Expected {TAEW21_FILE_HINT}.{_layout_hint(keys)}"
        )
    cfg = _infer_config(decoder_sd)
    if cfg.latent_channels != WAN21_LATENT_CHANNELS:
        raise CheckpointError(
            f"{name} decodes {cfg.latent_channels}-channel latents, but Wan 2.1 latents have {WAN21_LATENT_CHANNELS} "
            "(taew2_2 / taehv1_5 / taeltx files are for other VAEs). Use taew2_1."
        )
    model = PreviewDecoder(cfg)
    expected = {k[len(DECODER_PREFIX) :]: v for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(decoder_sd))
    unexpected = sorted(set(decoder_sd) - set(expected))
    mis_shaped = [
        f"decoder.{k} {tuple(decoder_sd[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if k in decoder_sd and decoder_sd[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)}: " + ", ".join(f"decoder.{k}" for k in missing[:12]))
    if unexpected:
        problems.append(f"unexpected {len(unexpected)}: " + ", ".join(f"decoder.{k}" for k in unexpected[:12]))
    if mis_shaped:
        problems.append(f"wrong shape {len(mis_shaped)}: " + ", ".join(mis_shaped[:8]))
    if foreign:
        problems.append(f"neither decoder nor encoder {len(foreign)}: " + ", ".join(foreign[:12]))
    if problems:
        raise CheckpointError(
            f"{name} does not match the TAEHV tiny-decoder layout ({'; '.join(problems)}). Expected "
            f"{TAEW21_FILE_HINT} with keys decoder.1.weight ... decoder.22.bias.{_layout_hint(keys)}"
        )
    if encoder_keys:
        logger.debug("%s: ignoring %d encoder keys (the preview only decodes)", name, len(encoder_keys))
    dtypes = {v.dtype for v in decoder_sd.values()}
    if any(not dt.is_floating_point for dt in dtypes):
        raise CheckpointError(
            f"{name} holds non-float decoder weights ({sorted(map(str, dtypes))}); expected float tensors."
        )
    model.decoder.load_state_dict(decoder_sd, strict=True)
    return model


def load_preview_decoder(
    path: str | Path, *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> PreviewDecoder:
    """Load the tiny preview decoder from ``taew2_1.pth`` (weights-only torch pickle) or ``taew2_1.safetensors``.

    Raises :class:`CheckpointError` (or :class:`UnsafeCheckpointError` for a pickle that wants to run code) naming
    what is wrong when the file cannot be read or is not a TAEHV decoder for 16-channel latents.
    """
    path = Path(path)
    model = preview_decoder_from_state_dict(read_preview_state_dict(path), name=path.name)
    model = model.to(device=device, dtype=dtype)
    logger.info("Loaded preview decoder %s (%s, widths %s)", path.name, model.kind, model.config.widths)
    return model


def save_preview_decoder(decoder: PreviewDecoder, path: str | Path) -> Path:
    """Write the decoder in the published layout (``decoder.N.*``), as ``.safetensors`` or a ``.pth`` state dict."""
    path = Path(path)
    sd = {k: v.detach().to("cpu").contiguous() for k, v in decoder.state_dict().items()}
    if path.suffix.lower() in (".safetensors", ".sft"):
        from safetensors.torch import save_file

        save_file(sd, str(path))
    elif path.suffix.lower() in (".pth", ".pt"):
        torch.save(sd, path)
    else:
        raise InvalidInputError(f"Cannot save a preview decoder as {path.name}; use a .safetensors or .pth name.")
    return path
