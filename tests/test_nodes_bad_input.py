"""Layer 3: bad input gives a clear error naming what to do, and never leaves a stream half-written."""

from __future__ import annotations

import shutil
from types import ModuleType, SimpleNamespace

import pytest
import torch

from comfy_sim import call
from test_nodes_stream import PROMPTS, _image, env, models_dir  # noqa: F401 - fixtures


@pytest.fixture
def made(env):  # noqa: F811
    n = env.nodes
    model, = call(n["CausalForcingModelLoader"], "cf_tiny_chunkwise.safetensors", "auto", "auto", "none").result
    te, = call(n["CausalForcingTextEncoderLoader"], "cf_tiny_umt5.pth", "cf_tiny_umt5_tokenizer", "auto", "default").result
    cond, = call(n["CausalForcingTextEncode"], te, PROMPTS[0]).result
    other, = call(n["CausalForcingTextEncode"], te, PROMPTS[1]).result
    stream, = call(n["CausalForcingStart"], model, cond, 64, 64, 5, 0, 0).result
    return SimpleNamespace(n=n, model=model, te=te, cond=cond, other=other, stream=stream, env=env)


def _generate(made, stream, chunks=2, positive=None):
    return call(made.n["CausalForcingGenerate"], stream, chunks, "chunks", True, positive=positive).result


def test_conditioning_from_another_text_encoder(made) -> None:
    clip_l = [[torch.randn(1, 77, 768), {"pooled_output": torch.randn(1, 768)}]]
    with pytest.raises(Exception, match=r"768 wide but this model reads 32-wide umT5.*Load CLIP type 'wan'"):
        call(made.n["CausalForcingStart"], made.model, clip_l, 64, 64, 5, 0, 0)
    with pytest.raises(Exception, match="768 wide"):
        _generate(made, made.stream, positive=clip_l)
    with pytest.raises(Exception, match=r"CONDITIONING does not fit.*must be a tensor \[B, tokens, 32\], got str"):
        call(made.n["CausalForcingStart"], made.model, "a cat", 64, 64, 5, 0, 0)


def test_vae_that_is_not_wan21(made) -> None:
    sd_vae = SimpleNamespace(first_stage_model=torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), patcher=None)
    framewise, = call(made.n["CausalForcingModelLoader"], "cf_tiny_framewise.safetensors", "auto", "auto", "none").result
    with pytest.raises(Exception, match="not a Wan 2.1 VAE.*wan_2.1_vae.safetensors"):
        call(made.n["CausalForcingStart"], framewise, made.cond, 64, 64, 5, 0, 0, start_image=_image(), vae=sd_vae)
    latent = _generate(made, made.stream)[1]
    with pytest.raises(Exception, match="not a Wan 2.1 VAE"):
        call(made.n["CausalForcingDecode"], 3, samples=latent, vae=sd_vae)
    with pytest.raises(Exception, match="Connect a VAE"):
        call(made.n["CausalForcingDecode"], 3, samples=latent)
    with pytest.raises(Exception, match="Connect a stream"):
        call(made.n["CausalForcingDecode"], 3, vae=sd_vae)
    with pytest.raises(Exception, match="image model's"):
        call(made.n["CausalForcingDecode"], 3, samples={"samples": torch.zeros(1, 4, 8, 8)}, vae=sd_vae)


def test_either_or_inputs_take_exactly_one(made) -> None:
    vae, = call(made.n["CausalForcingVAELoader"], "cf_tiny_vae.safetensors", "auto").result
    native = SimpleNamespace(first_stage_model=vae.vae, patcher=None)
    latent = _generate(made, made.stream)[1]
    with pytest.raises(Exception, match="Both vae and cf_vae are connected; connect only one"):
        call(made.n["CausalForcingDecode"], 3, samples=latent, vae=native, cf_vae=vae)
    with pytest.raises(Exception, match="stream .* or a LATENT to decode, not both"):
        call(made.n["CausalForcingDecode"], 3, stream=made.stream, samples=latent, cf_vae=vae)
    with pytest.raises(Exception, match="Both a CLIP and a Causal Forcing text encoder are connected"):
        call(made.n["CausalForcingPromptSchedule"], "0: a dog", "chunks", clip=object(), text_encoder=made.te)
    assert call(made.n["CausalForcingDecode"], 3, samples=latent, cf_vae=vae).result[0].shape[0] == 1 + 4 * 5


def test_sizes_not_multiples_of_16(made) -> None:
    with pytest.raises(Exception, match=r"width 72 is not a multiple of 16 \(try 64 or 80\)"):
        call(made.n["CausalForcingStart"], made.model, made.cond, 72, 64, 5, 0, 0)


def test_image_to_video_needs_a_framewise_model_and_a_vae(made) -> None:
    vae, = call(made.n["CausalForcingVAELoader"], "cf_tiny_vae.safetensors", "auto").result
    with pytest.raises(Exception, match="Image-to-video needs a frame-wise student"):
        call(made.n["CausalForcingStart"], made.model, made.cond, 64, 64, 5, 0, 0, start_image=_image(), cf_vae=vae)
    framewise, = call(made.n["CausalForcingModelLoader"], "cf_tiny_framewise.safetensors", "auto", "auto", "none").result
    with pytest.raises(Exception, match="Connect a VAE to encode the start image"):
        call(made.n["CausalForcingStart"], framewise, made.cond, 64, 64, 5, 0, 0, start_image=_image())
    latent = {"samples": torch.zeros(1, 16, 1, 8, 8)}
    with pytest.raises(Exception, match="not both"):
        call(made.n["CausalForcingStart"], framewise, made.cond, 64, 64, 5, 0, 0, start_image=_image(),
                                             cf_vae=vae, continue_latent=latent)


def test_too_many_chunks_without_a_window(made) -> None:
    stream, _ = _generate(made, made.stream, chunks=6)
    with pytest.raises(Exception, match=r"at most 21 latent frames without a window \(1 more chunk\(s\) fit\).*"
                                        r"set window_frames"):
        _generate(made, stream, chunks=2)
    with pytest.raises(Exception, match="sink_frames needs a window"):
        call(made.n["CausalForcingStart"], made.model, made.cond, 64, 64, 5, 0, 3)
    windowed, = call(made.n["CausalForcingStart"], made.model, made.cond, 64, 64, 5, 6, 3).result
    long, latent = _generate(made, windowed, chunks=12)
    assert latent["samples"].shape[2] == 36


def test_a_file_that_is_not_a_dit(made, models_dir, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    root = tmp_path / "models"
    shutil.copytree(models_dir, root)
    shutil.copy(root / "vae" / "cf_tiny_vae.safetensors", root / "diffusion_models" / "some_vae.safetensors")
    (root / "diffusion_models" / "broken.safetensors").write_bytes(b"\x00" * 64)
    monkeypatch.setenv("CF_MODELS_DIR", str(root))
    loader = made.n["CausalForcingModelLoader"]
    with pytest.raises(Exception, match="not a Wan DiT.*It looks like a VAE|not a Wan DiT"):
        call(loader, "some_vae.safetensors", "auto", "auto", "none")
    with pytest.raises(Exception, match="broken.safetensors"):
        call(loader, "broken.safetensors", "auto", "auto", "none")
    with pytest.raises(Exception, match="neither models/diffusion_models nor models/checkpoints"):
        call(loader, "missing.safetensors", "auto", "auto", "none")
    with pytest.raises(Exception, match="Unknown sampler preset"):
        call(loader, "cf_tiny_chunkwise.safetensors", "eightstep", "auto", "none")


def test_empty_prompts_and_missing_encoders(made) -> None:
    with pytest.raises(Exception, match="prompt is empty"):
        call(made.n["CausalForcingTextEncode"], made.te, "   ")
    with pytest.raises(Exception, match="2001 characters; keep it under 2000"):  # the core's one prompt limit
        call(made.n["CausalForcingTextEncode"], made.te, "x" * 2001)
    with pytest.raises(Exception, match="Connect a CLIP"):
        call(made.n["CausalForcingPromptSchedule"], "0: a dog", "chunks")
    with pytest.raises(Exception, match="line 1"):
        call(made.n["CausalForcingPromptSchedule"], "zero: a dog\n1: a cat", "chunks", text_encoder=made.te)


def test_a_failed_node_leaves_the_stream_intact(made) -> None:
    expected = _generate(made, made.stream, chunks=3, positive=made.other)[1]["samples"]
    bad = [[torch.randn(1, 16, 7), {}]]
    for attempt in (lambda: _generate(made, made.stream, positive=bad), lambda: _generate(made, made.stream, 9)):
        with pytest.raises(Exception):
            attempt()
        assert torch.equal(_generate(made, made.stream, chunks=3, positive=made.other)[1]["samples"], expected)


def test_release_files_without_metadata_get_a_variant_from_their_name(pack: ModuleType) -> None:
    import importlib

    guess = importlib.import_module(f"{pack.__name__}.nodes.model_nodes").guess_variant
    assert guess("framewise/causal_forcing.pt") == "framewise-4step"
    assert guess("causal-forcing++/framewise-2step.pt") == "framewise-2step"
    assert guess("Causal_Forcing_Framewise_1Step.safetensors") == "framewise-1step"
    assert guess("chunkwise/longvideo.pt") == "rolling-4step"  # the long-video student was trained for it
    assert guess("causal_forcing_long_video.safetensors") == "rolling-4step"
    assert guess("self_forcing_dmd.pt") == "chunkwise-4step"


def test_a_variant_of_the_other_kind_is_refused_when_the_model_loads(env) -> None:  # noqa: F811
    loader = env.nodes["CausalForcingModelLoader"]
    with pytest.raises(Exception, match=r"variant rolling-4step is for chunk-wise students \(3-frame chunks\), but "
                                        r"cf_tiny_framewise.safetensors is a frame-wise model \(framewise-4step"):
        call(loader, "cf_tiny_framewise.safetensors", "rolling-4step", "auto", "auto")
    with pytest.raises(Exception, match="use variant chunkwise-4step or rolling-4step"):
        call(loader, "cf_tiny_chunkwise.safetensors", "framewise-2step", "auto", "auto")
    (model,) = call(loader, "cf_tiny_chunkwise.safetensors", "rolling-4step", "auto", "auto").result  # same chunk size: fine
    assert model.sampler.rolling
