"""Layer 3: a native MODEL as a CF_MODEL (Causal Forcing Native Model) and LoRAs on a CF_MODEL (Causal Forcing
LoRA), under ComfyUI-like caching, on the Wan-shaped tiny models of ``scripts/make_tiny_models.py``.

ComfyUI is not installed here, so the native MODEL is a stand-in with the parts of ComfyUI's ModelPatcher the
adapter reads (``model.model_config``, ``get_model_object``, ``load_device``) around a DiT with Wan's layer
names. The same path runs on ComfyUI's real UNETLoader / LoraLoaderModelOnly in the opt-in real-ComfyUI tests
(``tests/test_comfyui_native.py``)."""

from __future__ import annotations

import copy
import importlib
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import torch

from causal_forcing_core.checkpoints import load_dit
from causal_forcing_core.config import WAN_14B
from causal_forcing_core.dit import CausalWanModel
from comfy_sim import MiniComfy, call

STUDENT = "cf_tiny_wan_chunkwise.safetensors"
LORA = "cf_tiny_wan_lora.safetensors"
PROMPTS = ("a red square moves left", "a blue circle moves up")


class WAN21_T2V:  # noqa: N801 - the name of ComfyUI's model config class is what the adapter checks
    pass


class WAN22_T2V(WAN21_T2V):  # noqa: N801
    pass


class SDXL:
    pass


class StandInPatcher:
    """What the adapter reads of a ComfyUI ModelPatcher."""

    def __init__(self, diffusion_model: torch.nn.Module, config: type = WAN21_T2V) -> None:
        self.model = SimpleNamespace(diffusion_model=diffusion_model, model_config=config(), manual_cast_dtype=None,
                                     get_dtype=lambda: torch.float32)
        self.load_device = torch.device("cpu")
        self.model.current_weight_patches_uuid = "this MODEL's patches"

    def get_model_object(self, name: str):
        return getattr(self.model, name)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from scripts.make_tiny_models import write_tiny_models

    root = tmp_path_factory.mktemp("models")
    write_tiny_models(root)
    return root


@pytest.fixture
def env(models_dir: Path, monkeypatch: pytest.MonkeyPatch, pack: ModuleType):
    monkeypatch.setenv("CF_MODELS_DIR", str(models_dir))
    model_nodes = importlib.import_module(f"{pack.__name__}.nodes.model_nodes")

    class UNETLoader:  # the native loader, as far as the graph goes: a file in, a MODEL out
        FUNCTION = "load_unet"

        def load_unet(self, unet_name: str, weight_dtype: str = "default"):
            return (StandInPatcher(load_dit(models_dir / "diffusion_models" / unet_name).model),)

    nodes = {**pack.NODE_CLASSES, "UNETLoader": UNETLoader}
    errors = importlib.import_module(f"{pack.__name__}.causal_forcing_core.errors")  # the pack's own classes
    return SimpleNamespace(nodes=nodes, model_nodes=model_nodes, root=models_dir, errors=errors)


def graph(model: dict, loras: tuple[float, ...] = (), chunks: tuple[int, ...] = (2, 1)) -> dict:
    """model -> [LoRA]* -> Start -> Generate -> Generate (second prompt), in API format; ``model`` is node "1"."""
    p = {
        "1": model,
        "2": {"class_type": "CausalForcingTextEncoderLoader", "inputs": {
            "text_encoder_name": "cf_tiny_umt5_wide.safetensors", "tokenizer": "cf_tiny_umt5_tokenizer",
            "dtype": "auto", "device": "default"}},
        "10": {"class_type": "CausalForcingTextEncode", "inputs": {"text_encoder": ["2", 0], "text": PROMPTS[0]}},
        "11": {"class_type": "CausalForcingTextEncode", "inputs": {"text_encoder": ["2", 0], "text": PROMPTS[1]}},
    }
    source = "1"
    for i, strength in enumerate(loras):
        p[f"2{i}"] = {"class_type": "CausalForcingLoRA", "inputs": {
            "model": [source, 0], "lora_name": LORA, "strength": strength, "ignore_unmatched": False}}
        source = f"2{i}"
    p["3"] = {"class_type": "CausalForcingStart", "inputs": {
        "model": [source, 0], "positive": ["10", 0], "width": 64, "height": 64, "seed": 5, "window_frames": 0,
        "sink_frames": 0}}
    p["4"] = {"class_type": "CausalForcingGenerate", "inputs": {
        "stream": ["3", 0], "length": chunks[0], "unit": "chunks", "recache": True}}
    p["5"] = {"class_type": "CausalForcingGenerate", "inputs": {
        "stream": ["4", 0], "length": chunks[1], "unit": "chunks", "recache": True, "positive": ["11", 0]}}
    return p


OWN = {"class_type": "CausalForcingModelLoader", "inputs": {
    "model_name": STUDENT, "variant": "auto", "weight_dtype": "auto", "preview": "none"}}
NATIVE_LOADER = {"class_type": "UNETLoader", "inputs": {"unet_name": STUDENT, "weight_dtype": "default"}}


def native(prompt: dict) -> dict:
    """``prompt`` with node "1" the native loader and "1n" the adapter in its place."""
    p = {**prompt, "1n": {"class_type": "CausalForcingNativeModel", "inputs": {
        "model": ["1", 0], "variant": "chunkwise-4step", "preview": "none"}}, "1": NATIVE_LOADER}
    for node in p.values():
        if node["inputs"].get("model") == ["1", 0] and node["class_type"] != "CausalForcingNativeModel":
            node["inputs"] = {**node["inputs"], "model": ["1n", 0]}
    return p


def video(comfy: MiniComfy, prompt: dict) -> torch.Tensor:
    return comfy.run(prompt, "5")["5"][1]["samples"]


def test_a_native_model_makes_our_loaders_video(env) -> None:
    ours = video(MiniComfy(env.nodes), graph(OWN))
    theirs = video(MiniComfy(env.nodes), native(graph(OWN)))
    assert torch.equal(theirs, ours) and ours.abs().mean() > 0.1


def test_the_native_adapter_borrows_the_models_layers(env) -> None:
    patcher = StandInPatcher(load_dit(env.root / "diffusion_models" / STUDENT).model)
    model = env.model_nodes.adapt_native_model(patcher, "auto", "none", "framewise/causal_forcing_2step.safetensors")
    source = patcher.model.diffusion_model
    assert model.native and model.patcher is patcher and model.sampler.name == "framewise-2step"
    assert model.dit.blocks[1].ffn[0] is source.blocks[1].ffn[0]
    assert {id(p) for p in model.dit.parameters()} <= {id(p) for p in source.parameters()}
    assert model.dit.patch_dtype == torch.float32 and model.name == "causal_forcing_2step"


def test_the_loaded_file_is_found_upstream_through_lora_loaders(env) -> None:
    model_nodes = env.model_nodes
    prompt = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "framewise/cf_2step.safetensors"}},
        "2": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["1", 0], "lora_name": "x", "strength_model": 1}},
        "3": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["2", 0], "lora_name": "y", "strength_model": 1}},
        "4": {"class_type": "CausalForcingNativeModel", "inputs": {"model": ["3", 0]}},
        "5": {"class_type": "CausalForcingNativeModel", "inputs": {"model": ["6", 0]}},
        "6": {"class_type": "ModelMergeSimple", "inputs": {"model1": ["1", 0]}},
    }
    assert model_nodes.upstream_model_file(prompt, "4") == "framewise/cf_2step.safetensors"
    assert model_nodes.upstream_model_file(prompt, "5") is None  # no single MODEL input to follow
    assert model_nodes.upstream_model_file(None, "4") is None


def test_models_that_are_not_a_causal_wan21_t2v_dit_are_refused_by_name(env) -> None:
    adapt = env.model_nodes.adapt_native_model
    dit = load_dit(env.root / "diffusion_models" / STUDENT).model
    with pytest.raises(env.errors.InvalidInputError, match=r"Wan 2\.2 TI2V-5B .*WAN22_T2V"):
        adapt(StandInPatcher(dit, WAN22_T2V))
    with pytest.raises(env.errors.InvalidInputError, match=r"this MODEL is SDXL"):
        adapt(StandInPatcher(dit, SDXL))
    with pytest.raises(env.errors.InvalidInputError, match="not a ComfyUI MODEL"):
        adapt(dit)
    with torch.device("meta"):
        big = CausalWanModel(WAN_14B)
    with pytest.raises(env.errors.InvalidInputError, match=r"Wan 2\.1 14B DiT \(dim 5120, 40 blocks\)"):
        adapt(StandInPatcher(big))

    class GGMLTensor(torch.nn.Parameter):  # the GGUF pack's quantised weight type, by name
        pass

    quantised = load_dit(env.root / "diffusion_models" / STUDENT).model
    quantised.head.head.weight = GGMLTensor(quantised.head.head.weight.detach())
    with pytest.raises(env.errors.InvalidInputError, match="GGUF-quantised"):
        adapt(StandInPatcher(quantised))


def test_lora_strength_zero_is_the_plain_video_and_one_changes_it(env) -> None:
    comfy = MiniComfy(env.nodes)
    plain = video(comfy, graph(OWN))
    assert torch.equal(video(comfy, graph(OWN, loras=(0.0,))), plain)
    with_lora = video(comfy, graph(OWN, loras=(1.0,)))
    assert (with_lora - plain).abs().max() > 0.01
    halves = video(comfy, graph(OWN, loras=(0.5, 0.5)))  # a stack: two halves add up to the whole, to rounding
    assert (halves - with_lora).abs().max() < 1e-5


def test_branches_with_and_without_a_lora_share_one_loader(env) -> None:
    """One cached loader feeds a plain branch and a LoRA branch of one graph; running them in turn (and continuing
    the plain branch's cached stream after the LoRA branch ran) gives each branch the video a fresh run gives it."""
    plain, lora = graph(OWN), graph(OWN, loras=(1.0,))
    both = copy.deepcopy({**plain, **{f"L{k}" if k in "345" else k: v for k, v in lora.items()}})
    both["L4"]["inputs"]["stream"], both["L5"]["inputs"]["stream"] = ["L3", 0], ["L4", 0]
    fresh_plain, fresh_lora = video(MiniComfy(env.nodes), plain), video(MiniComfy(env.nodes), lora)
    comfy = MiniComfy(env.nodes)
    assert torch.equal(comfy.run(both, "5")["5"][1]["samples"], fresh_plain)
    assert torch.equal(comfy.run(both, "L5")["L5"][1]["samples"], fresh_lora)
    assert "1" not in comfy.executed  # the loader's output was reused
    both["6"] = {"class_type": "CausalForcingGenerate", "inputs": {
        "stream": ["5", 0], "length": 1, "unit": "chunks", "recache": True}}
    out = comfy.run(both, "6")["6"][1]["samples"]
    assert comfy.executed == ["6"]  # the plain stream, cached before the LoRA branch ran, goes on
    alone = {**copy.deepcopy(plain), "6": both["6"]}
    assert torch.equal(out, MiniComfy(env.nodes).run(alone, "6")["6"][1]["samples"])


def test_a_lora_node_refuses_a_native_model_and_a_nan_strength(env) -> None:
    patcher = StandInPatcher(load_dit(env.root / "diffusion_models" / STUDENT).model)
    native_model = env.model_nodes.adapt_native_model(patcher, "chunkwise-4step", "none")
    with pytest.raises(env.errors.InvalidInputError, match="LoraLoaderModelOnly"):
        env.model_nodes.add_lora(native_model, LORA, 1.0)
    own = env.model_nodes.load_model(STUDENT, preview="none")
    with pytest.raises(env.errors.InvalidInputError, match="finite number"):
        env.model_nodes.add_lora(own, LORA, float("nan"))
    assert own.loras == ()


def test_a_stream_refuses_to_go_on_under_another_models_patches(env) -> None:
    """Two native MODELs on one base hold each other's patches only while loaded: a stream made under one
    refuses to go on when the weights hold the other's (ComfyUI's load puts its own back, see prepare)."""
    patcher = StandInPatcher(load_dit(env.root / "diffusion_models" / STUDENT).model)
    model = env.model_nodes.adapt_native_model(patcher, "chunkwise-4step", "none")
    stream_nodes = importlib.import_module(env.model_nodes.__name__.replace("model_nodes", "stream_nodes"))
    conditioning = [[torch.randn(1, 5, 4096), {"pooled_output": None}]]
    handle = call(stream_nodes.CausalForcingStart, model, conditioning, 64, 64, 1, 0, 0).result[0]
    handle.stream.generate(1)  # under its own patches it goes on
    patcher.model.current_weight_patches_uuid = "another MODEL's patches"  # what ComfyUI's load of a clone sets
    with pytest.raises(env.errors.StreamStateError, match="weights changed"):
        handle.stream.generate(1)
