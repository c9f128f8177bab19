"""Tiny preview decoder (TAEHV layout, streaming memory, loading) and the latent->RGB fallback."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from causal_forcing_core.errors import CheckpointError, InvalidInputError, UnsafeCheckpointError
from causal_forcing_core.preview import (
    MemBlock,
    PreviewDecoder,
    TGrow,
    TinyDecoderConfig,
    load_preview_decoder,
    save_preview_decoder,
)
from causal_forcing_core.preview_fallback import (
    WAN21_RGB_BIAS,
    WAN21_RGB_FACTORS,
    LatentRGBPreview,
    Previewer,
    fit_latent_rgb_factors,
    latent_to_rgb,
    make_preview_decoder,
)
from causal_forcing_core.video_io import frames_to_uint8

SMALL = TinyDecoderConfig(widths=(16, 12, 8, 8))


def _decoder(config: TinyDecoderConfig = SMALL, seed: int = 0) -> PreviewDecoder:
    """Random weights, with the output bias moved to mid-grey so frames are not all clamped to 0."""
    torch.manual_seed(seed)
    dec = PreviewDecoder(config)
    with torch.no_grad():
        dec.decoder[22].bias.fill_(0.5)
    return dec


def _latents(t: int, h: int = 3, w: int = 4, b: int = 1, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, t, 16, h, w, generator=torch.Generator().manual_seed(seed))


def _reference_decode(dec: PreviewDecoder, latents: torch.Tensor) -> torch.Tensor:
    """Frame-by-frame depth-first walk (one time step at a time through every layer); trims 3 frames at the end."""
    layers = list(dec.decoder)
    memory: dict[int, torch.Tensor] = {}
    out: list[torch.Tensor] = []

    def run(x: torch.Tensor, start: int) -> None:
        for i in range(start, len(layers)):
            layer = layers[i]
            if isinstance(layer, MemBlock):
                past = memory.get(i, torch.zeros_like(x))
                memory[i] = x
                x = layer(x, past)
            elif isinstance(layer, TGrow):
                grown = layer.conv(x)
                for part in grown.chunk(layer.stride, dim=1):
                    run(part, i + 1)
                return
            else:
                x = layer(x)
        out.append(x.clamp(0, 1))

    with torch.no_grad():
        for t in range(latents.shape[1]):
            run(latents[:, t], 0)
    return torch.stack(out, dim=1)[:, dec.config.frames_to_trim :]


# ------------------------------------------------------------------------------------------------ layout
def test_state_dict_matches_published_taew2_1_layout() -> None:
    sd = PreviewDecoder().state_dict()
    assert all(k.startswith("decoder.") for k in sd)
    assert sd["decoder.1.weight"].shape == (256, 16, 3, 3)
    assert sd["decoder.3.conv.0.weight"].shape == (256, 512, 3, 3)
    assert sd["decoder.7.conv.weight"].shape == (256, 256, 1, 1)  # TGrow x1
    assert sd["decoder.8.weight"].shape == (128, 256, 3, 3) and "decoder.8.bias" not in sd
    assert sd["decoder.13.conv.weight"].shape == (256, 128, 1, 1)  # TGrow x2
    assert sd["decoder.19.conv.weight"].shape == (128, 64, 1, 1)
    assert sd["decoder.22.weight"].shape == (3, 64, 3, 3) and sd["decoder.22.bias"].shape == (3,)
    memblocks = {int(k.split(".")[1]) for k in sd if ".conv.4." in k}
    assert memblocks == {3, 4, 5, 9, 10, 11, 15, 16, 17}
    assert len(sd) == 1 * 2 + 9 * 6 + 3 + 3 + 2


def test_full_size_decoder_shapes() -> None:
    dec = _decoder(TinyDecoderConfig())
    frames = dec.decode(_latents(2, 2, 3))
    assert frames.shape == (1, 5, 3, 16, 24)
    assert frames.dtype == torch.float32


# ------------------------------------------------------------------------------------------------ decoding
@pytest.mark.parametrize("t", [1, 2, 5])
def test_output_shape_and_range(t: int) -> None:
    dec = _decoder()
    frames = dec.decode(_latents(t, b=2))
    assert frames.shape == (2, 1 + 4 * (t - 1), 3, 24, 32)
    assert dec.output_frames(t) == frames.shape[1]
    assert frames.min() >= 0 and frames.max() <= 1
    assert frames.std() > 1e-3  # not everything clamped


def test_parallel_decode_matches_frame_by_frame_reference() -> None:
    dec = _decoder()
    z = _latents(4)
    torch.testing.assert_close(dec.decode(z, chunk_size=None), _reference_decode(dec, z), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunks", [(1, 1, 1, 1, 1), (1, 2, 2), (3, 2), (2, 0, 3)])
def test_streaming_equals_one_shot(chunks: tuple[int, ...]) -> None:
    dec = _decoder()
    z = _latents(sum(chunks), b=2)
    full = dec.decode(z, chunk_size=None)
    stream = dec.stream()
    parts, start = [], 0
    for n in chunks:
        part = stream.decode(z[:, start : start + n])
        assert part.shape[1] == (max(0, 4 * n - 3) if start == 0 else 4 * n)
        parts.append(part)
        start += n
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)
    assert stream.latents_seen == sum(chunks) and stream.frames_emitted == full.shape[1]
    for size in (1, 2, 3):
        torch.testing.assert_close(dec.decode(z, chunk_size=size), full, atol=1e-5, rtol=1e-5)


def test_stream_memory_matters_and_reset_clears_it() -> None:
    dec = _decoder()
    z = _latents(3)
    stream = dec.stream()
    stream.decode(z[:, :2])
    continued = stream.decode(z[:, 2:])
    stream.reset()
    fresh = stream.decode(z[:, 2:])
    assert fresh.shape[1] == 1 and continued.shape[1] == 4
    assert not torch.allclose(continued[:, -1], fresh[:, -1])  # memory changed the output
    torch.testing.assert_close(fresh, dec.decode(z[:, 2:]))


def test_stream_rejects_changed_geometry_and_bad_layout() -> None:
    dec = _decoder()
    stream = dec.stream()
    stream.decode(_latents(1))
    with pytest.raises(InvalidInputError, match="reset"):
        stream.decode(_latents(1, h=4))
    with pytest.raises(InvalidInputError, match="permute"):
        dec.decode(_latents(2).permute(0, 2, 1, 3, 4))


# ------------------------------------------------------------------------------------------------ loading
@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_save_load_round_trip(tmp_path: Path, suffix: str) -> None:
    dec = _decoder()
    path = save_preview_decoder(dec, tmp_path / f"taew_small{suffix}")
    loaded = load_preview_decoder(path)
    assert loaded.config == dec.config
    z = _latents(2)
    torch.testing.assert_close(loaded.decode(z), dec.decode(z))


def test_encoder_keys_ignored_others_rejected(tmp_path: Path) -> None:
    dec = _decoder()
    sd = dict(dec.state_dict())
    sd["encoder.0.weight"] = torch.zeros(64, 3, 3, 3)
    save_file(sd, str(tmp_path / "with_encoder.safetensors"))
    load_preview_decoder(tmp_path / "with_encoder.safetensors")
    sd["stray.weight"] = torch.zeros(1)
    save_file(sd, str(tmp_path / "stray.safetensors"))
    with pytest.raises(CheckpointError, match="stray.weight"):
        load_preview_decoder(tmp_path / "stray.safetensors")


def test_missing_and_misshaped_keys_named(tmp_path: Path) -> None:
    sd = dict(_decoder().state_dict())
    del sd["decoder.10.conv.2.weight"]
    sd["decoder.22.bias"] = torch.zeros(4)
    torch.save(sd, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError) as err:
        load_preview_decoder(tmp_path / "broken.pth")
    assert "decoder.10.conv.2.weight" in str(err.value) and "decoder.22.bias" in str(err.value)


def test_wrong_files_give_checkpoint_errors(tmp_path: Path) -> None:
    (tmp_path / "garbage.pth").write_bytes(b"not a torch file at all")
    with pytest.raises(CheckpointError, match="garbage.pth"):
        load_preview_decoder(tmp_path / "garbage.pth")
    (tmp_path / "garbage.safetensors").write_bytes(b"\x00" * 32)
    with pytest.raises(CheckpointError, match="safetensors"):
        load_preview_decoder(tmp_path / "garbage.safetensors")
    save_file({"decoder.conv1.weight": torch.zeros(384, 16, 3, 3, 3), "conv2.weight": torch.zeros(16, 16, 1, 1, 1)},
              str(tmp_path / "wan_vae.safetensors"))
    with pytest.raises(CheckpointError, match="Wan 2.1 VAE"):
        load_preview_decoder(tmp_path / "wan_vae.safetensors")
    save_file({"blocks.0.self_attn.q.weight": torch.zeros(4, 4)}, str(tmp_path / "dit.safetensors"))
    with pytest.raises(CheckpointError, match="no 'decoder"):
        load_preview_decoder(tmp_path / "dit.safetensors")
    sd = dict(PreviewDecoder(TinyDecoderConfig(latent_channels=48, widths=(16, 12, 8, 8))).state_dict())
    save_file(sd, str(tmp_path / "taew2_2.safetensors"))
    with pytest.raises(CheckpointError, match="48-channel"):
        load_preview_decoder(tmp_path / "taew2_2.safetensors")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_preview_decoder(tmp_path / "absent.pth")


class _Evil:
    def __reduce__(self):  # noqa: ANN204 - pickle protocol
        return (print, ("this must never run",))


def test_pickle_with_code_is_refused(tmp_path: Path) -> None:
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"decoder.1.weight": _Evil()}, f, protocol=2)
    torch.save({"decoder.1.weight": _Evil()}, tmp_path / "evil_zip.pth")
    for name in ("evil_zip.pth", "evil.pth"):
        with pytest.raises(UnsafeCheckpointError, match=r"wants to run code .*global (builtins\.)?print\b"):
            load_preview_decoder(tmp_path / name)


# ------------------------------------------------------------------------------------------------ fallback
def test_latent_to_rgb_shapes_and_range() -> None:
    z = _latents(3, b=2) * 3
    rgb = latent_to_rgb(z)
    assert rgb.shape == (2, 3, 3, 3, 4) and rgb.min() >= 0 and rgb.max() <= 1
    up = latent_to_rgb(z, upscale=True)
    assert up.shape == (2, 3, 3, 24, 32)
    torch.testing.assert_close(up[..., ::8, ::8], rgb)
    zero = latent_to_rgb(torch.zeros(1, 1, 16, 1, 1)).flatten()
    torch.testing.assert_close(zero, WAN21_RGB_BIAS)
    assert len(WAN21_RGB_FACTORS) == 16 and all(len(r) == 3 for r in WAN21_RGB_FACTORS)


def test_fit_latent_rgb_factors_recovers_a_linear_map() -> None:
    g = torch.Generator().manual_seed(0)
    factors, bias = torch.randn(16, 3, generator=g) * 0.1, torch.tensor([0.4, 0.5, 0.3])
    latents = torch.randn(500, 16, generator=g)
    fit_f, fit_b = fit_latent_rgb_factors(latents, latents @ factors + bias)
    torch.testing.assert_close(fit_f, factors, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fit_b, bias, atol=1e-4, rtol=1e-4)


def test_fallback_stream_matches_frame_counts() -> None:
    preview = LatentRGBPreview()
    z = _latents(3)
    stream = preview.stream()
    a, b = stream.decode(z[:, :1]), stream.decode(z[:, 1:])
    assert a.shape == (1, 1, 3, 24, 32) and b.shape == (1, 8, 3, 24, 32)
    assert preview.decode(z).shape[1] == preview.output_frames(3) == 9
    assert LatentRGBPreview(upscale=False).decode(z).shape[-2:] == (3, 4)


def test_make_preview_decoder_picks_decoder_or_fallback(tmp_path: Path) -> None:
    fallback = make_preview_decoder(None)
    assert isinstance(fallback, LatentRGBPreview) and isinstance(fallback, Previewer)
    assert isinstance(make_preview_decoder(tmp_path / "missing.safetensors"), LatentRGBPreview)
    path = save_preview_decoder(_decoder(), tmp_path / "taew.safetensors")
    tiny = make_preview_decoder(path)
    assert isinstance(tiny, PreviewDecoder) and isinstance(tiny, Previewer)
    (tmp_path / "bad.safetensors").write_bytes(b"junk")
    with pytest.raises(CheckpointError):
        make_preview_decoder(tmp_path / "bad.safetensors")
    z = _latents(2)
    for previewer in (fallback, tiny):
        frames = previewer.stream().decode(z)
        assert frames.shape == (1, 5, 3, 24, 32)
        pixels = frames_to_uint8(frames, value_range=(0, 1))
        assert pixels.shape == (5, 24, 32, 3) and pixels.dtype == np.uint8
