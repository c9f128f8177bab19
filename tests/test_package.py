"""Layer 3 (packaging): the pack imports cleanly without ComfyUI, stays light, and its metadata is valid."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]

_IMPORT_AS_COMFYUI_DOES = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location(
    "custom_nodes_x_causal_forcing", sys.argv[1] + "/__init__.py", submodule_search_locations=[sys.argv[1]])
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
print(json.dumps({
    "classes": sorted(module.NODE_CLASS_MAPPINGS), "names": sorted(module.NODE_DISPLAY_NAME_MAPPINGS),
    "web": module.WEB_DIRECTORY, "heavy": sorted(m for m in ("transformers", "cv2", "accelerate") if m in sys.modules),
}))
"""


def test_root_package_imports_like_comfyui_loads_it() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT_AS_COMFYUI_DOES, str(ROOT)], check=True, capture_output=True, text=True,
        cwd="/", timeout=120,
    )
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["classes"] == info["names"]
    assert all(name.startswith("CausalForcing") for name in info["classes"])
    assert (ROOT / info["web"]).is_dir()
    assert info["heavy"] == []


def test_core_never_touches_comfyui() -> None:
    for path in (ROOT / "causal_forcing_core").rglob("*.py"):
        text = path.read_text()
        for forbidden in ("import comfy", "from comfy", "folder_paths", "PromptServer"):
            assert forbidden not in text, f"{path.name} mentions {forbidden}"


def test_comfy_runtime_falls_back_without_comfyui(tmp_path, monkeypatch) -> None:
    from nodes import comfy_runtime as rt

    assert not rt.comfy_available()
    assert isinstance(rt.get_torch_device(), torch.device)
    rt.throw_if_interrupted()
    bar = rt.progress_bar(4)
    bar.update(1)
    bar.update_absolute(3)
    assert bar.current == 3
    rt.send_sync("causal_forcing.test", {"x": 1})
    (tmp_path / "diffusion_models").mkdir()
    (tmp_path / "diffusion_models" / "student.safetensors").write_bytes(b"")
    monkeypatch.setenv("CF_MODELS_DIR", str(tmp_path))
    assert rt.model_file_list("diffusion_models") == ["student.safetensors"]
    assert rt.model_file_path("diffusion_models", "student.safetensors").endswith("student.safetensors")


def test_pyproject_and_requirements() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    meta = project["project"]
    assert "comfyui" not in meta["name"].lower()
    assert meta["requires-python"] == ">=3.10"
    deps = {d.split(">")[0].split("=")[0].split("<")[0] for d in meta["dependencies"]}
    assert {"torch", "safetensors", "einops", "numpy", "pillow", "transformers", "accelerate", "opencv-python",
            "huggingface-hub"} <= deps
    assert not any("==" in d for d in meta["dependencies"]), "dependencies are ranges, not pins"
    assert "test" in meta["optional-dependencies"]
    comfy = project["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"] and (ROOT / comfy["Icon"]).is_file()
    reqs = [line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    assert not any(line.startswith("torch") for line in reqs)
