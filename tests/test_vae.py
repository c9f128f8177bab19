"""Wan 2.1 VAE: parity with the reference fixtures, streaming == full decode, tiling, loading, bad input."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from causal_forcing_core.errors import CheckpointError, InvalidInputError, UnsafeCheckpointError
from causal_forcing_core.vae import VAEConfig, WanVAE, load_vae, read_vae_weights
from ci_env import require_parity_dir
from parity_cases import fixture_dir

FOLDER = fixture_dir()
ATOL = 1e-4


def _vae_cases() -> list:
    if not FOLDER.is_dir():
        return []
    return [p for p in sorted(FOLDER.glob("*.json")) if "vae_config" in json.loads(p.read_text())]


def tiny_vae(seed: int = 0) -> WanVAE:
    torch.manual_seed(seed)
    vae = WanVAE(VAEConfig(dim=2))
    with torch.no_grad():
        for p in vae.parameters():
            p.normal_(0, 0.3) if p.dim() > 1 else p.normal_(1.0, 0.1)
    return vae.eval()


def test_vae_fixture_cases_exist() -> None:
    require_parity_dir(FOLDER)
    assert _vae_cases(), f"{FOLDER} has no VAE case"


@pytest.mark.parametrize("case", _vae_cases(), ids=lambda p: p.stem)
def test_vae_parity(case) -> None:
    meta = json.loads(case.read_text())
    t = load_file(str(case.with_suffix(".safetensors")))
    dim = meta["vae_config"]["dim"]
    weights = [p for p in sorted(FOLDER.glob("vae_*.safetensors"))
               if "encoder.conv1.weight" in load_file(str(p)) and load_file(str(p))["encoder.conv1.weight"].shape[0] == dim]
    assert weights, f"no vae_*.safetensors of dim {dim} in {FOLDER}"
    vae = load_vae(weights[0])
    torch.testing.assert_close(vae.latent_mean, t["mean"], atol=ATOL, rtol=0)
    torch.testing.assert_close(vae.latent_std, t["std"], atol=ATOL, rtol=0)
    torch.testing.assert_close(vae.encode(t["video"]), t["latent"], atol=ATOL, rtol=ATOL)
    torch.testing.assert_close(vae.encode(t["image"]), t["image_latent"], atol=ATOL, rtol=ATOL)
    torch.testing.assert_close(vae.decode(t["latent"]), t["decoded"], atol=ATOL, rtol=ATOL)
    stream, parts, start = vae.stream_decoder(), [], 0
    for n in meta["stream_chunks_latent_frames"]:
        parts.append(stream.decode(t["latent"][:, start : start + n]))
        start += n
    torch.testing.assert_close(torch.cat(parts, dim=1), t["decoded_stream"], atol=ATOL, rtol=ATOL)


@pytest.mark.parametrize("chunks", [[1, 1, 1], [1, 2], [3], [2, 1]])
def test_streaming_decode_equals_full_decode(chunks) -> None:
    vae = tiny_vae()
    latents = torch.randn(1, 3, 16, 3, 4)
    full = vae.decode(latents)
    assert full.shape == (1, 9, 3, 24, 32)
    stream, parts, start = vae.stream_decoder(), [], 0
    for n in chunks:
        part = stream.decode(latents[:, start : start + n])
        assert part.shape[1] == (4 * n - 3 if start == 0 else 4 * n)
        parts.append(part)
        start += n
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)


def test_tiled_decode_is_close_to_full_decode() -> None:
    vae = tiny_vae()
    latents = torch.randn(1, 2, 16, 6, 8)
    tiled = vae.decode(latents, tile_latent=4, overlap=2)
    full = vae.decode(latents)
    assert tiled.shape == full.shape
    assert (tiled - full).abs().mean() < 0.1
    with pytest.raises(InvalidInputError, match="overlap"):
        vae.decode(latents, tile_latent=2, overlap=2)


def test_encode_rejects_sizes_the_vae_cannot_make() -> None:
    vae = tiny_vae()
    with pytest.raises(InvalidInputError, match=r"multiples of 8 pixels: height 20 is not a multiple of 8 \(try 16"):
        vae.encode(torch.zeros(1, 3, 1, 20, 24))
    with pytest.raises(InvalidInputError, match="has 6 frames.*1 \\+ 4k frames: use 5 or 9"):
        vae.encode(torch.zeros(1, 3, 6, 16, 16))


def test_save_and_load_round_trip_and_prefixes(tmp_path) -> None:
    vae = tiny_vae()
    sd = {k: v.contiguous() for k, v in vae.state_dict().items()}
    save_file(sd, str(tmp_path / "wan_2.1_vae.safetensors"))
    torch.save(sd, tmp_path / "Wan2.1_VAE.pth")
    save_file({f"first_stage_model.{k}": v for k, v in sd.items()}, str(tmp_path / "prefixed.safetensors"))
    latents = torch.randn(1, 2, 16, 2, 2)
    expected = vae.decode(latents)
    for name in ("wan_2.1_vae.safetensors", "Wan2.1_VAE.pth", "prefixed.safetensors"):
        torch.testing.assert_close(load_vae(tmp_path / name).decode(latents), expected)
    half = load_vae(tmp_path / "Wan2.1_VAE.pth", dtype=torch.bfloat16)
    assert half.decode(latents).dtype == torch.bfloat16


def test_wrong_files_are_refused(tmp_path) -> None:
    save_file({"patch_embedding.weight": torch.zeros(4, 16, 1, 2, 2)}, str(tmp_path / "dit.safetensors"))
    with pytest.raises(CheckpointError, match="not a Wan 2.1 VAE.*looks like a DiT"):
        load_vae(tmp_path / "dit.safetensors")
    sd = {k: v for k, v in tiny_vae().state_dict().items()}
    del sd["decoder.head.2.bias"]
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "partial.safetensors"))
    with pytest.raises(CheckpointError, match="1 missing: decoder.head.2.bias"):
        load_vae(tmp_path / "partial.safetensors")
    sd = {k: v.contiguous() for k, v in tiny_vae().state_dict().items()}
    sd["decoder.head.2.bias"] = torch.zeros(5)
    save_file(sd, str(tmp_path / "misshaped.safetensors"))
    with pytest.raises(CheckpointError, match=r"^VAE keys of misshaped\.safetensors do not match the Wan 2\.1 VAE "
                                              r"\(dim 2\): 1 wrong shape: decoder\.head\.2\.bias: file \[5\] vs model "
                                              r"\[3\]\.$"):
        load_vae(tmp_path / "misshaped.safetensors")
    with pytest.raises(CheckpointError, match="does not exist"):
        read_vae_weights(tmp_path / "absent.pth")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_code_running_pickle_is_refused(tmp_path) -> None:
    torch.save({"encoder.conv1.weight": _Evil()}, tmp_path / "evil.pth")
    with pytest.raises(UnsafeCheckpointError, match="wants to run code"):
        load_vae(tmp_path / "evil.pth")


def test_nan_or_inf_weights_are_refused_by_name(tmp_path) -> None:
    sd = {k: v.contiguous() for k, v in tiny_vae().state_dict().items()}
    sd["decoder.head.2.bias"] = torch.tensor([0.0, float("nan"), 1.0])
    sd["encoder.conv1.bias"] = torch.full_like(sd["encoder.conv1.bias"], float("inf"))
    save_file(sd, str(tmp_path / "nan.safetensors"))
    with pytest.raises(CheckpointError, match=r"^The VAE nan\.safetensors has NaN or infinite values in 2 tensors: "
                                              r"decoder\.head\.2\.bias, encoder\.conv1\.bias\. The file is corrupt"):
        load_vae(tmp_path / "nan.safetensors")
