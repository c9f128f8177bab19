"""Layer 4 (optional): the tests' stand-in for ComfyUI's V3 node API (``tests/stand_ins/comfy_api``) against a real
ComfyUI's ``comfy_api`` (``COMFYUI_PATH``, run by ``COMFYUI_PYTHON``).

Every node of the pack must describe itself the same way under both: the V1 view ComfyUI derives from a V3 schema
(``INPUT_TYPES`` with every option, hidden values, ``RETURN_TYPES`` / ``RETURN_NAMES`` / ``OUTPUT_TOOLTIPS``,
category, description, output node, ``FUNCTION``), and a class clone's hidden values. The fast tests run the nodes
on the stand-in, so this is what makes them evidence about real ComfyUI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: inputs whose options are the files of a model folder: they differ between installations, not between APIs
FILE_INPUTS = {"model_name", "lora_name", "vae_name", "text_encoder_name", "tokenizer", "preview"}

DUMP = """
import importlib.util, json, sys
root, comfyui, FILES = sys.argv[1], sys.argv[2], set(sys.argv[3].split(","))
if comfyui:
    sys.argv = [sys.argv[0], "--cpu"]
    sys.path.insert(0, comfyui)
    import comfy.options
    comfy.options.enable_args_parsing()
else:
    sys.path.insert(0, root + "/tests/stand_ins")
from comfy_api.latest import io
spec = importlib.util.spec_from_file_location("cf_v3_pack", root + "/__init__.py", submodule_search_locations=[root])
pack = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = pack
spec.loader.exec_module(pack)
def plain(value):
    return json.loads(json.dumps(value, default=str))
found = {}
for node_id, cls in sorted(pack.NODE_CLASSES.items()):
    inputs = plain(cls.INPUT_TYPES())
    for section in inputs.values():
        for name, entry in section.items():
            if name in FILES and len(entry) > 1 and "options" in entry[1]:
                entry[1]["options"] = "<files>"
    clone = cls.PREPARE_CLASS_CLONE({io.Hidden.unique_id: "7", io.Hidden.prompt: {"7": {}}})
    found[node_id] = {
        "input": inputs, "return_types": plain(cls.RETURN_TYPES), "return_names": plain(cls.RETURN_NAMES),
        "output_tooltips": plain(cls.OUTPUT_TOOLTIPS), "category": cls.CATEGORY, "description": cls.DESCRIPTION,
        "output_node": cls.OUTPUT_NODE, "function": cls.FUNCTION, "display_name": pack.DISPLAY_NAMES[node_id],
        "hidden": [clone.hidden.unique_id, clone.hidden.prompt, clone.hidden.extra_pnginfo],
    }
print(json.dumps(found))
"""


def _dump(python: str, comfyui: str, models: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["CF_MODELS_DIR"] = str(models)
    done = subprocess.run([python, "-c", DUMP, str(ROOT), comfyui, ",".join(sorted(FILE_INPUTS))],
                          capture_output=True, text=True, timeout=600, cwd=comfyui or str(ROOT), env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def differences(ours: dict, real: dict) -> list[str]:
    """Where two dumps disagree, by node and field."""
    found = [f"{node}: only under the {'stand-in' if node in ours else 'real API'}" for node in sorted(set(ours) ^ set(real))]
    for node in sorted(set(ours) & set(real)):
        for key in sorted(set(ours[node]) | set(real[node])):
            if ours[node].get(key) != real[node].get(key):
                found.append(f"{node}.{key}: stand-in {ours[node].get(key)!r}, real {real[node].get(key)!r}")
    return found


@pytest.mark.comfyui
def test_the_stand_in_describes_every_node_as_real_comfyui_does(tmp_path: Path) -> None:
    comfyui = os.environ.get("COMFYUI_PATH")
    if not comfyui:
        pytest.skip("set COMFYUI_PATH (and COMFYUI_PYTHON) to compare with a real ComfyUI")
    ours = _dump(sys.executable, "", tmp_path)
    real = _dump(os.environ.get("COMFYUI_PYTHON", sys.executable), comfyui, tmp_path)
    assert len(ours) >= 13
    assert differences(ours, real) == []


def test_the_comparison_sees_a_difference() -> None:
    base = {"CausalForcingStart": {"input": {"required": {"width": ["INT", {"min": 16}]}}, "function": "X"}}
    other = json.loads(json.dumps(base))
    assert differences(base, other) == []
    other["CausalForcingStart"]["input"]["required"]["width"][1]["min"] = 8
    other["CausalForcingLive"] = {}
    assert differences(base, other) == [
        "CausalForcingLive: only under the real API",
        "CausalForcingStart.input: stand-in {'required': {'width': ['INT', {'min': 16}]}}, real "
        "{'required': {'width': ['INT', {'min': 8}]}}",
    ]
