"""Weight-free preview of Wan 2.1 latents, and the factory that picks a previewer.

:func:`latent_to_rgb` is a fixed per-pixel affine map from the 16 normalised latent channels to RGB. Without the
real VAE here we cannot fit true colours, so the default is a documented *false-colour* map: channel groups
0-4, 5-10 and 11-15 drive red, green and blue around mid grey. It shows layout and motion, not colour. Better
factors come from :func:`fit_latent_rgb_factors` on pairs of latents and their VAE decodes, or (inside ComfyUI) from
ComfyUI's own latent format for Wan 2.1, passed in through ``factors``/``bias``.

:class:`LatentRGBPreview` wraps it in the :class:`.preview.PreviewDecoder` interface, and
:func:`make_preview_decoder` returns the tiny decoder when its file exists, else this fallback.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from .errors import InvalidInputError
from .preview import TAEW21_FILE_HINT, WAN21_LATENT_CHANNELS, PreviewDecoder, _check_latents, load_preview_decoder

logger = logging.getLogger(__name__)


def _false_colour_factors() -> tuple[torch.Tensor, torch.Tensor]:
    """[16, 3] factors averaging channel groups into R, G, B (0.15 per unit of group mean), bias mid grey."""
    factors = torch.zeros(WAN21_LATENT_CHANNELS, 3)
    for colour, channels in enumerate((range(0, 5), range(5, 11), range(11, 16))):
        factors[list(channels), colour] = 0.15 / len(channels) ** 0.5
    return factors, torch.full((3,), 0.5)


WAN21_RGB_FACTORS, WAN21_RGB_BIAS = _false_colour_factors()


def latent_to_rgb(
    latents: torch.Tensor,
    *,
    upscale: bool | int = False,
    factors: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-pixel affine preview ``[B, T, 16, h, w] -> [B, T, 3, h, w]`` in [0, 1] (float32).

    ``upscale``: False keeps latent size; True enlarges x8 (nearest) to pixel size; an int enlarges by that factor.
    ``factors`` [16, 3] / ``bias`` [3] replace :data:`WAN21_RGB_FACTORS` / :data:`WAN21_RGB_BIAS`.
    """
    channels = WAN21_LATENT_CHANNELS if factors is None else int(factors.shape[0])
    latents = _check_latents(latents, channels, "latent_to_rgb")
    f = WAN21_RGB_FACTORS if factors is None else factors
    b = WAN21_RGB_BIAS if bias is None else bias
    f = f.to(device=latents.device, dtype=torch.float32)
    b = b.to(device=latents.device, dtype=torch.float32)
    rgb = torch.einsum("btchw,cr->btrhw", latents.float(), f) + b.view(1, 1, 3, 1, 1)
    rgb = torch.nan_to_num(rgb.clamp(0, 1), nan=0.0)
    factor = 8 if upscale is True else int(upscale)
    if factor > 1:
        bsz, t = rgb.shape[:2]
        rgb = F.interpolate(rgb.flatten(0, 1), scale_factor=factor, mode="nearest")
        rgb = rgb.reshape(bsz, t, *rgb.shape[1:])
    return rgb


def fit_latent_rgb_factors(latents: torch.Tensor, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares fit of ``rgb ~ latents @ factors + bias``; returns ``factors [C, 3]``, ``bias [3]``.

    ``latents`` [..., C] and ``rgb`` [..., 3] hold matching pixels (e.g. normalised latents and the Wan VAE decode
    of the same clip, average-pooled x8 and taken at matching frames, RGB in [0, 1]).
    """
    if latents.shape[:-1] != rgb.shape[:-1] or rgb.shape[-1] != 3:
        raise InvalidInputError(
            f"fit_latent_rgb_factors needs latents [..., C] and rgb [..., 3] over the same pixels, got "
            f"{tuple(latents.shape)} and {tuple(rgb.shape)}."
        )
    x = latents.reshape(-1, latents.shape[-1]).double()
    y = rgb.reshape(-1, 3).double()
    design = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
    solution = torch.linalg.lstsq(design, y).solution
    return solution[:-1].float(), solution[-1].float()


class LatentRGBStream:
    """Stream with the :class:`TinyDecoderStream` interface over :func:`latent_to_rgb` (stateless but the count).

    With ``temporal_repeat`` a stream's first latent gives 1 frame and every later one 4 copies, matching the
    Wan VAE frame count (and so 16 fps timing).
    """

    def __init__(self, preview: LatentRGBPreview) -> None:
        self._preview = preview
        self.latents_seen = 0
        self.frames_emitted = 0

    def reset(self) -> None:
        self.latents_seen = 0
        self.frames_emitted = 0

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        p = self._preview
        rgb = latent_to_rgb(latents, upscale=p.spatial_scale if p.spatial_scale > 1 else False, factors=p.factors,
                            bias=p.bias)
        if p.temporal_repeat and rgb.shape[1]:
            repeats = torch.full((rgb.shape[1],), p.time_scale, device=rgb.device, dtype=torch.long)
            if self.latents_seen == 0:
                repeats[0] = 1
            rgb = rgb.repeat_interleave(repeats, dim=1)
        self.latents_seen += latents.shape[1]
        self.frames_emitted += rgb.shape[1]
        return rgb


class LatentRGBPreview:
    """Fallback previewer with :class:`PreviewDecoder`'s interface: no weights, ~free, blurry colours only."""

    kind = "latent2rgb"
    time_scale = 4

    def __init__(
        self, *, upscale: bool = True, temporal_repeat: bool = True, factors: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
    ) -> None:
        """``factors`` [16, 3] / ``bias`` [3]: see :func:`latent_to_rgb` (default: the false-colour map)."""
        self.spatial_scale = 8 if upscale else 1
        self.temporal_repeat = temporal_repeat
        self.factors = factors
        self.bias = bias

    def output_frames(self, num_latents: int) -> int:
        if not self.temporal_repeat:
            return max(0, num_latents)
        return max(0, num_latents * self.time_scale - (self.time_scale - 1))

    def stream(self) -> LatentRGBStream:
        return LatentRGBStream(self)

    def decode(self, latents: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        """Whole video at once (``chunk_size`` is accepted for interface parity and ignored: no memory to bound)."""
        return self.stream().decode(latents)


@runtime_checkable
class PreviewStream(Protocol):
    """What ``Previewer.stream()`` returns."""

    latents_seen: int
    frames_emitted: int

    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...

    def reset(self) -> None: ...


@runtime_checkable
class Previewer(Protocol):
    """Common interface of :class:`PreviewDecoder` and :class:`LatentRGBPreview`."""

    kind: str

    def stream(self) -> PreviewStream: ...

    def decode(self, latents: torch.Tensor, chunk_size: int | None = ...) -> torch.Tensor: ...

    def output_frames(self, num_latents: int) -> int: ...


def make_preview_decoder(
    path: str | Path | None = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    upscale: bool = True,
) -> PreviewDecoder | LatentRGBPreview:
    """The tiny decoder when ``path`` names an existing file, else the :func:`latent_to_rgb` fallback.

    A path that does not exist logs a warning and falls back (a default location may simply be empty); a file that
    exists but is not a valid decoder raises :class:`CheckpointError` rather than silently degrading.
    ``upscale`` applies to the fallback only (x8 nearest to pixel size; the tiny decoder always outputs pixel size).
    """
    if path is not None and str(path):
        p = Path(path)
        if p.is_file():
            return load_preview_decoder(p, device=device, dtype=dtype)
        logger.warning(
            "Preview decoder %s not found; using the latent->RGB preview. Put %s there for sharper previews.",
            p, TAEW21_FILE_HINT,
        )
    return LatentRGBPreview(upscale=upscale)
