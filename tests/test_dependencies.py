"""The declared dependencies are exactly what the code imports: the nodes' runtime requirements are what the
nodes (and the core modules they reach) import, the command line's and training's imports are in their extras,
and nothing is declared that nothing uses. Imports are read from the source (lazy ones inside functions too)."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]
CORE = "causal_forcing_core"
#: import name -> distribution name, where they differ
DISTRIBUTION = {"PIL": "pillow", "cv2": "opencv-python", "huggingface_hub": "huggingface-hub", "yaml": "pyyaml"}
#: declared without being imported: a library loads them for us
INDIRECT = {"sentencepiece": "transformers reads a spiece.model tokenizer through it"}
#: what ComfyUI provides at run time (never imported by the pack, reached only through nodes/comfy_runtime.py)
COMFY = {"comfy", "folder_paths", "server", "comfy_api", "comfy_execution", "aiohttp", "execution", "nodes"}


def _module_file(module: str) -> Path | None:
    """The source file of a pack module named relative to the repo root ("nodes.common", "causal_forcing_core")."""
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(third-party top-level names, pack modules) imported anywhere in ``path`` (relative imports resolved)."""
    package = ".".join(path.relative_to(ROOT).parent.parts)
    external, internal = set(), set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                name = alias.name
                (internal if _module_file(name) else external).add(name if _module_file(name) else name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".") if package else []
                base = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
                target = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    sub = f"{target}.{alias.name}" if target else alias.name
                    internal.add(sub if _module_file(sub) else target)
            elif node.module and node.module.split(".")[0] != "__future__":
                (internal if _module_file(node.module) else external).add(
                    node.module if _module_file(node.module) else node.module.split(".")[0]
                )
    return external, {m for m in internal if m and _module_file(m)}


def third_party_imports(start: list[str]) -> set[str]:
    """Distributions imported by the pack modules ``start`` and every pack module they import, transitively."""
    stdlib = set(sys.stdlib_module_names)
    seen: set[str] = set()
    todo = list(start)
    found: set[str] = set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        external, internal = _imports(_module_file(module))  # type: ignore[arg-type]
        found |= {e for e in external if e not in stdlib and e not in COMFY}
        todo.extend(internal)
    return {DISTRIBUTION.get(name, name).lower().replace("_", "-") for name in found}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower()


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _pack_modules() -> list[str]:
    return [f"nodes.{p.stem}" for p in (ROOT / "nodes").glob("*.py")]


def test_runtime_requirements_are_what_the_nodes_import() -> None:
    used = third_party_imports(_pack_modules())
    declared = {_name(d) for d in _project()["dependencies"]}
    assert used - declared == set(), "imported by the nodes but not declared"
    assert declared - used - set(INDIRECT) == set(), "declared but imported by nothing the nodes reach"
    lines = [ln.split("#")[0].strip() for ln in (ROOT / "requirements.txt").read_text().splitlines()]
    assert {_name(ln) for ln in lines if ln} == declared - {"torch"}, "requirements.txt = pyproject minus torch"


def test_every_core_import_is_declared_in_an_extra() -> None:
    project = _project()
    extras = project["optional-dependencies"]
    declared = {_name(d) for d in project["dependencies"]}
    layers = {"cli": [f"{CORE}.cli", f"{CORE}.demo"], "train": [f"{CORE}.training.cli"]}
    for extra, modules in layers.items():
        used = third_party_imports(modules)
        given = declared | {_name(d) for d in extras[extra]}
        assert used - given == set(), f"the {extra} layer imports undeclared {sorted(used - given)}"
        assert {_name(d) for d in extras[extra]} <= used, f"the {extra} extra declares what it never imports"
    everything = third_party_imports([f"{CORE}.{p.stem}" for p in (ROOT / CORE).rglob("*.py")
                                      if p.parent == ROOT / CORE])
    all_declared = declared | {_name(d) for extra in ("cli", "train") for d in extras[extra]}
    assert everything - all_declared == set()


def test_the_test_extra_installs_the_cli_and_training() -> None:
    test = _project()["optional-dependencies"]["test"]
    assert any(_name(d) == "pytest" for d in test)
    assert "causal-forcing-nodes[cli,train]" in test


def test_the_dependency_reader_sees_lazy_imports(tmp_path) -> None:
    """The reader itself: an import inside a function counts, and a stdlib one does not."""
    external, _ = _imports(ROOT / CORE / "model_files.py")
    assert "huggingface_hub" in external and "os" in external
    assert "huggingface-hub" in third_party_imports([f"{CORE}.model_files"])
    assert "os" not in third_party_imports([f"{CORE}.model_files"])
