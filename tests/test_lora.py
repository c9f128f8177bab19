"""LoRA in the core: every file format gives the same merged weights as the formula, strength 0 changes nothing,
unmerge restores the weights bit for bit (float8 too), and bad files and strengths are refused with messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from causal_forcing_core.errors import CheckpointError, InvalidInputError, StreamStateError, UnsafeCheckpointError
from causal_forcing_core.lora import load_lora, merge_loras, use_loras
from tiny import tiny_model, tiny_stream

RANK = 4
#: the layers the test LoRA changes (self-attention q and the second FFN matrix of two blocks)
TARGETS = ("blocks.0.self_attn.q", "blocks.1.ffn.2", "blocks.0.cross_attn.k")


class _RunsCode:
    """Unpickling this would call ``_RunsCode.mark()``: the weights-only reader must refuse before."""

    ran = 0

    @classmethod
    def mark(cls) -> None:
        cls.ran += 1

    def __reduce__(self):  # noqa: ANN204 - pickle protocol
        return (_RunsCode.mark, ())


@pytest.fixture
def model():
    return tiny_model()


def _pairs(model, seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    modules = dict(model.named_modules())
    out = {}
    for name in TARGETS:
        o, i = modules[name].weight.shape
        out[name] = (torch.randn(RANK, i, generator=gen) * 0.1, torch.randn(o, RANK, generator=gen) * 0.1)
    return out


def _expected(model, pairs, scale: float) -> dict[str, torch.Tensor]:
    modules = dict(model.named_modules())
    return {n: modules[n].weight.detach().float() + scale * up @ down for n, (down, up) in pairs.items()}


def _write(tmp_path: Path, kind: str, pairs, alpha: float) -> Path:
    """The same LoRA in each format a trainer writes."""
    tensors: dict[str, torch.Tensor] = {}
    if kind == "peft_metadata":
        for n, (down, up) in pairs.items():
            tensors[f"base_model.model.{n}.lora_A.weight"], tensors[f"base_model.model.{n}.lora_B.weight"] = down, up
        path = tmp_path / "peft.safetensors"
        save_file(tensors, str(path), metadata={"lora_adapter_metadata": json.dumps({"lora_alpha": alpha, "r": RANK})})
        return path
    if kind == "peft_config":
        folder = tmp_path / "adapter"
        folder.mkdir()
        for n, (down, up) in pairs.items():
            tensors[f"transformer.{n}.lora_A.default.weight"], tensors[f"transformer.{n}.lora_B.default.weight"] = down, up
        save_file(tensors, str(folder / "adapter_model.safetensors"))
        (folder / "adapter_config.json").write_text(json.dumps({"r": RANK, "lora_alpha": alpha}))
        return folder / "adapter_model.safetensors"
    if kind == "kohya":
        for n, (down, up) in pairs.items():
            key = "lora_unet_" + n.replace(".", "_")
            tensors[f"{key}.lora_down.weight"], tensors[f"{key}.lora_up.weight"] = down, up
            tensors[f"{key}.alpha"] = torch.tensor(alpha)
        path = tmp_path / "kohya.safetensors"
        save_file(tensors, str(path))
        return path
    if kind == "comfyui":
        for n, (down, up) in pairs.items():
            tensors[f"diffusion_model.{n}.lora_down.weight"], tensors[f"diffusion_model.{n}.lora_up.weight"] = down, up
            tensors[f"diffusion_model.{n}.alpha"] = torch.tensor(alpha)
        path = tmp_path / "comfy.safetensors"
        save_file(tensors, str(path))
        return path
    assert kind == "longlive"  # alpha = rank in its config, and nothing in the file
    for n, (down, up) in pairs.items():
        tensors[f"base_model.model.{n}.lora_A.weight"], tensors[f"base_model.model.{n}.lora_B.weight"] = down, up
    path = tmp_path / "lora.pt"
    torch.save({"generator_lora": tensors}, path)
    return path


@pytest.mark.parametrize("kind", ["peft_metadata", "peft_config", "kohya", "comfyui", "longlive"])
def test_every_format_merges_to_the_formula_and_unmerges_exactly(model, tmp_path: Path, kind: str) -> None:
    pairs = _pairs(model)
    alpha = RANK if kind == "longlive" else 2.0
    path = _write(tmp_path, kind, pairs, alpha)
    lora = load_lora(path)
    shapes = load_lora(path, device="meta")  # what the command line checks before loading: names and shapes only
    assert {n: (s.down.shape, s.up.shape) for n, s in shapes.layers.items()} == {
        n: (s.down.shape, s.up.shape) for n, s in lora.layers.items()}
    assert lora.format == {"peft_metadata": "peft", "peft_config": "peft", "longlive": "longlive"}.get(kind, "kohya")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    expected = _expected(model, pairs, 0.5 * alpha / RANK)
    merge = merge_loras(model, [(lora, 0.5)])
    modules = dict(model.named_modules())
    for name, weight in expected.items():  # float32 rounding of the same sum
        torch.testing.assert_close(modules[name].weight, weight, rtol=0, atol=1e-6)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {f"{n}.weight" for n in TARGETS} and model.weights_version == (0, ((lora.serial, 0.5),))
    merge.unmerge()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()) and model.weights_version == 0


def test_strength_zero_is_the_plain_model_and_a_lora_changes_the_video(model, tmp_path: Path) -> None:
    lora = load_lora(_write(tmp_path, "kohya", _pairs(model), 2.0))
    plain = tiny_stream(model).generate(2).latents
    merge_loras(model, [(lora, 0.0)])
    assert model.weights_version == 0 and torch.equal(tiny_stream(model).generate(2).latents, plain)
    merge = merge_loras(model, [(lora, 1.0)])
    assert not torch.equal(tiny_stream(model).generate(2).latents, plain)
    merge.unmerge()
    assert torch.equal(tiny_stream(model).generate(2).latents, plain)
    once = merge_loras(model, [(lora, 1.0)], keep_originals=False)  # the command line's: no copy kept
    assert once.backup_bytes == 0 and not torch.equal(tiny_stream(model).generate(2).latents, plain)
    with pytest.raises(InvalidInputError, match="without keeping the original weights"):
        once.unmerge()


def test_two_loras_add_up_and_bf16_and_float8_weights_keep_their_dtype(tmp_path: Path) -> None:
    model = tiny_model()
    first, second = _pairs(model, 0), _pairs(model, 1)
    a = load_lora(_write(tmp_path, "kohya", first, 2.0))
    b = load_lora(_write(tmp_path, "comfyui", second, 4.0))
    modules = dict(model.named_modules())
    name = TARGETS[0]
    want = (modules[name].weight.float() + 1.0 * 2 / RANK * first[name][1] @ first[name][0]
            + 0.25 * 4 / RANK * second[name][1] @ second[name][0])
    merge = merge_loras(model, [(a, 1.0), (b, 0.25)])
    torch.testing.assert_close(modules[name].weight, want, rtol=0, atol=1e-6)
    merge.unmerge()
    for dtype in (torch.bfloat16, torch.float8_e4m3fn):
        weight = modules[name].weight
        weight.data = weight.data.to(dtype)
        before = weight.detach().clone()
        merge = merge_loras(model, [(a, 1.0)])
        assert weight.dtype == dtype and not torch.equal(weight.float(), before.float())
        merge.unmerge()
        assert weight.dtype == dtype and torch.equal(weight.view(torch.uint8), before.view(torch.uint8))


def test_a_stream_started_before_a_merge_refuses_to_go_on(model, tmp_path: Path) -> None:
    lora = load_lora(_write(tmp_path, "peft_metadata", _pairs(model), 2.0))
    stream = tiny_stream(model).generate(2)
    merge = merge_loras(model, [(lora, 1.0)])
    with pytest.raises(StreamStateError, match="weights changed since this stream started"):
        stream.generate(1)
    # the video so far, re-encoded under the new weights, goes on; a new stream is the LoRA's video from the start
    again = stream.replayed().generate(1)
    assert torch.equal(again.latents[:, :6], stream.latents) and again.num_chunks == 3
    merge.unmerge()
    with pytest.raises(StreamStateError, match="weights changed"):
        again.generate(1)
    # the weights are back bit for bit, and so is the version: the stream started before the merge goes on
    assert torch.equal(stream.generate(1).latents, tiny_stream(model).generate(3).latents)


def test_use_loras_switches_one_shared_model_between_sets(model, tmp_path: Path) -> None:
    """One model, three users (no LoRA, LoRA a, LoRA a + b): each gets its own weights whatever ran before, and
    a stream made under one set goes on when its set is back."""
    a = load_lora(_write(tmp_path, "kohya", _pairs(model, 0), 2.0))
    b = load_lora(_write(tmp_path, "comfyui", _pairs(model, 1), 4.0))
    plain = tiny_stream(model).generate(2).latents
    merge_loras(model, [(a, 1.0)]).unmerge()
    sets = {"none": [], "a": [(a, 1.0)], "ab": [(a, 1.0), (b, 0.5)]}
    videos, streams = {}, {}
    for name, loras in sets.items():
        use_loras(model, loras)
        streams[name] = tiny_stream(model).generate(1)
        videos[name] = tiny_stream(model).generate(2).latents
    assert torch.equal(videos["none"], plain)
    assert not torch.equal(videos["a"], plain) and not torch.equal(videos["ab"], videos["a"])
    for name in ("a", "none", "ab", "a"):  # back and forth, in another order
        use_loras(model, sets[name])
        assert torch.equal(tiny_stream(model).generate(2).latents, videos[name])
        assert torch.equal(streams[name].generate(1).latents, videos[name])
    version = model.weights_version
    use_loras(model, [(a, 1.0)])  # the same set again: nothing to do
    assert model.weights_version == version
    with pytest.raises(StreamStateError, match="weights changed"):
        streams["none"].generate(1)
    with pytest.raises(InvalidInputError, match="finite number"):
        use_loras(model, [(b, float("nan"))])
    assert torch.equal(tiny_stream(model).generate(2).latents, videos["a"])  # a refused set changed nothing


def test_bad_loras_and_strengths_are_refused(model, tmp_path: Path) -> None:
    pairs = _pairs(model)
    good = _write(tmp_path, "kohya", pairs, 2.0)
    tensors = {f"diffusion_model.{n}.lora_{p}.weight": t for n, (d, u) in pairs.items() for p, t in (("down", d), ("up", u))}
    half = dict(tensors, **{f"diffusion_model.blocks.9.mlp.{p}.lora_down.weight": torch.zeros(RANK, 8) for p in "ab"},
                **{f"diffusion_model.blocks.9.mlp.{p}.lora_up.weight": torch.zeros(8, RANK) for p in "ab"})
    save_file(half, str(tmp_path / "half.safetensors"))
    with pytest.raises(InvalidInputError, match=r"2 of its 5 layers match nothing in this model: blocks\.9\.mlp\.a"):
        merge_loras(model, [(load_lora(tmp_path / "half.safetensors"), 1.0)])
    merge_loras(model, [(load_lora(tmp_path / "half.safetensors"), 1.0)], ignore_unmatched=True).unmerge()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sd = {f"lora_unet_down_blocks_0_attentions_0_proj_in.lora_{p}.weight": torch.zeros(RANK, RANK) for p in ("down", "up")}
    save_file(sd, str(tmp_path / "sd15.safetensors"))
    with pytest.raises(InvalidInputError, match="matches none of this model's layers .* another architecture"):
        merge_loras(model, [(load_lora(tmp_path / "sd15.safetensors"), 1.0)])
    big = {k: (torch.zeros(RANK, 1536) if "down" in k else torch.zeros(1536, RANK)) for k in tensors}
    save_file(big, str(tmp_path / "14b.safetensors"))
    with pytest.raises(InvalidInputError, match=r"does not fit this model's layers: .*blocks\.0\.self_attn\.q \(LoRA 1536x1536, model 64x64\)"):
        merge_loras(model, [(load_lora(tmp_path / "14b.safetensors"), 1.0)])
    with pytest.raises(InvalidInputError, match="finite number"):
        merge_loras(model, [(load_lora(good), float("nan"))])
    # only the one with ignore_unmatched merged (and unmerged); the refused ones changed nothing
    assert model.weights_version == 0 and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())

    torch.save({"generator_lora": {"x.lora_A.weight": _RunsCode()}}, tmp_path / "evil.pt")  # LongLive's layout
    with pytest.raises(UnsafeCheckpointError, match="wants to run code"):
        load_lora(tmp_path / "evil.pt")
    assert _RunsCode.ran == 0
    save_file({"blocks.0.self_attn.q.lora_down.weight": torch.zeros(RANK, 64)}, str(tmp_path / "one_half.safetensors"))
    with pytest.raises(CheckpointError, match="without both halves"):
        load_lora(tmp_path / "one_half.safetensors")
    save_file({"blocks.0.self_attn.q.diff": torch.zeros(64, 64)}, str(tmp_path / "diff.safetensors"))
    with pytest.raises(CheckpointError, match="no LoRA layer: blocks.0.self_attn.q.diff"):
        load_lora(tmp_path / "diff.safetensors")
    peft = _write(tmp_path, "peft_config", pairs, 2.0)
    (peft.parent / "adapter_config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="adapter_config.json .*not valid JSON"):
        load_lora(peft)
    nan = {k: torch.full_like(v, float("nan")) for k, v in tensors.items()}
    save_file(nan, str(tmp_path / "nan.safetensors"))
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        load_lora(tmp_path / "nan.safetensors")
