"""Layer 3: the example workflows (``example_workflows/``, ComfyUI UI format 0.4) and their API twins
(``tests/workflows_api/``) are valid graphs of this pack's nodes and ComfyUI's core nodes.

The checks here read the node schemas themselves (the pack's ``INPUT_TYPES``/``RETURN_TYPES``, and
``tests/data/core_node_schemas.json`` from a real ComfyUI's ``/object_info``) and apply ComfyUI's rules
independently of ``scripts/build_workflows.py``, which writes the files: every node type exists, links join matching
types, required inputs are linked, widget values come in widget order within range, the API twin is what the UI
graph exports, and the tiny variants (for smoke runs) only use files ``scripts/make_tiny_models.py`` writes.
The validators are also run on deliberately broken copies, so they are known to catch what they check.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import inspect
import json
import math
import os
import re
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

import pytest

ROOT = Path(__file__).resolve().parents[1]
UI_DIR = ROOT / "example_workflows"
API_DIR = ROOT / "tests" / "workflows_api"
CORE_SCHEMAS = ROOT / "tests" / "data" / "core_node_schemas.json"
BUILD_SCRIPT = ROOT / "scripts" / "build_workflows.py"
TINY_SCRIPT = ROOT / "scripts" / "make_tiny_models.py"
MODELS_ENV = "CF_MODELS_DIR"

#: frontend-only node types (no server schema; left out of API prompts)
VIRTUAL = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
CONTROL_VALUES = {"fixed", "randomize", "increment", "decrement"}
MODEL_EXTENSIONS = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
#: folders the pack's loaders list files from (probed to tell file-name combos from fixed ones)
MODEL_FOLDERS = ("diffusion_models", "checkpoints", "text_encoders", "vae", "vae_approx", "loras")
PROBE_FILE = "zz_probe_file.safetensors"
PROBE_FOLDER = "zz_probe_tokenizer"
#: inputs of which at least one must be linked (the schema makes each optional)
ONE_OF = {
    "CausalForcingDecode": [("stream", "samples"), ("vae", "cf_vae")],
    "CausalForcingPromptSchedule": [("clip", "text_encoder")],
    "CausalForcingLive": [("clip", "text_encoder")],  # it encodes the prompts typed while it runs
}
#: latent frames a stream without a window may hold (the released students: 21 = 81 video frames)
TRAINED_FRAMES = 21
NODE_TITLE_HEIGHT = 30


# =============================================================================================== schemas
@dataclass(frozen=True)
class Input:
    name: str
    type: Any  # type name, or the combo's option list
    options: dict
    optional: bool

    @property
    def combo(self) -> list | None:
        if isinstance(self.type, list):
            return self.type
        return list(self.options.get("options", [])) if self.type == "COMBO" else None

    @property
    def widget(self) -> bool:
        return not self.options.get("forceInput") and (isinstance(self.type, list) or self.type in WIDGET_TYPES)

    @property
    def extra_slots(self) -> list[str]:
        """UI-only widget values after this one: the control_after_generate mode, the upload button."""
        extra = []
        control = self.options.get("control_after_generate")
        if control or (control is None and self.type == "INT" and self.name in ("seed", "noise_seed")):
            extra.append("control")
        if any(self.options.get(k) for k in ("image_upload", "video_upload", "animated_image_upload")):
            extra.append("upload")
        return extra


@dataclass
class NodeDef:
    type: str
    display: str
    inputs: list[Input]
    outputs: list[tuple[str, str]]
    cls: type | None = None  # our node class (None for core nodes)
    file_combos: dict[str, tuple[set[str], str]] | None = None  # input -> (fixed options, expected kind)

    def get(self, name: str) -> Input | None:
        return next((i for i in self.inputs if i.name == name), None)

    @property
    def widgets(self) -> list[Input]:
        return [i for i in self.inputs if i.widget]

    @property
    def sockets(self) -> list[Input]:
        return [i for i in self.inputs if not i.widget]


def _inputs(input_types: dict, order: dict | None = None) -> list[Input]:
    found = []
    for section in ("required", "optional"):
        entries = input_types.get(section) or {}
        for name in (order or {}).get(section) or list(entries):
            value = entries[name]
            opts = value[1] if len(value) > 1 and isinstance(value[1], dict) else {}
            found.append(Input(name, value[0], dict(opts), section == "optional"))
    return found


@contextmanager
def models_dir(path: Path) -> Iterator[None]:
    old = os.environ.get(MODELS_ENV)
    os.environ[MODELS_ENV] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(MODELS_ENV, None)
        else:
            os.environ[MODELS_ENV] = old


def pack_defs(pack: ModuleType, folder: Path | None = None) -> dict[str, NodeDef]:
    """Our nodes' schemas, with ``INPUT_TYPES`` evaluated against the model folder ``folder`` (if given)."""
    defs = {}
    for name, cls in pack.NODE_CLASS_MAPPINGS.items():
        with models_dir(folder) if folder is not None else _nothing():
            inputs = _inputs(cls.INPUT_TYPES())
        names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
        defs[name] = NodeDef(name, pack.NODE_DISPLAY_NAME_MAPPINGS.get(name, name), inputs,
                             list(zip(names, cls.RETURN_TYPES)), cls)
    return defs


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def probed_pack_defs(pack: ModuleType, probe: Path) -> dict[str, NodeDef]:
    """Our schemas where each combo that lists the user's files is marked: evaluated with a probe file (and a
    probe tokenizer folder) in every model folder, the combos holding a probe are file-name combos; their other
    options (e.g. the preview's auto/latent2rgb/none) are the fixed ones."""
    defs = pack_defs(pack, probe)
    for d in defs.values():
        d.file_combos = {}
        for spec in d.inputs:
            combo = spec.combo or []
            if PROBE_FILE in combo:
                d.file_combos[spec.name] = ({c for c in combo if c != PROBE_FILE}, "model")
            elif PROBE_FOLDER in combo:
                d.file_combos[spec.name] = ({c for c in combo if c != PROBE_FOLDER}, "folder")
    return defs


def core_defs() -> dict[str, NodeDef]:
    data = json.loads(CORE_SCHEMAS.read_text())
    files = data.get("file_combos", {})
    defs = {}
    for name, info in data["nodes"].items():
        names = info.get("output_name") or info["output"]
        d = NodeDef(name, info.get("display_name", name), _inputs(info["input"], info.get("input_order")),
                    list(zip(names, info["output"])))
        d.file_combos = {
            key.split(".", 1)[1]: (set(), "image" if folder == "input" else "model")
            for key, folder in files.items() if key.split(".", 1)[0] == name
        }
        defs[name] = d
    return defs


# =============================================================================================== value rules
def types_match(received: str, expected: Any) -> bool:
    """ComfyUI's rule (comfy_execution/validation.py, non-strict) plus the frontend's "*" wildcard."""
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    if received == expected or "*" in (received, expected):
        return True
    return bool({t.strip() for t in received.split(",")} & {t.strip() for t in expected.split(",")})


def value_problem(d: NodeDef, spec: Input, value: Any, strict_files: bool = False) -> str | None:
    """Why ``value`` is not a valid value of widget ``spec``, or None."""
    where = f"{d.type}.{spec.name}={value!r}"
    combo = spec.combo
    if combo is not None:
        fixed, kind = (d.file_combos or {}).get(spec.name, (None, ""))
        if fixed is not None and not strict_files:  # a file the user has: check it looks like one
            if value in fixed:
                return None
            if not isinstance(value, str) or not value.strip():
                return f"{where}: expected a file name"
            suffix = Path(value).suffix.lower()
            if kind == "model" and suffix not in MODEL_EXTENSIONS:
                return f"{where}: expected a model file ({', '.join(sorted(MODEL_EXTENSIONS))})"
            if kind == "image" and suffix not in IMAGE_EXTENSIONS:
                return f"{where}: expected an image file"
            if kind == "folder" and suffix:
                return f"{where}: expected a folder name"
            return None
        return None if value in combo else f"{where}: not one of {combo}"
    t = spec.type
    if t == "INT":
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{where}: expected an integer"
    elif t == "FLOAT":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"{where}: expected a number"
    elif t == "BOOLEAN":
        return None if isinstance(value, bool) else f"{where}: expected true/false"
    elif t == "STRING":
        return None if isinstance(value, str) else f"{where}: expected a string"
    if t in ("INT", "FLOAT"):
        lo, hi = spec.options.get("min"), spec.options.get("max")
        if lo is not None and value < lo or hi is not None and value > hi:
            return f"{where}: outside [{lo}, {hi}]"
    return None


def _validate_inputs(d: NodeDef, values: dict[str, Any]) -> str | None:
    """Our node's own VALIDATE_INPUTS on the widget values (as ComfyUI calls it before a run)."""
    check = getattr(d.cls, "VALIDATE_INPUTS", None) if d.cls is not None else None
    if check is None:
        return None
    # as ComfyUI does: only the inputs it names (all of them with **kwargs); inputs not given (linked) are None
    params = inspect.signature(check).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        result = check(**values)
    else:
        result = check(**{name: values.get(name) for name in params})
    return None if result is True else f"{d.type}: VALIDATE_INPUTS says {result!r}"


# =============================================================================================== UI validator
def validate_ui(wf: dict, defs: dict[str, NodeDef]) -> list[str]:
    """Every problem of a UI-format workflow; [] when it is valid."""
    problems: list[str] = []
    for key in ("last_node_id", "last_link_id", "nodes", "links", "groups", "config", "extra", "version"):
        if key not in wf:
            problems.append(f"top-level key {key!r} missing")
    if wf.get("version") != 0.4:
        problems.append(f"version {wf.get('version')!r}, expected 0.4")
    nodes = {n["id"]: n for n in wf.get("nodes", [])}
    if len(nodes) != len(wf.get("nodes", [])):
        problems.append("node ids repeat")
    links = {link[0]: link for link in wf.get("links", [])}
    if len(links) != len(wf.get("links", [])):
        problems.append("link ids repeat")
    if nodes and wf.get("last_node_id", -1) < max(nodes):
        problems.append(f"last_node_id {wf.get('last_node_id')} < largest node id {max(nodes)}")
    if links and wf.get("last_link_id", -1) < max(links):
        problems.append(f"last_link_id {wf.get('last_link_id')} < largest link id {max(links)}")

    for nid, node in nodes.items():
        kind = node.get("type")
        where = f"node {nid} ({kind})"
        for key in ("pos", "size", "flags", "order", "mode", "inputs", "outputs", "properties"):
            if key not in node:
                problems.append(f"{where}: {key!r} missing")
        if kind in VIRTUAL:
            if kind in ("Note", "MarkdownNote"):
                values = node.get("widgets_values")
                if not (isinstance(values, list) and len(values) == 1 and isinstance(values[0], str)):
                    problems.append(f"{where}: widgets_values must be [text]")
            continue
        d = defs.get(kind)
        if d is None:
            problems.append(f"{where}: unknown node type")
            continue
        # sockets
        listed = {i["name"]: i for i in node.get("inputs", [])}
        for entry in node.get("inputs", []):
            spec = d.get(entry["name"])
            if spec is None:
                problems.append(f"{where}: input {entry['name']!r} is not in the schema")
            elif spec.widget and "widget" not in entry:
                problems.append(f"{where}: widget {spec.name!r} listed as a socket without 'widget'")
            elif not spec.widget and entry.get("type") != spec.type:
                problems.append(f"{where}: input {spec.name} has type {entry.get('type')}, schema {spec.type}")
        for spec in d.sockets:
            entry = listed.get(spec.name)
            if entry is None and not spec.optional:
                problems.append(f"{where}: required input {spec.name!r} missing")
            elif not spec.optional and entry.get("link") is None:
                problems.append(f"{where}: required input {spec.name!r} is not linked")
        linked = {e["name"] for e in node.get("inputs", []) if e.get("link") is not None}
        for group in ONE_OF.get(kind, []):
            if not linked & set(group):
                problems.append(f"{where}: link one of {group}")
        # outputs
        outs = node.get("outputs", [])
        if [(o.get("name"), o.get("type")) for o in outs] != d.outputs:
            problems.append(f"{where}: outputs {[(o.get('name'), o.get('type')) for o in outs]}, schema {d.outputs}")
        # widgets
        values = list(node.get("widgets_values", []))
        expected = sum(1 + len(spec.extra_slots) for spec in d.widgets)
        if len(values) != expected:
            problems.append(f"{where}: {len(values)} widget values, expected {expected} "
                            f"({[s.name for s in d.widgets]})")
            continue
        by_name, i = {}, 0
        for spec in d.widgets:
            value = values[i]
            by_name[spec.name] = value
            problem = value_problem(d, spec, value)
            if problem:
                problems.append(f"{where}: {problem}")
            for j, extra in enumerate(spec.extra_slots, 1):
                v = values[i + j]
                if extra == "control" and v not in CONTROL_VALUES:
                    problems.append(f"{where}: {spec.name} control {v!r} not in {sorted(CONTROL_VALUES)}")
                if extra == "upload" and v != "image":
                    problems.append(f"{where}: {spec.name} upload slot {v!r}, expected 'image'")
            i += 1 + len(spec.extra_slots)
        if not any(p.startswith(where) for p in problems):
            problem = _validate_inputs(d, by_name)
            if problem:
                problems.append(f"{where}: {problem}")

    # links against both ends
    for link_id, link in links.items():
        if len(link) != 6:
            problems.append(f"link {link_id}: expected [id, from, from_slot, to, to_slot, TYPE]")
            continue
        _, src, src_slot, dst, dst_slot, typ = link
        if src not in nodes or dst not in nodes:
            problems.append(f"link {link_id}: joins missing node(s) {src} -> {dst}")
            continue
        outs, ins = nodes[src].get("outputs", []), nodes[dst].get("inputs", [])
        if not 0 <= src_slot < len(outs) or not 0 <= dst_slot < len(ins):
            problems.append(f"link {link_id}: slot out of range")
            continue
        out, inp = outs[src_slot], ins[dst_slot]
        if link_id not in (out.get("links") or []):
            problems.append(f"link {link_id}: not in the links of node {src} output {src_slot}")
        if inp.get("link") != link_id:
            problems.append(f"link {link_id}: node {dst} input {dst_slot} holds link {inp.get('link')}")
        if typ != out.get("type"):
            problems.append(f"link {link_id}: type {typ} but node {src} output {src_slot} is {out.get('type')}")
        src_def, dst_def = defs.get(nodes[src]["type"]), defs.get(nodes[dst]["type"])
        src_type = src_def.outputs[src_slot][1] if src_def and src_slot < len(src_def.outputs) else out.get("type")
        spec = dst_def.get(inp["name"]) if dst_def else None
        dst_type = (spec.type if spec and not spec.widget else inp.get("type"))
        if not types_match(typ, dst_type) or not types_match(src_type, dst_type):
            problems.append(f"link {link_id}: {src_type} from node {src} into {dst_type} input "
                            f"{inp['name']!r} of node {dst}")
    for nid, node in nodes.items():
        for slot, entry in enumerate(node.get("inputs", [])):
            lid = entry.get("link")
            if lid is not None and (lid not in links or links[lid][3] != nid or links[lid][4] != slot):
                problems.append(f"node {nid} input {entry['name']!r}: link {lid} is not in links as its target")
        for slot, out in enumerate(node.get("outputs", [])):
            for lid in out.get("links") or []:
                if lid not in links or links[lid][1] != nid or links[lid][2] != slot:
                    problems.append(f"node {nid} output {slot}: link {lid} is not in links from it")
    return problems


# =============================================================================================== UI -> API
def ui_to_api(wf: dict, defs: dict[str, NodeDef]) -> dict[str, dict]:
    """What "Export (API)" makes of a UI workflow: widget values by name (without the UI-only control/upload
    slots), linked inputs as [source id, slot], notes left out."""
    links = {link[0]: link for link in wf["links"]}
    api = {}
    for node in wf["nodes"]:
        if node["type"] in VIRTUAL:
            continue
        assert node.get("mode", 0) == 0, "muted or bypassed nodes are not exported"
        d = defs[node["type"]]
        inputs: dict[str, Any] = {}
        values = iter(node.get("widgets_values", []))
        for spec in d.widgets:
            inputs[spec.name] = next(values)
            for _ in spec.extra_slots:
                next(values)
        for entry in node["inputs"]:
            if entry.get("link") is not None:
                link = links[entry["link"]]
                inputs[entry["name"]] = [str(link[1]), link[2]]
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs,
                                "_meta": {"title": node.get("title") or d.display}}
    return api


def validate_api(prompt: dict, defs: dict[str, NodeDef], strict_files: bool = False) -> list[str]:
    """Every problem of an API prompt: known classes, every required input given, links to existing outputs of a
    matching type, literal values valid (``strict_files``: file names must be in the listed files too)."""
    problems = []
    for nid, node in prompt.items():
        kind = node.get("class_type")
        d = defs.get(kind)
        where = f"node {nid} ({kind})"
        if d is None:
            problems.append(f"{where}: unknown class_type")
            continue
        given = node.get("inputs", {})
        for name in given:
            if d.get(name) is None:
                problems.append(f"{where}: input {name!r} is not in the schema")
        for spec in d.inputs:
            if spec.name not in given:
                if not spec.optional:
                    problems.append(f"{where}: required input {spec.name!r} missing")
                continue
            value = given[spec.name]
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                src = prompt.get(value[0])
                src_def = defs.get(src["class_type"]) if src else None
                if src_def is None or not 0 <= value[1] < len(src_def.outputs):
                    problems.append(f"{where}: {spec.name} links to a missing output {value}")
                elif spec.widget:
                    problems.append(f"{where}: widget {spec.name} is linked (not in these workflows)")
                elif not types_match(src_def.outputs[value[1]][1], spec.type):
                    problems.append(f"{where}: {spec.name} ({spec.type}) <- {src_def.outputs[value[1]][1]}")
            elif not spec.widget:
                problems.append(f"{where}: socket {spec.name} holds a literal {value!r}")
            else:
                problem = value_problem(d, spec, value, strict_files)
                if problem:
                    problems.append(f"{where}: {problem}")
        for group in ONE_OF.get(kind, []):
            if not set(given) & set(group):
                problems.append(f"{where}: give one of {group}")
        literals = {k: v for k, v in given.items() if d.get(k) is not None and d.get(k).widget}
        if not any(p.startswith(where) for p in problems):
            problem = _validate_inputs(d, literals)
            if problem:
                problems.append(f"{where}: {problem}")
    return problems


# =============================================================================================== stream semantics
def _source(prompt: dict, value: Any) -> dict | None:
    return prompt.get(value[0]) if isinstance(value, list) else None


def _frames_per_block(prompt: dict, start: dict) -> int:
    loader = _source(prompt, start["inputs"]["model"])
    variant, name = loader["inputs"].get("variant", "auto"), loader["inputs"]["model_name"]
    framewise = variant.startswith("framewise") or (variant == "auto" and "framewise" in name)
    return 1 if framewise else 3


def stream_problems(prompt: dict) -> list[str]:
    """Runtime rules the schemas cannot express: a stream without a window holds at most 21 latent frames, an
    image-to-video start needs a frame-wise model, and a schedule fits the chunks its node generates."""
    from causal_forcing_core.errors import CausalForcingError
    from causal_forcing_core.schedule import parse_schedule

    problems = []

    def origin(node: dict) -> tuple[dict, int]:  # (Start node, latent frames before this node's chunks)
        src = _source(prompt, node["inputs"]["stream"])
        if src["class_type"] == "CausalForcingStart":
            return src, int("start_image" in src["inputs"])
        start, before = origin(src)
        return start, before + chunks(src, start) * _frames_per_block(prompt, start)

    def chunks(node: dict, start: dict) -> int:
        if node["class_type"] == "CausalForcingLive":  # at most max_seconds of video (nodes/common.py rounding)
            per_chunk = 4 * _frames_per_block(prompt, start) / 16
            return max(1, math.ceil(node["inputs"]["max_seconds"] / per_chunk - 1e-9))
        length, unit = node["inputs"]["length"], node["inputs"]["unit"]
        if unit == "chunks":
            return length
        per_chunk = 4 * _frames_per_block(prompt, start) / 16
        return max(1, math.ceil(length / per_chunk - 1e-9))

    for nid, node in prompt.items():
        if node["class_type"] == "CausalForcingLive" and node["inputs"].get("decoder") == "vae" and not (
                {"vae", "cf_vae"} & set(node["inputs"])):
            problems.append(f"node {nid}: decoder vae needs a vae or cf_vae")
        if node["class_type"] not in ("CausalForcingGenerate", "CausalForcingGenerateSchedule", "CausalForcingLive"):
            continue
        start, before = origin(node)
        fpb = _frames_per_block(prompt, start)
        n = chunks(node, start)
        after = before + n * fpb
        if not start["inputs"]["window_frames"] and after > TRAINED_FRAMES:
            problems.append(f"node {nid}: the stream reaches {after} latent frames without a window "
                            f"(at most {TRAINED_FRAMES})")
        if "start_image" in start["inputs"] and fpb != 1:
            problems.append(f"node {nid}: image-to-video needs a frame-wise model")
        if node["class_type"] == "CausalForcingGenerateSchedule":
            sched = _source(prompt, node["inputs"]["schedule"])["inputs"]
            seconds = fpb * 4 / 16 if sched["unit"] == "seconds" else None
            try:
                entries = parse_schedule(sched["schedule"], n, chunk_seconds=seconds)
            except CausalForcingError as err:
                problems.append(f"node {nid}: the schedule does not fit {n} chunks: {err}")
                continue
            if len({e.start for e in entries}) != len(entries):
                problems.append(f"node {nid}: two schedule prompts start at the same chunk")
    return problems


# =============================================================================================== fixtures
def _load(path: Path) -> dict:
    return json.loads(path.read_text())


UI_FILES = sorted(UI_DIR.glob("*.json"))
NAMES = [p.stem for p in UI_FILES]
#: the toy workflows run the embedded toy model as they are (no tiny variant)
TOY_NAMES = [n for n in NAMES if n.startswith("causal_forcing_toy_")]
EMBEDDED_TAG = "[embedded toy]"


@pytest.fixture(scope="session")
def build_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cf_build_workflows", BUILD_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def defs(pack: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> dict[str, NodeDef]:
    """Core and pack schemas; file-name combos of the pack found with a probe model folder."""
    probe = tmp_path_factory.mktemp("probe_models")
    for folder in MODEL_FOLDERS:
        (probe / folder).mkdir()
        (probe / folder / PROBE_FILE).write_bytes(b"")
    (probe / "text_encoders" / PROBE_FOLDER).mkdir()
    (probe / "text_encoders" / PROBE_FOLDER / "tokenizer.json").write_text("{}")
    return {**core_defs(), **probed_pack_defs(pack, probe)}


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder written by scripts/make_tiny_models.py."""
    spec = importlib.util.spec_from_file_location("cf_make_tiny_models", TINY_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    root = tmp_path_factory.mktemp("tiny_models")
    module.write_tiny_models(root)
    return root


# =============================================================================================== tests: files
def test_there_are_workflows_with_api_twins() -> None:
    assert len(UI_FILES) >= 6
    assert sorted(p.stem for p in API_DIR.glob("*.json")) == NAMES
    for name in NAMES:
        assert re.fullmatch(r"[a-z0-9_]+", name), name


def test_old_workflows_folder_is_gone() -> None:
    assert not (ROOT / "workflows").exists(), "example graphs live in example_workflows/ (ComfyUI's template folder)"


def test_readme_lists_every_workflow() -> None:
    text = (UI_DIR / "README.md").read_text()
    for name in NAMES:
        assert f"{name}.json" in text, name


def test_build_script_check_passes() -> None:
    out = subprocess.run([sys.executable, str(BUILD_SCRIPT), "--check"], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr


def test_build_check_detects_drift(build_module: ModuleType) -> None:
    files = build_module.generated_files()
    assert build_module.check(files) == []
    path = next(iter(files))
    changed = {**files, path: files[path].replace('"version": 0.4', '"version": 0.5')}
    assert any("differs" in p for p in build_module.check(changed))
    missing = {**files, path.with_name("not_there.json"): "{}\n"}
    assert any("missing" in p for p in build_module.check(missing))
    fewer = dict(list(files.items())[1:])
    assert any("stale" in p for p in build_module.check(fewer))


def test_core_schemas_cover_every_core_node() -> None:
    data = _load(CORE_SCHEMAS)
    assert "ComfyUI" in data["note"]
    used = {n["type"] for p in UI_FILES for n in _load(p)["nodes"]}
    core = {t for t in used if not t.startswith("CausalForcing")} - VIRTUAL
    assert core <= set(data["nodes"]), core - set(data["nodes"])
    for name, info in data["nodes"].items():
        assert {"input", "input_order", "output", "output_name"} <= set(info), name


# =============================================================================================== tests: UI files
@pytest.mark.parametrize("name", NAMES)
def test_ui_workflow_is_valid(name: str, defs: dict[str, NodeDef]) -> None:
    assert validate_ui(_load(UI_DIR / f"{name}.json"), defs) == []


@pytest.mark.parametrize("name", NAMES)
def test_ui_workflow_has_a_note_naming_its_files(name: str) -> None:
    wf = _load(UI_DIR / f"{name}.json")
    notes = "\n".join(n["widgets_values"][0] for n in wf["nodes"] if n["type"] in ("Note", "MarkdownNote"))
    assert notes, "every workflow explains itself in a note"
    folders = {"CausalForcingModelLoader": "diffusion_models", "CLIPLoader": "text_encoders", "VAELoader": "vae"}
    for node in wf["nodes"]:
        value = (node.get("widgets_values") or [None])[0]
        if isinstance(value, str) and value.startswith(EMBEDDED_TAG):  # the toy model ships with the pack
            assert f"`{value}`" in notes and "no downloads" in notes, f"the note does not name {value}"
        elif node["type"] in folders:
            path = f"{folders[node['type']]}/{value}"
            assert path in notes, f"the note does not say where {path} goes"


@pytest.mark.parametrize("name", NAMES)
def test_ui_layout_is_readable(name: str) -> None:
    """Nodes (with their title bars) do not overlap, groups do not overlap, and each group holds whole nodes."""
    wf = _load(UI_DIR / f"{name}.json")
    boxes = {n["id"]: (n["pos"][0], n["pos"][1] - NODE_TITLE_HEIGHT, n["pos"][0] + n["size"][0],
                       n["pos"][1] + n["size"][1]) for n in wf["nodes"]}

    def overlap(a: tuple, b: tuple) -> bool:
        return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]

    ids = sorted(boxes)
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            assert not overlap(boxes[a], boxes[b]), f"nodes {a} and {b} overlap"
    groups = [(g["title"], (g["bounding"][0], g["bounding"][1], g["bounding"][0] + g["bounding"][2],
                            g["bounding"][1] + g["bounding"][3])) for g in wf["groups"]]
    for i, (ta, a) in enumerate(groups):
        for tb, b in groups[i + 1:]:
            assert not overlap(a, b), f"groups {ta!r} and {tb!r} overlap"
        for nid, box in boxes.items():
            inside = a[0] <= box[0] and a[1] <= box[1] and box[2] <= a[2] and box[3] <= a[3]
            assert inside or not overlap(a, box), f"node {nid} sticks out of group {ta!r}"


# =============================================================================================== tests: API twins
@pytest.mark.parametrize("name", NAMES)
def test_api_twin_is_what_the_ui_graph_exports(name: str, defs: dict[str, NodeDef]) -> None:
    assert _load(API_DIR / f"{name}.json") == ui_to_api(_load(UI_DIR / f"{name}.json"), defs)


@pytest.mark.parametrize("name", NAMES)
def test_api_twin_is_valid(name: str, defs: dict[str, NodeDef]) -> None:
    prompt = _load(API_DIR / f"{name}.json")
    assert validate_api(prompt, defs) == []
    assert stream_problems(prompt) == []


# =============================================================================================== tests: tiny variants
@pytest.mark.parametrize("name", [n for n in NAMES if n not in TOY_NAMES])
def test_tiny_variant_uses_only_the_tiny_models(name: str, build_module: ModuleType, pack: ModuleType,
                                                tiny_models: Path, defs: dict[str, NodeDef]) -> None:
    original = _load(API_DIR / f"{name}.json")
    tiny = build_module.tiny_variant(original)
    assert build_module.tiny_variant(copy.deepcopy(original)) == tiny  # deterministic
    # every combo of our nodes, file names included, is one of the options with the tiny model folder
    tiny_defs = {**core_defs(), **pack_defs(pack, tiny_models)}
    for d in tiny_defs.values():
        if d.cls is not None:
            d.file_combos = {}
    assert validate_api(tiny, tiny_defs, strict_files=True) == []
    assert stream_problems(tiny) == []
    written = {"/".join(p.relative_to(tiny_models).parts[1:]) for p in tiny_models.rglob("*")}  # names per folder
    kinds = {n["class_type"] for n in tiny.values()}
    assert not kinds & {"CLIPLoader", "VAELoader", "CLIPTextEncode"}, kinds
    for nid, node in tiny.items():
        d = defs[node["class_type"]]
        for key, value in node["inputs"].items():
            if key in (d.file_combos or {}) and not (value in d.file_combos[key][0]):
                if node["class_type"] == "LoadImage":
                    assert value == "example.png"  # ships in ComfyUI's input folder
                else:
                    assert value in written, f"node {nid}: {key}={value!r} is not written by make_tiny_models"
        if node["class_type"] == "CausalForcingStart":
            assert (node["inputs"]["width"], node["inputs"]["height"]) == (64, 64)
        if node["class_type"] in ("CausalForcingGenerate", "CausalForcingGenerateSchedule"):
            assert node["inputs"]["unit"] == "chunks" and node["inputs"]["length"] <= 6
        if node["class_type"] == "CausalForcingLive":
            assert node["inputs"]["max_seconds"] <= 6 and node["inputs"]["realtime"] is False
            assert "clip" not in node["inputs"] and "text_encoder" in node["inputs"]
        for key in ("text", "schedule", "prompt"):
            if isinstance(node["inputs"].get(key), str):
                for part in re.split(r"[|\n]", node["inputs"][key]):
                    assert len(part.split(":", 1)[-1].split()) <= 12, part


def test_tiny_variant_does_not_change_its_input(build_module: ModuleType) -> None:
    for name in NAMES:
        original = _load(API_DIR / f"{name}.json")
        before = copy.deepcopy(original)
        build_module.tiny_variant(original)
        assert original == before


def test_tiny_constants_match_make_tiny_models(build_module: ModuleType, tiny_models: Path) -> None:
    for folder, name in (("diffusion_models", build_module.TINY_CHUNKWISE),
                         ("diffusion_models", build_module.TINY_FRAMEWISE),
                         ("text_encoders", build_module.TINY_TEXT_ENCODER),
                         ("text_encoders", build_module.TINY_TOKENIZER), ("vae", build_module.TINY_VAE)):
        assert (tiny_models / folder / name).exists(), f"{folder}/{name}"


# =============================================================================================== tests: toy workflows
def test_there_are_toy_workflows_and_no_toy_image_to_video() -> None:
    assert TOY_NAMES == ["causal_forcing_toy_long_video", "causal_forcing_toy_prompt_switch", "causal_forcing_toy_t2v"]
    assert not any("i2v" in n for n in TOY_NAMES)  # the toy student is chunk-wise


def test_toy_constants_match_the_loader_entries(build_module: ModuleType, pack: ModuleType) -> None:
    entries = importlib.import_module(f"{pack.__name__}.nodes.toy_entries")
    assert (build_module.TOY_MODEL, build_module.TOY_TEXT_ENCODER, build_module.TOY_TOKENIZER, build_module.TOY_VAE) \
        == (entries.MODEL_ENTRY, entries.TEXT_ENCODER_ENTRY, entries.TOKENIZER_ENTRY, entries.VAE_ENTRY)
    assert all(build_module.is_toy(n) for n in TOY_NAMES)
    assert not set(build_module.tiny_variants()) & set(TOY_NAMES)


@pytest.mark.parametrize("name", TOY_NAMES)
def test_toy_workflow_uses_only_the_embedded_model(name: str) -> None:
    prompt = _load(API_DIR / f"{name}.json")
    kinds = {n["class_type"] for n in prompt.values()}
    assert not kinds & {"CLIPLoader", "VAELoader", "CLIPTextEncode", "LoadImage"}, kinds
    assert kinds & {"SaveVideo", "SaveAnimatedWEBP"}
    for nid, node in prompt.items():
        inputs = node["inputs"]
        for key in ("model_name", "text_encoder_name", "tokenizer", "vae_name"):
            if key in inputs:
                assert inputs[key].startswith(EMBEDDED_TAG), f"node {nid}: {key}={inputs[key]!r}"
        if node["class_type"] == "CausalForcingStart":
            assert (inputs["width"], inputs["height"]) == (64, 64) and "start_image" not in inputs
    from causal_forcing_core.schedule import schedule_prompts
    from causal_forcing_core.toy.world import parse_caption

    for node in prompt.values():  # every prompt is a toy caption
        if node["class_type"] == "CausalForcingTextEncode":
            parse_caption(node["inputs"]["text"])
        if node["class_type"] == "CausalForcingPromptSchedule":
            for text in schedule_prompts(node["inputs"]["schedule"], chunk_seconds=0.75):
                parse_caption(text)
    notes = "\n".join(n["widgets_values"][0] for n in _load(UI_DIR / f"{name}.json")["nodes"]
                      if n["type"] == "MarkdownNote")
    assert "runs out of the box, no downloads" in notes.lower()


# =============================================================================================== tests: validators bite
def _node(wf: dict, kind: str, index: int = 0) -> dict:
    return [n for n in wf["nodes"] if n["type"] == kind][index]


def _link_into(wf: dict, kind: str, input_name: str) -> list:
    node = _node(wf, kind)
    lid = next(i["link"] for i in node["inputs"] if i["name"] == input_name)
    return next(link for link in wf["links"] if link[0] == lid)


def _break_link_type(wf: dict) -> None:
    # the Start's model input fed from the CLIP loader (CLIP into CF_MODEL), consistently on both ends
    link = _link_into(wf, "CausalForcingStart", "model")
    clip = _node(wf, "CLIPLoader")
    for n in wf["nodes"]:
        for out in n["outputs"]:
            if link[0] in (out.get("links") or []):
                out["links"].remove(link[0])
    clip["outputs"][0]["links"].append(link[0])
    link[1], link[2], link[5] = clip["id"], 0, "CLIP"


def _break_range(wf: dict) -> None:
    _node(wf, "CausalForcingStart")["widgets_values"][0] = 5000  # width > 4096


def _break_step(wf: dict) -> None:
    _node(wf, "CausalForcingStart")["widgets_values"][0] = 830  # not a multiple of 16: VALIDATE_INPUTS


def _break_node_type(wf: dict) -> None:
    _node(wf, "CausalForcingDecode")["type"] = "CausalForcingDecoder"


def _unlink_input(wf: dict, node_type: str, name: str) -> None:
    """Remove the link feeding input ``name`` of the ``node_type`` node, everywhere the UI format records it."""
    entry = next(i for i in _node(wf, node_type)["inputs"] if i["name"] == name)
    wf["links"] = [link for link in wf["links"] if link[0] != entry["link"]]
    for n in wf["nodes"]:
        for out in n["outputs"]:
            if entry["link"] in (out.get("links") or []):
                out["links"].remove(entry["link"])
    entry["link"] = None


def _break_required(wf: dict) -> None:
    _unlink_input(wf, "CausalForcingStart", "positive")


def _break_count(wf: dict) -> None:
    _node(wf, "CausalForcingStart")["widgets_values"].remove("fixed")  # the control_after_generate slot


def _break_combo(wf: dict) -> None:
    _node(wf, "CausalForcingGenerate" if any(n["type"] == "CausalForcingGenerate" for n in wf["nodes"])
          else "CausalForcingGenerateSchedule")["widgets_values"][1] = "minutes"


def _break_file_name(wf: dict) -> None:
    _node(wf, "CausalForcingModelLoader")["widgets_values"][0] = "causal_forcing_chunkwise.txt"


def _break_link_table(wf: dict) -> None:
    wf["links"].pop()


def _break_last_ids(wf: dict) -> None:
    wf["last_link_id"] = 1


def _break_one_of(wf: dict) -> None:
    _unlink_input(wf, "CausalForcingDecode", "vae")


def _break_bool(wf: dict) -> None:
    _node(wf, "SaveVideo")["widgets_values"][1] = "avi"


UI_BREAKS = {
    "wrong link type": (_break_link_type, "CLIP from node"),
    "out-of-range widget": (_break_range, "outside"),
    "size not a multiple of 16": (_break_step, "VALIDATE_INPUTS"),
    "unknown node type": (_break_node_type, "unknown node type"),
    "required input unlinked": (_break_required, "required input 'positive'"),
    "widget count": (_break_count, "widget values, expected"),
    "combo value": (_break_combo, "not one of"),
    "file name": (_break_file_name, "expected a model file"),
    "dangling link id": (_break_link_table, "is not in links"),
    "last ids": (_break_last_ids, "last_link_id"),
    "decode without vae": (_break_one_of, "link one of"),
    "core combo": (_break_bool, "not one of"),
}


@pytest.mark.parametrize("case", sorted(UI_BREAKS))
def test_ui_validator_catches(case: str, defs: dict[str, NodeDef]) -> None:
    wf = _load(UI_DIR / "causal_forcing_t2v_chunkwise.json")
    assert validate_ui(wf, defs) == []
    breaker, message = UI_BREAKS[case]
    broken = copy.deepcopy(wf)
    breaker(broken)
    problems = validate_ui(broken, defs)
    assert any(message in p for p in problems), problems


def _api_by_class(prompt: dict, kind: str) -> dict:
    return next(n for n in prompt.values() if n["class_type"] == kind)


API_BREAKS = {
    "missing required input": (lambda p: _api_by_class(p, "CausalForcingStart")["inputs"].pop("seed"),
                               "required input 'seed'"),
    "unknown class": (lambda p: _api_by_class(p, "SaveVideo").update(class_type="SaveVideos"), "unknown class_type"),
    "link to a missing node": (lambda p: _api_by_class(p, "CreateVideo")["inputs"].update(images=["999", 0]),
                               "missing output"),
    "link type": (lambda p: _api_by_class(p, "CreateVideo")["inputs"].update(
        images=[next(k for k, v in p.items() if v["class_type"] == "VAELoader"), 0]), "(IMAGE) <- VAE"),
    "range": (lambda p: _api_by_class(p, "CreateVideo")["inputs"].update(fps=500.0), "outside"),
    "stream too long": (lambda p: _api_by_class(p, "CausalForcingGenerate")["inputs"].update(length=8),
                        "without a window"),
}


@pytest.mark.parametrize("case", sorted(API_BREAKS))
def test_api_validator_catches(case: str, defs: dict[str, NodeDef]) -> None:
    prompt = _load(API_DIR / "causal_forcing_t2v_chunkwise.json")
    breaker, message = API_BREAKS[case]
    breaker(prompt)
    problems = validate_api(prompt, defs) + (stream_problems(prompt) if case == "stream too long" else [])
    assert any(message in p for p in problems), problems


def _live_without_encoder(prompt: dict) -> None:
    _api_by_class(prompt, "CausalForcingLive")["inputs"].pop("clip")


def _live_without_window(prompt: dict) -> None:
    _api_by_class(prompt, "CausalForcingStart")["inputs"].update(window_frames=0, sink_frames=0)


def _live_vae_decoder_without_vae(prompt: dict) -> None:
    live = _api_by_class(prompt, "CausalForcingLive")["inputs"]
    live.pop("vae")
    live["decoder"] = "vae"


LIVE_BREAKS = {
    "live without a text encoder": (_live_without_encoder, "give one of ('clip', 'text_encoder')"),
    "live past 21 frames without a window": (_live_without_window, "without a window"),
    "live vae decoder without a vae": (_live_vae_decoder_without_vae, "decoder vae needs"),
}


@pytest.mark.parametrize("case", sorted(LIVE_BREAKS))
def test_api_validator_catches_live_problems(case: str, defs: dict[str, NodeDef]) -> None:
    prompt = _load(API_DIR / "causal_forcing_live.json")
    assert validate_api(prompt, defs) == [] and stream_problems(prompt) == []
    breaker, message = LIVE_BREAKS[case]
    breaker(prompt)
    problems = validate_api(prompt, defs) + stream_problems(prompt)
    assert any(message in p for p in problems), problems


def test_live_tiny_variant_encodes_with_the_tiny_text_encoder(build_module: ModuleType) -> None:
    prompt = _load(API_DIR / "causal_forcing_live.json")
    tiny = build_module.tiny_variant(prompt)
    live = _api_by_class(tiny, "CausalForcingLive")["inputs"]
    encoder = tiny[live["text_encoder"][0]]
    assert encoder["class_type"] == "CausalForcingTextEncoderLoader"
    assert (live["max_seconds"], live["realtime"]) == (6, False)
    assert tiny[live["cf_vae"][0]]["class_type"] == "CausalForcingVAELoader"
    # the schedule output goes to a core node that shows text
    shown = [n for n in tiny.values() if n["class_type"] == "PreviewAny"]
    assert shown and shown[0]["inputs"]["source"][1] == 2


def test_api_twin_comparison_catches_a_changed_value(defs: dict[str, NodeDef]) -> None:
    wf = _load(UI_DIR / "causal_forcing_prompt_switch.json")
    _node(wf, "CLIPTextEncode", 2)["widgets_values"][0] = "another prompt"
    assert ui_to_api(wf, defs) != _load(API_DIR / "causal_forcing_prompt_switch.json")


def test_schedule_check_catches_a_schedule_longer_than_its_node() -> None:
    prompt = _load(API_DIR / "causal_forcing_prompt_schedule.json")
    _api_by_class(prompt, "CausalForcingGenerateSchedule")["inputs"]["length"] = 4  # schedule switches at chunk 5
    assert any("does not fit" in p for p in stream_problems(prompt))


def test_types_match_follows_comfyui() -> None:
    assert types_match("IMAGE", "IMAGE") and types_match("IMAGE", "*") and types_match("*", "LATENT")
    assert types_match("IMAGE,MASK", "MASK") and types_match("INT", "FLOAT,INT")
    assert not types_match("IMAGE", "LATENT") and not types_match("CF_STREAM", "CF_MODEL")
