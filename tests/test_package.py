"""Layer 3 (packaging): the pack imports cleanly without ComfyUI, stays light, and its metadata is valid."""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import torch

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]
STAND_INS = ROOT / "tests" / "stand_ins"
HEAVY = ("transformers", "av", "accelerate", "diffusers", "huggingface_hub")
TEST_COMMAND = "python -m pytest -q"

# Imports the pack as ComfyUI does (spec_from_file_location + submodule_search_locations) under each given name, and
# loads its nodes the way ComfyUI's V3 loader does: await comfy_entrypoint(), check it is a ComfyExtension, await
# get_node_list(), register each class under its schema's node_id.
_IMPORT_AS_COMFYUI_DOES = """
import asyncio, importlib.util, json, sys
root, names = sys.argv[1], sys.argv[2:]
from comfy_api.latest import ComfyExtension
found = {}
for name in names:
    spec = importlib.util.spec_from_file_location(name, root + "/__init__.py", submodule_search_locations=[root])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    found[name] = {
        "classes": sorted(module.NODE_CLASSES), "names": module.DISPLAY_NAMES,
        "class_types": all(isinstance(c, type) for c in module.NODE_CLASSES.values()),
        "web": module.WEB_DIRECTORY, "all": sorted(module.__all__),
    }
    extension = asyncio.run(module.comfy_entrypoint())
    assert isinstance(extension, ComfyExtension)
    listed = asyncio.run(extension.get_node_list())
    found[name]["entrypoint"] = {c.GET_SCHEMA().node_id: c.GET_SCHEMA().display_name for c in listed}
found["heavy"] = sorted(m for m in HEAVY if m in sys.modules)
print(json.dumps(found))
"""


def test_root_package_imports_like_comfyui_loads_it() -> None:
    names = ["custom_nodes_x_causal_forcing_nodes", "some_other_name"]
    script = f"HEAVY = {HEAVY!r}\n" + _IMPORT_AS_COMFYUI_DOES
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(STAND_INS)  # ComfyUI's comfy_api, as the tests stand it in
    out = subprocess.run(
        [sys.executable, "-c", script, str(ROOT), *names], capture_output=True, text=True, cwd="/", env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info.pop("heavy") == [], "importing the pack must not load heavy libraries"
    for name in names:
        pack = info[name]
        assert pack["all"] == ["DISPLAY_NAMES", "NODE_CLASSES", "WEB_DIRECTORY", "comfy_entrypoint"]
        assert pack["classes"] == sorted(pack["names"])
        assert pack["entrypoint"] == pack["names"]  # what ComfyUI registers: every node, by id, with its name
        assert pack["class_types"]
        assert all(node_id.startswith("CausalForcing") for node_id in pack["classes"])
        assert all(isinstance(label, str) and label for label in pack["names"].values())
        assert (ROOT / pack["web"]).is_dir()


def test_core_never_touches_comfyui() -> None:
    pattern = re.compile(
        r"^\s*(import|from)\s+(comfy|comfy_execution|comfy_api|server|nodes)\b|folder_paths|PromptServer"
    )
    for path in (ROOT / "causal_forcing_core").rglob("*.py"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            assert not pattern.search(line), f"{path.relative_to(ROOT)}:{number} touches ComfyUI: {line.strip()}"


@pytest.fixture
def runtime(pack: ModuleType) -> ModuleType:
    return importlib.import_module(f"{pack.__name__}.nodes.comfy_runtime")


def test_comfy_runtime_falls_back_without_comfyui(runtime: ModuleType, tmp_path: Path, monkeypatch) -> None:
    assert not runtime.comfy_available()
    assert isinstance(runtime.get_torch_device(), torch.device)
    runtime.throw_if_interrupted()
    bar = runtime.ProgressBar(4)
    bar.update(1)
    bar.update_absolute(3, preview=("JPEG", None, None))
    assert (bar.current, bar.total) == (3, 4)
    bar.update_absolute(5, total=6)
    assert (bar.current, bar.total) == (5, 6)
    runtime.send_sync("causal_forcing.test", {"x": 1})
    runtime.send_progress_text("chunk 1/3")

    monkeypatch.delenv("CF_MODELS_DIR", raising=False)
    assert runtime.model_file_list("diffusion_models") == []
    with pytest.raises(FileNotFoundError, match="CF_MODELS_DIR"):
        runtime.model_file_path("diffusion_models", "student.safetensors")

    folder = tmp_path / "diffusion_models"
    (folder / "sub").mkdir(parents=True)
    (folder / "student.safetensors").write_bytes(b"")
    (folder / "sub" / "old.pt").write_bytes(b"")
    (folder / "notes.txt").write_text("not a model")
    (tmp_path / "secret.safetensors").write_bytes(b"")
    monkeypatch.setenv("CF_MODELS_DIR", str(tmp_path))
    assert runtime.model_file_list("diffusion_models") == ["student.safetensors", "sub/old.pt"]
    assert runtime.model_file_list("vae_approx") == []
    assert Path(runtime.model_file_path("diffusion_models", "sub/old.pt")) == (folder / "sub" / "old.pt").resolve()
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        runtime.model_file_path("diffusion_models", "missing.safetensors")
    with pytest.raises(FileNotFoundError):
        runtime.model_file_path("diffusion_models", "../secret.safetensors")


def test_comfy_runtime_uses_comfyui_when_present(runtime: ModuleType, monkeypatch) -> None:
    calls: list[tuple] = []

    class FakeBar:
        def __init__(self, total: int, node_id: str | None = None) -> None:
            calls.append(("bar", total, node_id))

        def update_absolute(self, value: int, total: int | None = None, preview=None) -> None:
            calls.append(("update", value, total, preview))

    class Interrupted(Exception):
        pass

    def interrupted() -> None:
        raise Interrupted

    server = SimpleNamespace(
        send_sync=lambda event, data, sid=None: calls.append(("sync", event, data, sid)),
        send_progress_text=lambda text, node_id: calls.append(("text", text, node_id)),
    )
    fakes = {
        "comfy.model_management": SimpleNamespace(
            get_torch_device=lambda: torch.device("meta"),
            throw_exception_if_processing_interrupted=interrupted,
        ),
        "comfy.utils": SimpleNamespace(ProgressBar=FakeBar),
        "comfy_execution.utils": SimpleNamespace(get_executing_context=lambda: SimpleNamespace(node_id="7")),
        "folder_paths": SimpleNamespace(
            get_filename_list=lambda folder: [f"{folder}.safetensors"],
            get_full_path_or_raise=lambda folder, name: f"/models/{folder}/{name}",
        ),
        "server": SimpleNamespace(PromptServer=SimpleNamespace(instance=server)),
    }
    for name, module in fakes.items():
        monkeypatch.setitem(sys.modules, name, module)

    assert runtime.comfy_available()
    assert runtime.get_torch_device() == torch.device("meta")
    with pytest.raises(Interrupted):
        runtime.throw_if_interrupted()
    bar = runtime.ProgressBar(3, node_id="5")
    bar.update(2)
    assert runtime.model_file_list("vae_approx") == ["vae_approx.safetensors"]
    assert runtime.model_file_path("checkpoints", "a.pt") == "/models/checkpoints/a.pt"
    runtime.send_sync("causal_forcing.chunk", {"index": 0})
    runtime.send_sync("causal_forcing.live", {"index": 1}, "client-7")
    runtime.send_progress_text("chunk 2/3")
    assert calls == [
        ("bar", 3, "5"), ("update", 2, None, None), ("sync", "causal_forcing.chunk", {"index": 0}, None),
        ("sync", "causal_forcing.live", {"index": 1}, "client-7"), ("text", "chunk 2/3", "7"),
    ]


def _dist_name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower()


def test_pyproject_and_requirements() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    meta = project["project"]
    assert meta["name"] == "causal-forcing-nodes" and "comfyui" not in meta["name"].lower()
    assert re.fullmatch(r"\d+\.\d+\.\d+", meta["version"])
    assert meta["description"] and meta["requires-python"] == ">=3.10"
    assert meta["license"] == "Apache-2.0" and (ROOT / "LICENSE").read_text().lstrip().startswith("Apache License")
    deps = {_dist_name(d): d for d in meta["dependencies"]}
    extras = [d for group in meta["optional-dependencies"].values() for d in group if "[" not in d]
    assert all(">=" in d and "==" not in d for d in [*deps.values(), *extras]), "dependencies are ranges, not pins"

    comfy = project["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"] and comfy["includes"] == []
    assert (ROOT / comfy["Icon"]).is_file()
    pytest_ini = project["tool"]["pytest"]["ini_options"]
    assert pytest_ini["testpaths"] == ["tests"]
    assert {m.split(":")[0] for m in pytest_ini["markers"]} == {"comfyui", "slow"}
    find = project["tool"]["setuptools"]["packages"]["find"]
    assert all(p.split(".")[0] == "causal_forcing_core" for p in find["include"])

    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    reqs = {_dist_name(line): line for line in lines if line}
    assert reqs == {name: d for name, d in deps.items() if name != "torch"}, "requirements.txt = pyproject - torch"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = ROOT / ".ci" / "run"
    assert os.access(ci, os.X_OK)
    assert TEST_COMMAND in readme
    assert re.search(rf"^\s*{re.escape(TEST_COMMAND)}\s*$", ci.read_text(), re.MULTILINE)
