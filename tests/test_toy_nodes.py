"""The embedded toy model in ComfyUI: the loaders list it after the user's files (only when its bundle is there),
load it, the toy text encoder encodes toy captions, and the toy example workflows run end to end as they are (no
tiny-model substitution) under the in-process executor, with the fixture bundle."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest
import torch

from causal_forcing_core.geometry import WAN21
from comfy_sim import MiniComfy, call, combo_choices
from test_workflows import TOY_NAMES as TOY_WORKFLOWS
from test_workflows import workflow_prompt


@pytest.fixture
def entries(pack: ModuleType) -> ModuleType:
    return importlib.import_module(f"{pack.__name__}.nodes.toy_entries")


@pytest.fixture
def user_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A model folder with one user file per loader and a tokenizer folder."""
    root = tmp_path / "models"
    for folder, name in (("diffusion_models", "mine.safetensors"), ("text_encoders", "umt5.safetensors"),
                         ("vae", "wan.safetensors")):
        (root / folder).mkdir(parents=True)
        (root / folder / name).write_bytes(b"")
    (root / "text_encoders" / "google" / "umt5-xxl").mkdir(parents=True)
    (root / "text_encoders" / "google" / "umt5-xxl" / "tokenizer.json").write_text("{}")
    monkeypatch.setenv("CF_MODELS_DIR", str(root))
    return root


def _combos(pack: ModuleType) -> dict[str, list[str]]:
    nodes = pack.NODE_CLASSES
    text = nodes["CausalForcingTextEncoderLoader"].INPUT_TYPES()["required"]
    return {
        "model": combo_choices(nodes["CausalForcingModelLoader"].INPUT_TYPES()["required"]["model_name"]),
        "text_encoder": combo_choices(text["text_encoder_name"]),
        "tokenizer": combo_choices(text["tokenizer"]),
        "vae": combo_choices(nodes["CausalForcingVAELoader"].INPUT_TYPES()["required"]["vae_name"]),
    }


def test_loaders_list_the_embedded_entries_after_the_users_files(pack, entries, user_models, toy_bundle) -> None:
    combos = _combos(pack)
    assert combos == {
        "model": ["mine.safetensors", "[embedded toy] cf_toy_chunkwise.safetensors"],
        "text_encoder": ["umt5.safetensors", "[embedded toy] cf_toy_umt5.safetensors"],
        "tokenizer": ["google/umt5-xxl", "[embedded toy] cf_toy_tokenizer"],
        "vae": ["wan.safetensors", "[embedded toy] cf_toy_vae.safetensors"],
    }
    assert [entries.MODEL_ENTRY, entries.TEXT_ENCODER_ENTRY, entries.TOKENIZER_ENTRY, entries.VAE_ENTRY] == [
        c[-1] for c in combos.values()]


def test_no_embedded_entries_without_a_bundle(pack, user_models, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CAUSAL_FORCING_TOY_BUNDLE", str(tmp_path / "empty"))
    combos = _combos(pack)
    assert not any(c.startswith("[embedded toy]") for choices in combos.values() for c in choices), combos
    loader = pack.NODE_CLASSES["CausalForcingModelLoader"]
    errors = importlib.import_module(f"{pack.__name__}.causal_forcing_core.errors")
    with pytest.raises(errors.CheckpointError, match="embedded toy model.*incomplete"):
        call(loader, "[embedded toy] cf_toy_chunkwise.safetensors", "auto", "auto", "none")


def test_the_embedded_entries_load(pack, entries, user_models, toy_bundle) -> None:
    nodes = pack.NODE_CLASSES
    (model,) = call(nodes["CausalForcingModelLoader"], entries.MODEL_ENTRY, "auto", "auto", "auto").result
    assert model.sampler.name == "chunkwise-4step" and model.name == "cf_toy_chunkwise"
    assert model.config.text_len == 16 and model.config.text_dim == 64
    (cf_vae,) = call(nodes["CausalForcingVAELoader"], entries.VAE_ENTRY, "auto").result
    assert cf_vae.vae.config.z_dim == 16 and cf_vae.vae.config.dim == 8


def test_the_toy_text_encoder_encodes_a_toy_prompt(pack, entries, user_models, toy_bundle) -> None:
    nodes = pack.NODE_CLASSES
    # the embedded encoder pairs with the embedded tokenizer whatever the tokenizer widget says
    (encoder,) = call(nodes["CausalForcingTextEncoderLoader"], entries.TEXT_ENCODER_ENTRY, "google/umt5-xxl",
                                                                "auto", "default").result
    (cond,) = call(nodes["CausalForcingTextEncode"], encoder, "a red square moves left quickly").result
    embeds = cond[0][0]
    assert embeds.shape == (1, 16, 64) and cond[0][1] == {"pooled_output": None}
    lengths = embeds.abs().sum(-1).gt(0).sum().item()
    assert lengths == 7  # six words and the end-of-sequence token; the rest is zero padding
    (other,) = call(nodes["CausalForcingTextEncode"], encoder, "a blue circle moves up slowly").result
    assert not torch.allclose(embeds, other[0][0])
    with pytest.raises(Exception, match="purple.*square, circle, triangle"):  # the pack's own InvalidInputError
        call(nodes["CausalForcingTextEncode"], encoder, "a purple square moves left")


def test_the_embedded_tokenizer_fits_only_the_embedded_encoder(pack, entries, user_models, toy_bundle) -> None:
    loader = pack.NODE_CLASSES["CausalForcingTextEncoderLoader"]
    with pytest.raises(ValueError, match="only fits the embedded toy text encoder"):
        call(loader, "umt5.safetensors", entries.TOKENIZER_ENTRY, "auto", "default")


# ------------------------------------------------------------------------------------------------- workflows
class CreateVideo:
    """Stands in for ComfyUI's Create Video: frames + fps."""

    FUNCTION = "create"

    def create(self, images: torch.Tensor, fps: float, audio=None) -> tuple:
        return (SimpleNamespace(images=images, fps=fps),)


class SaveVideo:
    """Stands in for ComfyUI's Save Video: writes an mp4 with the core's writer into ``SaveVideo.folder``."""

    FUNCTION = "save"
    folder: Path = Path(".")

    def save(self, video, filename_prefix: str, format: str, codec: str) -> dict:
        from causal_forcing_core.video_io import write_video

        info = write_video(video.images.numpy(), self.folder / f"{filename_prefix}.mp4", fps=video.fps)
        return {"ui": {"videos": [{"filename": info.path.name, "frames": info.frames}]}, "result": ()}


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread (and many times slower on several when the CPU is busy)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _expected_frames(prompt: dict) -> int:
    chunks = 0
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] == "CausalForcingGenerate":
            chunks += inputs["length"]
        elif node["class_type"] == "CausalForcingGenerateSchedule":
            assert inputs["unit"] == "seconds"
            chunks += round(inputs["length"] / WAN21.chunk_seconds(3))
        elif node["class_type"] == "CausalForcingLive":
            chunks += WAN21.seconds_to_chunks(inputs["max_seconds"], 3)
    return WAN21.pixel_frames(chunks * 3)


#: a live run lasts as long as its viewer wants; the test lets the toy live workflow run 3 s of video, unpaced
LIVE_TEST_INPUTS = {"max_seconds": 3, "realtime": False}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if "long_video" in n else n for n in TOY_WORKFLOWS]
)
def test_toy_workflow_runs_as_it_is(name: str, pack, user_models, toy_bundle, tmp_path: Path, monkeypatch,
                                    one_thread) -> None:
    rt = importlib.import_module(f"{pack.__name__}.nodes.comfy_runtime")
    monkeypatch.setattr(rt, "temp_directory", lambda: tmp_path / "temp")
    monkeypatch.setattr(rt, "output_directory", lambda: tmp_path / "out")  # the Live take, Causal Forcing Save Video
    monkeypatch.setattr(SaveVideo, "folder", tmp_path / "out")
    prompt = workflow_prompt(name, pack)
    for node in prompt.values():
        if node["class_type"] == "CausalForcingLive":
            node["inputs"].update(LIVE_TEST_INPUTS)
    comfy = MiniComfy({**pack.NODE_CLASSES, "CreateVideo": CreateVideo, "SaveVideo": SaveVideo})
    save = next(k for k, v in prompt.items() if v["class_type"] in ("SaveVideo", "CausalForcingSaveVideo"))
    out = comfy.run(prompt, save)
    if prompt[save]["class_type"] == "SaveVideo":
        saved = tmp_path / "out" / f"{prompt[save]['inputs']['filename_prefix']}.mp4"
    else:  # the pack's own Save Video numbers its files and returns the path
        saved = Path(out[save][0])
        assert saved.parent == tmp_path / "out" / "causal_forcing" and saved.name.endswith("_00001.mp4")
    from causal_forcing_core.video_io import read_video_frames

    frames = read_video_frames(saved)
    assert frames.shape == (_expected_frames(prompt), 64, 64, 3)
    assert np.isfinite(frames).all()
