"""Layer 3: every node's V3 schema, seen the way ComfyUI serves it (its V1 view, as ``/object_info`` lists it), is
valid plain data that ComfyUI accepts, defaults lie in range, and ``execute`` takes exactly the inputs the schema
declares."""

from __future__ import annotations

import inspect
import json
from types import ModuleType

import pytest

from comfy_sim import combo_choices, overrides

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
SOCKET_TYPES = {"CF_MODEL", "CF_STREAM", "CF_SCHEDULE", "CF_TEXT_ENCODER", "CF_VAE", "CONDITIONING", "LATENT",
                "IMAGE", "VAE", "CLIP", "MODEL"}
OUTPUT_TYPES = SOCKET_TYPES | {"STRING"}
HIDDEN_VALUES = {"UNIQUE_ID", "PROMPT", "EXTRA_PNGINFO", "DYNPROMPT"}


@pytest.fixture(autouse=True)
def _models(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    from scripts.make_tiny_models import write_tiny_models

    root = tmp_path_factory.getbasetemp() / "schema_models"
    if not root.exists():
        write_tiny_models(root)
    monkeypatch.setenv("CF_MODELS_DIR", str(root))


def _nodes(pack: ModuleType) -> list[tuple[str, type]]:
    return sorted(pack.NODE_CLASSES.items())


def _check_widget(node_id: str, name: str, kind, options: dict) -> None:
    where = f"{node_id}.{name}"
    if kind == "COMBO":
        choices = combo_choices((kind, options))
        assert all(isinstance(x, str) for x in choices), f"{where}: combo options must be strings"
        if "default" in options:
            assert options["default"] in choices, f"{where}: default {options['default']!r} not an option"
        return
    assert isinstance(kind, str), f"{where}: type must be a string or a combo list"
    assert kind in WIDGET_TYPES | SOCKET_TYPES, f"{where}: unknown type {kind}"
    if kind in ("INT", "FLOAT"):
        default, lo, hi = options.get("default"), options.get("min"), options.get("max")
        assert default is not None, f"{where}: numbers need a default"
        assert lo is None or lo <= default, f"{where}: default {default} < min {lo}"
        assert hi is None or default <= hi, f"{where}: default {default} > max {hi}"
        if kind == "INT":
            assert all(isinstance(v, int) for v in (default, lo, hi, options.get("step", 1)) if v is not None)
            step = options.get("step")
            if step and lo is not None:
                assert (default - lo) % step == 0, f"{where}: default not on the step grid"
    if kind == "BOOLEAN":
        assert isinstance(options.get("default"), bool), f"{where}: booleans need a bool default"
    if kind == "STRING" and "default" in options:
        assert isinstance(options["default"], str)


def test_every_schema_is_valid_plain_data(pack: ModuleType) -> None:
    assert len(pack.NODE_CLASSES) >= 10
    for node_id, cls in _nodes(pack):
        assert node_id.startswith("CausalForcing")
        spec = cls.INPUT_TYPES()
        json.dumps({k: v for k, v in spec.items()})  # plain data: /object_info serialises it
        assert set(spec) <= {"required", "optional", "hidden"} and "required" in spec
        for section in ("required", "optional"):
            for name, entry in spec.get(section, {}).items():
                assert isinstance(entry, tuple) and 1 <= len(entry) <= 2, f"{node_id}.{name}"
                options = entry[1] if len(entry) == 2 else {}
                assert isinstance(options, dict)
                _check_widget(node_id, name, entry[0], options)
        for name, value in spec.get("hidden", {}).items():
            assert isinstance(value, tuple) and len(value) == 1 and value[0] in HIDDEN_VALUES, f"{node_id}.{name}"
        assert isinstance(cls.RETURN_TYPES, tuple) and all(isinstance(t, str) for t in cls.RETURN_TYPES)
        assert all(t in OUTPUT_TYPES for t in cls.RETURN_TYPES), f"{node_id}: {cls.RETURN_TYPES}"
        assert len(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)) == len(cls.RETURN_TYPES)
        if hasattr(cls, "OUTPUT_TOOLTIPS"):
            assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES)
        assert cls.CATEGORY == "Causal Forcing"
        assert isinstance(cls.DESCRIPTION, str) and len(cls.DESCRIPTION) > 40
        assert pack.DISPLAY_NAMES[node_id].startswith("Causal Forcing")


def test_functions_take_exactly_the_declared_inputs(pack: ModuleType) -> None:
    for node_id, cls in _nodes(pack):
        spec = cls.INPUT_TYPES()
        params = inspect.signature(cls.execute).parameters
        names = list(params)  # hidden values arrive on cls.hidden, not as arguments
        required = set(spec["required"])
        optional = set(spec.get("optional", {}))
        assert set(names) == required | optional, f"{node_id}: {names} vs schema"
        for name in optional:
            assert params[name].default is not inspect.Parameter.empty, f"{node_id}.{name} must default (optional)"
        for name in required:
            assert params[name].default is inspect.Parameter.empty, f"{node_id}.{name} is required"
        if overrides(cls, "validate_inputs"):  # ComfyUI calls it on the class; linked inputs arrive as None
            validate = cls.validate_inputs
            assert inspect.ismethod(validate), f"{node_id}.validate_inputs must be a classmethod"
            checked = inspect.signature(validate).parameters
            # ComfyUI skips its own range/option checks for the inputs a validate_inputs takes, and for every input
            # when it takes **kwargs: name only what it checks, and only widgets
            assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in checked.values()), f"{node_id}: name the inputs"
            assert set(checked) <= required | set(spec.get("optional", {}))
            assert validate(**{n: None for n in checked}) is True


def test_model_combos_list_the_files_in_the_model_folders(pack: ModuleType) -> None:
    nodes = pack.NODE_CLASSES
    models = nodes["CausalForcingModelLoader"].INPUT_TYPES()["required"]
    assert {"cf_tiny_chunkwise.safetensors", "cf_tiny_framewise.safetensors"} <= set(combo_choices(models["model_name"]))
    assert combo_choices(models["preview"])[:3] == ["auto", "latent2rgb", "none"]
    assert "cf_tiny_preview.safetensors" in combo_choices(models["preview"])
    text = nodes["CausalForcingTextEncoderLoader"].INPUT_TYPES()["required"]
    assert [t for t in combo_choices(text["tokenizer"]) if not t.startswith("[embedded toy]")] == ["cf_tiny_umt5_tokenizer"]
    assert "cf_tiny_vae.safetensors" in combo_choices(nodes["CausalForcingVAELoader"].INPUT_TYPES()["required"]["vae_name"])


def test_start_validates_sizes_before_the_run(pack: ModuleType) -> None:
    start = pack.NODE_CLASSES["CausalForcingStart"]
    assert start.validate_inputs(width=832, height=480) is True
    message = start.validate_inputs(width=830, height=480)
    # ComfyUI shows the message under both inputs: it names the whole size, so it reads right under "height" too
    assert message == "size 830 x 480 (width x height): width 830 is not a multiple of 16 (try 816 or 832)"
    # the core's size rule (height first, like every (height, width) in the core), with the widgets' maximum
    assert start.validate_inputs(width=0, height=4112) == (
        "size 0 x 4112 (width x height): height 4112 is above the largest size, 4096; width 0 is below the smallest size, 16")
