"""Layer 3: the example workflows (``example_workflows/``, UI format as ComfyUI's frontend exports it) are valid
graphs of this pack's nodes and ComfyUI's core nodes.

One validator, :func:`validate`, reads the node schemas as data: our nodes' ``INPUT_TYPES``/``RETURN_TYPES`` and, for
the few core nodes the workflows use, :data:`CORE_NODES` (``/object_info``-shaped; ``tests/test_comfyui_server.py``
checks it against a real ComfyUI). It checks node types, links against both ends and their socket types, required
inputs, widget values (count, type, range, choices, our nodes' ``validate_inputs``). The ``/prompt`` form of each
file is derived, not committed (``scripts/comfyui_smoke.py``'s ``api_prompt``, which layer 4 compares with the
frontend's own Export (API)), and checked for the stream rules schemas cannot express; its tiny-model variant (for
smoke runs) only uses files ``scripts/make_tiny_models.py`` writes. Every check is also run on a broken copy.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import inspect
import json
import math
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import pytest

from comfy_sim import overrides

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import comfyui_smoke as smoke  # noqa: E402 - the UI -> /prompt derivation and the tiny-model mapping

UI_DIR = smoke.UI_DIR
TINY_SCRIPT = ROOT / "scripts" / "make_tiny_models.py"
MODELS_ENV = "CF_MODELS_DIR"
Schemas = dict[str, dict[str, Any]]

#: a combo option standing for "the user's files": a value not among the other options must look like a file name
FILES = "<files>"
CONTROL_VALUES = {"fixed", "randomize", "increment", "decrement"}
FILE_SUFFIXES = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft", ".png", ".jpg", ".jpeg",
                 ".webp"}
#: folders the pack's loaders list files from (a probe file in each tells file-name combos from fixed ones)
MODEL_FOLDERS = ("diffusion_models", "checkpoints", "text_encoders", "vae", "vae_approx", "loras")
PROBE_FILE, PROBE_FOLDER = "zz_probe_file.safetensors", "zz_probe_tokenizer"
#: inputs of which at least one must be linked (the schema makes each optional)
ONE_OF = {
    "CausalForcingDecode": [("stream", "samples"), ("vae", "cf_vae")],
    "CausalForcingPromptSchedule": [("clip", "text_encoder")],
    "CausalForcingLive": [("clip", "text_encoder")],  # it encodes the prompts typed while it runs
}
TRAINED_FRAMES = 21  # latent frames a stream without a window may hold (the released students: 81 video frames)
NODE_TITLE_HEIGHT = 30
EMBEDDED_TAG = "[embedded toy]"


def _core(display: str, required: dict, optional: dict | None = None, outputs: tuple[str, ...] = ()) -> dict:
    return {"display_name": display, "input": {"required": required, "optional": optional or {}},
            "output": list(outputs), "output_name": list(outputs)}


#: the core ComfyUI nodes the workflows use, as its ``/object_info`` (0.3.64) describes them: the fields read here;
#: a combo lists the options the workflows may use (ComfyUI's list holds at least these)
CORE_NODES: Schemas = {
    "CLIPLoader": _core("Load CLIP", {"clip_name": [[FILES]], "type": [["stable_diffusion", "wan"]]},
                        {"device": [["default", "cpu"], {"advanced": True}]}, ("CLIP",)),
    "VAELoader": _core("Load VAE", {"vae_name": [[FILES]]}, outputs=("VAE",)),
    "CLIPTextEncode": _core("CLIP Text Encode (Prompt)", {"text": ["STRING", {"multiline": True}], "clip": ["CLIP"]},
                            outputs=("CONDITIONING",)),
    "LoadImage": _core("Load Image", {"image": [[FILES], {"image_upload": True}]}, outputs=("IMAGE", "MASK")),
    "CreateVideo": _core("Create Video", {"images": ["IMAGE"], "fps": ["FLOAT", {"min": 1.0, "max": 120.0}]},
                         {"audio": ["AUDIO"]}, ("VIDEO",)),
    "SaveVideo": _core("Save Video", {"video": ["VIDEO"], "filename_prefix": ["STRING"],
                                      "format": ["COMBO", {"options": ["auto", "mp4"]}],
                                      "codec": ["COMBO", {"options": ["auto", "h264"]}]}),
    "SaveAnimatedWEBP": _core("SaveAnimatedWEBP", {
        "images": ["IMAGE"], "filename_prefix": ["STRING"], "fps": ["FLOAT", {"min": 0.01, "max": 1000.0}],
        "lossless": ["BOOLEAN"], "quality": ["INT", {"min": 0, "max": 100}],
        "method": [["default", "fastest", "slowest"]]}),
    "PreviewAny": _core("Preview Any", {"source": ["*", {}]}),
    "UNETLoader": _core("Load Diffusion Model", {"unet_name": [[FILES]], "weight_dtype": [[
        "default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"]]}, outputs=("MODEL",)),
    "LoraLoaderModelOnly": _core("LoraLoaderModelOnly", {
        "model": ["MODEL"], "lora_name": [[FILES]], "strength_model": ["FLOAT", {"min": -100.0, "max": 100.0}]},
        outputs=("MODEL",)),
    "VAEDecode": _core("VAE Decode", {"samples": ["LATENT"], "vae": ["VAE"]}, outputs=("IMAGE",)),
}


# =============================================================================================== schemas
def pack_schemas(pack: ModuleType, folder: Path | None = None) -> Schemas:
    """Our nodes in ``/object_info`` shape, their combos listing the files of the model folder ``folder``."""
    found = {}
    with pytest.MonkeyPatch.context() as env:
        if folder is not None:
            env.setenv(MODELS_ENV, str(folder))  # where our loaders look without ComfyUI
        for name, cls in pack.NODE_CLASSES.items():
            outputs = list(cls.RETURN_TYPES)
            found[name] = {"display_name": pack.DISPLAY_NAMES.get(name, name), "input": cls.INPUT_TYPES(),
                           "output": outputs, "output_name": list(getattr(cls, "RETURN_NAMES", None) or outputs),
                           "cls": cls}
    return found


def probed_pack_schemas(pack: ModuleType, probe: Path) -> Schemas:
    """Our schemas with every combo that lists the user's files turned into ``[FILES, *fixed options]``: evaluated
    with a probe file (and a probe tokenizer folder) in each model folder, those are the combos holding a probe."""
    found = pack_schemas(pack, probe)
    for info in found.values():
        info["input"] = copy.deepcopy(info["input"])  # never edit what INPUT_TYPES returned
        for entries in info["input"].values():
            for name, spec in (entries or {}).items():
                choices = combo_options(spec[0], spec[1] if len(spec) > 1 else {})
                if choices is not None and {PROBE_FILE, PROBE_FOLDER} & set(choices):
                    listed = [FILES, *(c for c in choices if c not in (PROBE_FILE, PROBE_FOLDER))]
                    entries[name] = ([listed, *spec[1:]] if isinstance(spec[0], list)
                                     else [spec[0], {**spec[1], "options": listed}, *spec[2:]])
    return found


def combo_options(kind: Any, options: dict) -> list | None:
    if isinstance(kind, list):
        return kind
    return list(options.get("options", [])) if kind == "COMBO" else None


def socket_types(info: dict) -> dict[str, tuple[str, bool]]:
    """The node's sockets (inputs that are not widgets): name -> (type, optional)."""
    return {name: (kind, optional) for name, kind, opts, optional in smoke.schema_inputs(info)
            if not smoke.widget_slots(name, kind, opts)}


def workflow_prompt(name: str, pack: ModuleType) -> dict[str, dict[str, Any]]:
    """Example workflow ``name`` in the ``/prompt`` format (as its file stands: no tiny-model mapping), for tests that
    run it without ComfyUI."""
    return smoke.api_prompt(smoke.load_workflow(name), {**CORE_NODES, **pack_schemas(pack)})


def outputs_of(info: dict) -> list[tuple[str, str]]:
    return list(zip(info["output_name"], info["output"]))


# =============================================================================================== value rules
def types_match(received: Any, expected: Any) -> bool:
    """ComfyUI's rule (comfy_execution/validation.py, non-strict) plus the frontend's "*" wildcard."""
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    if received == expected or "*" in (received, expected):
        return True
    return bool({t.strip() for t in received.split(",")} & {t.strip() for t in expected.split(",")})


def value_problem(name: str, kind: Any, options: dict, value: Any) -> str | None:
    """Why ``value`` is not a valid value of widget ``name``, or None."""
    where = f"{name}={value!r}"
    choices = combo_options(kind, options)
    if choices is not None:
        if value in choices and value != FILES:
            return None
        if FILES in choices and isinstance(value, str) and value.strip():
            suffix = Path(value).suffix.lower()
            return None if not suffix or suffix in FILE_SUFFIXES else f"{where}: expected a file name"
        return f"{where}: not one of {choices}"
    expected = {"INT": int, "FLOAT": (int, float), "BOOLEAN": bool, "STRING": str}.get(kind, object)
    if not isinstance(value, expected) or (kind in ("INT", "FLOAT") and isinstance(value, bool)):
        return f"{where}: expected {kind}"
    if kind in ("INT", "FLOAT"):
        lo, hi = options.get("min"), options.get("max")
        if not math.isfinite(value) or lo is not None and value < lo or hi is not None and value > hi:
            return f"{where}: outside [{lo}, {hi}]"
    return None


def own_check(info: dict, values: dict[str, Any]) -> str | None:
    """Our node's own validate_inputs on its widget values, called as ComfyUI calls it (linked inputs are None)."""
    check = getattr(info.get("cls"), "validate_inputs", None) if overrides(info.get("cls"), "validate_inputs") else None
    if check is None:
        return None
    params = inspect.signature(check).parameters
    kwargs = values if any(p.kind is p.VAR_KEYWORD for p in params.values()) else {
        name: values.get(name) for name in params}
    result = check(**kwargs)
    return None if result is True else f"validate_inputs says {result!r}"


# =============================================================================================== the validator
def node_problems(node: dict, info: dict) -> list[str]:
    """Problems of one UI node against its schema: its sockets, outputs and widget values."""
    problems = []
    sockets = socket_types(info)
    names = {name for name, *_ in smoke.schema_inputs(info)}
    for entry in node.get("inputs", []):
        if entry["name"] not in names:
            problems.append(f"input {entry['name']!r} is not in the schema")
        elif entry["name"] in sockets and entry.get("type") != sockets[entry["name"]][0]:
            problems.append(f"input {entry['name']} has type {entry.get('type')}, schema {sockets[entry['name']][0]}")
    linked = {e["name"] for e in node.get("inputs", []) if e.get("link") is not None}
    for name, (_, optional) in sockets.items():
        if not optional and name not in linked:
            problems.append(f"required input {name!r} is not linked")
    for group in ONE_OF.get(node["type"], []):
        if not linked & set(group):
            problems.append(f"link one of {group}")
    found = [(o.get("name"), o.get("type")) for o in node.get("outputs", [])]
    if found != outputs_of(info):
        problems.append(f"outputs {found}, schema {outputs_of(info)}")
    values = list(node.get("widgets_values") or [])
    widgets = [(n, k, o, smoke.widget_slots(n, k, o)) for n, k, o, _ in smoke.schema_inputs(info)]
    widgets = [w for w in widgets if w[3]]
    if len(values) != sum(w[3] for w in widgets):
        return problems + [f"{len(values)} widget values, expected {sum(w[3] for w in widgets)} "
                           f"({[w[0] for w in widgets]})"]
    by_name, i = {}, 0
    for name, kind, opts, slots in widgets:
        by_name[name] = values[i]
        problems += [p for p in [value_problem(name, kind, opts, values[i])] if p]
        for extra in values[i + 1:i + slots]:  # the control_after_generate mode, then the upload button's value
            if extra not in CONTROL_VALUES | {"image"}:
                problems.append(f"{name}: UI-only value {extra!r} is neither a control mode nor 'image'")
        i += slots
    return problems or [p for p in [own_check(info, by_name)] if p]


def validate(wf: dict, schemas: Schemas) -> list[str]:
    """Every problem of a UI-format workflow against ``schemas``; [] when it is valid."""
    problems = [f"top-level key {k!r} missing" for k in ("last_node_id", "last_link_id", "nodes", "links", "groups",
                                                           "version") if k not in wf]
    if wf.get("version") != 0.4:
        problems.append(f"version {wf.get('version')!r}, expected 0.4")
    nodes = {n["id"]: n for n in wf.get("nodes", [])}
    links = {link[0]: link for link in wf.get("links", [])}
    if len(nodes) != len(wf.get("nodes", [])) or len(links) != len(wf.get("links", [])):
        problems.append("node or link ids repeat")
    if nodes and wf.get("last_node_id", -1) < max(nodes) or links and wf.get("last_link_id", -1) < max(links):
        problems.append(f"last_node_id/last_link_id below the largest id ({wf.get('last_node_id')}, "
                        f"{wf.get('last_link_id')})")
    for nid, node in nodes.items():
        if node.get("type") in ("Note", "MarkdownNote"):
            if not (len(node.get("widgets_values") or []) == 1 and isinstance(node["widgets_values"][0], str)):
                problems.append(f"node {nid} ({node['type']}): widgets_values must be [text]")
        elif node.get("type") not in schemas:
            problems.append(f"node {nid} ({node.get('type')}): unknown node type")
        else:
            problems += [f"node {nid} ({node['type']}): {p}" for p in node_problems(node, schemas[node["type"]])]
    for lid, link in links.items():
        if len(link) != 6 or link[1] not in nodes or link[3] not in nodes:
            problems.append(f"link {lid}: expected [id, from, from_slot, to, to_slot, TYPE] between existing nodes")
            continue
        _, src, src_slot, dst, dst_slot, typ = link
        outs, ins = nodes[src].get("outputs", []), nodes[dst].get("inputs", [])
        if not (0 <= src_slot < len(outs) and 0 <= dst_slot < len(ins)):
            problems.append(f"link {lid}: slot out of range")
            continue
        if lid not in (outs[src_slot].get("links") or []) or ins[dst_slot].get("link") != lid:
            problems.append(f"link {lid}: node {src} output {src_slot} and node {dst} input {dst_slot} disagree")
        dst_type = ins[dst_slot].get("type")
        if nodes[dst]["type"] in schemas:
            dst_type = socket_types(schemas[nodes[dst]["type"]]).get(ins[dst_slot]["name"], (dst_type,))[0]
        if typ != outs[src_slot].get("type") or not types_match(typ, dst_type):
            problems.append(f"link {lid}: {outs[src_slot].get('type')} from node {src} into {dst_type} input "
                            f"{ins[dst_slot]['name']!r} of node {dst} (link says {typ})")
    for nid, node in nodes.items():
        ends = [(e["link"], 3, 4, slot) for slot, e in enumerate(node.get("inputs", [])) if e.get("link") is not None]
        ends += [(lid, 1, 2, slot) for slot, o in enumerate(node.get("outputs", [])) for lid in o.get("links") or []]
        for lid, node_at, slot_at, slot in ends:
            if lid not in links or links[lid][node_at] != nid or links[lid][slot_at] != slot:
                problems.append(f"node {nid} slot {slot}: link {lid} is not in links at this end")
    return problems


def prompt_problems(prompt: dict, schemas: Schemas) -> list[str]:
    """Problems of a ``/prompt`` workflow (the tiny variants): known classes, required inputs, links to existing
    outputs of a matching type, widget values valid (with ``schemas`` listing the real files, file names must be
    among them)."""
    problems = []
    for nid, node in prompt.items():
        info = schemas.get(node["class_type"])
        if info is None:
            problems.append(f"node {nid}: unknown class_type {node['class_type']}")
            continue
        given = dict(node["inputs"])
        for name, kind, opts, optional in smoke.schema_inputs(info):
            value = given.pop(name, None)
            if value is None:
                problems += [] if optional else [f"node {nid}: required input {name!r} missing"]
            elif isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                src = schemas.get(prompt.get(value[0], {}).get("class_type"))
                out = src["output"][value[1]] if src and 0 <= value[1] < len(src["output"]) else None
                if not types_match(out, kind):
                    problems.append(f"node {nid}: {name} ({kind}) <- {out} from {value}")
            elif smoke.widget_slots(name, kind, opts):
                problems += [f"node {nid}: {p}" for p in [value_problem(name, kind, opts, value)] if p]
            else:
                problems.append(f"node {nid}: socket {name} holds a literal {value!r}")
        problems += [f"node {nid}: input {name!r} is not in the schema" for name in given]
    return problems


# =============================================================================================== stream rules
def stream_problems(prompt: dict) -> list[str]:
    """Runtime rules the schemas cannot express: a stream without a window holds at most 21 latent frames (Rolling
    Forcing keeps its own window and takes none), an image-to-video start needs a frame-wise model, and a schedule
    fits the chunks its node generates."""
    from causal_forcing_core.errors import CausalForcingError
    from causal_forcing_core.schedule import parse_schedule

    def source(value: Any) -> dict:
        return prompt[value[0]]

    def model(start: dict) -> tuple[str, str]:
        """(variant, file name) of a Start's model: its loader, through LoRA nodes; a native model's file is its
        native loader's, through the MODEL-to-MODEL nodes before it."""
        node = source(start["inputs"]["model"])
        while node["class_type"] == "CausalForcingLoRA":
            node = source(node["inputs"]["model"])
        variant, upstream = node["inputs"].get("variant", "auto"), node
        while "model_name" not in upstream["inputs"] and "unet_name" not in upstream["inputs"]:
            upstream = source(upstream["inputs"]["model"])
        return variant, upstream["inputs"].get("model_name") or upstream["inputs"]["unet_name"]

    def frames_per_chunk(start: dict) -> int:
        variant, name = model(start)
        return 1 if variant.startswith("framewise") or (variant == "auto" and "framewise" in name) else 3

    def rolling(start: dict) -> bool:  # Rolling Forcing keeps its own window
        return model(start)[0].startswith("rolling")

    def chunks(node: dict, fpc: int) -> int:
        if node["class_type"] == "CausalForcingLive":
            length, unit = node["inputs"]["max_seconds"], "seconds"
        else:
            length, unit = node["inputs"]["length"], node["inputs"]["unit"]
        return length if unit == "chunks" else max(1, math.ceil(length / (4 * fpc / 16) - 1e-9))

    def origin(node: dict) -> tuple[dict, int]:  # (Start node, latent frames before this node's chunks)
        src = source(node["inputs"]["stream"])
        if src["class_type"] == "CausalForcingStart":
            return src, int("start_image" in src["inputs"])
        start, before = origin(src)
        return start, before + chunks(src, frames_per_chunk(start)) * frames_per_chunk(start)

    problems = []
    for nid, node in prompt.items():
        inputs = node["inputs"]
        if node["class_type"] == "CausalForcingLive" and inputs.get("decoder") == "vae" and not (
                {"vae", "cf_vae"} & set(inputs)):
            problems.append(f"node {nid}: decoder vae needs a vae or cf_vae")
        if node["class_type"] not in ("CausalForcingGenerate", "CausalForcingGenerateSchedule", "CausalForcingLive"):
            continue
        start, before = origin(node)
        fpc = frames_per_chunk(start)
        n = chunks(node, fpc)
        if rolling(start) and (start["inputs"]["window_frames"] or start["inputs"]["sink_frames"]):
            problems.append(f"node {nid}: Rolling Forcing keeps its own window; window and sink must be 0")
        if not rolling(start) and not start["inputs"]["window_frames"] and before + n * fpc > TRAINED_FRAMES:
            problems.append(f"node {nid}: the stream reaches {before + n * fpc} latent frames without a window "
                            f"(at most {TRAINED_FRAMES})")
        if "start_image" in start["inputs"] and fpc != 1:
            problems.append(f"node {nid}: image-to-video needs a frame-wise model")
        if node["class_type"] == "CausalForcingGenerateSchedule":
            schedule = source(inputs["schedule"])["inputs"]
            try:
                entries = parse_schedule(schedule["schedule"], n,
                                         chunk_seconds=fpc * 4 / 16 if schedule["unit"] == "seconds" else None)
            except CausalForcingError as err:
                problems.append(f"node {nid}: the schedule does not fit {n} chunks: {err}")
                continue
            if len({e.start for e in entries}) != len(entries):
                problems.append(f"node {nid}: two schedule prompts start at the same chunk")
    return problems


# =============================================================================================== fixtures
def _load(name: str) -> dict:
    return smoke.load_workflow(name)


NAMES = smoke.workflow_names()
TOY_NAMES = [n for n in NAMES if smoke.is_toy(n)]


@pytest.fixture(scope="session")
def schemas(pack: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Schemas:
    """Core and pack schemas; the pack's file-name combos found with a probe model folder."""
    probe = tmp_path_factory.mktemp("probe_models")
    for folder in MODEL_FOLDERS:
        (probe / folder).mkdir()
        (probe / folder / PROBE_FILE).write_bytes(b"")
    (probe / "text_encoders" / PROBE_FOLDER).mkdir()
    (probe / "text_encoders" / PROBE_FOLDER / "tokenizer.json").write_text("{}")
    return {**CORE_NODES, **probed_pack_schemas(pack, probe)}


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder written by scripts/make_tiny_models.py."""
    spec = importlib.util.spec_from_file_location("cf_make_tiny_models", TINY_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    root = tmp_path_factory.mktemp("tiny_models")
    module.write_tiny_models(root)
    return root


# =============================================================================================== tests: the files
def test_the_workflows_are_there_and_listed() -> None:
    assert len(NAMES) >= 6
    readme = (UI_DIR / "README.md").read_text()
    for name in NAMES:
        assert re.fullmatch(r"[a-z0-9_]+", name) and f"{name}.json" in readme, name
    assert not (ROOT / "tests" / "workflows_api").exists(), "the /prompt forms are derived, not committed"


@pytest.mark.parametrize("name", NAMES)
def test_workflow_is_written_as_the_frontend_exports_it(name: str) -> None:
    """Export writes JSON.stringify(workflow, null, 2) with the frontend's version and the workflow's id."""
    text = (UI_DIR / f"{name}.json").read_text()
    wf = json.loads(text)
    assert text == json.dumps(wf, indent=2, ensure_ascii=False), "not as Export writes it (edited by hand?)"
    assert re.fullmatch(r"1\.\d+\.\d+", wf["extra"]["frontendVersion"]), wf["extra"]
    assert re.fullmatch(r"[0-9a-f-]{36}", wf["id"]), wf.get("id")


@pytest.mark.parametrize("name", NAMES)
def test_workflow_is_valid(name: str, schemas: Schemas) -> None:
    wf = _load(name)
    assert validate(wf, schemas) == []
    assert stream_problems(smoke.api_prompt(wf, schemas)) == []


@pytest.mark.parametrize("name", NAMES)
def test_workflow_has_a_note_naming_its_files(name: str) -> None:
    wf = _load(name)
    notes = "\n".join(n["widgets_values"][0] for n in wf["nodes"] if n["type"] in ("Note", "MarkdownNote"))
    assert notes, "every workflow explains itself in a note"
    folders = {"CausalForcingModelLoader": "diffusion_models", "CLIPLoader": "text_encoders", "VAELoader": "vae",
               "CausalForcingLoRA": "loras"}
    for node in wf["nodes"]:
        value = (node.get("widgets_values") or [None])[0]
        if isinstance(value, str) and value.startswith(EMBEDDED_TAG):  # the toy model ships with the pack
            assert f"`{value}`" in notes and "no downloads" in notes, f"the note does not name {value}"
        elif node["type"] in folders:
            assert f"{folders[node['type']]}/{value}" in notes, f"the note does not say where {value} goes"


#: loaders whose first widget names a model file, and the folder the Missing Models dialog puts it in
MODEL_LOADERS = {"CausalForcingModelLoader": "diffusion_models", "UNETLoader": "diffusion_models",
                 "CausalForcingLoRA": "loras", "CLIPLoader": "text_encoders", "VAELoader": "vae"}


@pytest.mark.parametrize("name", [n for n in NAMES if n not in TOY_NAMES])
def test_every_model_file_has_its_download_address(name: str) -> None:
    """The frontend's Missing Models dialog offers what a node's ``properties.models`` lists: every model file a
    workflow loads is there under its widget's name and folder, with an https address on the hub; a student's
    address is its release's file (causal_forcing_core/students.py). LoraLoaderModelOnly's file is the user's own
    LoRA (any LoRA of the backbone), so it has none."""
    from causal_forcing_core.students import student_for_file

    for node in _load(name)["nodes"]:
        folder = MODEL_LOADERS.get(node["type"])
        if folder is None:
            continue
        file_name = node["widgets_values"][0]
        listed = {(m["name"], m["directory"]): m["url"] for m in node.get("properties", {}).get("models", [])}
        url = listed.get((file_name, folder))
        assert url and url.startswith("https://huggingface.co/"), f"node {node['id']}: no address for {file_name}"
        found = student_for_file(file_name) if folder == "diffusion_models" else None
        if found is not None:
            release = found[1]
            assert url == f"https://huggingface.co/{release.repo}/resolve/main/{release.filename}?download=true"
        if node["type"] == "CausalForcingLoRA" and file_name.startswith("longlive"):
            lora = student_for_file(file_name)[1].lora
            assert url.split("?")[0].endswith(f"/{lora.filename}")


@pytest.mark.parametrize("name", NAMES)
def test_layout_is_readable(name: str) -> None:
    """Nodes (with their title bars) do not overlap, groups do not overlap, and each group holds whole nodes."""
    wf = _load(name)
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


def test_api_prompt_takes_widget_values_by_name_and_skips_ui_only_values(schemas: Schemas) -> None:
    wf = _load("causal_forcing_prompt_switch")
    start = next(n for n in wf["nodes"] if n["type"] == "CausalForcingStart")
    prompt = smoke.api_prompt(wf, schemas)
    inputs = prompt[str(start["id"])]["inputs"]
    assert "fixed" in start["widgets_values"] and "fixed" not in inputs.values()  # seed's control mode is UI-only
    assert inputs["seed"] == 42 and inputs["image_fit"] == "crop" and inputs["model"][1] == 0
    assert not any(n["class_type"] == "MarkdownNote" for n in prompt.values())
    third = [n for n in wf["nodes"] if n["type"] == "CLIPTextEncode"][2]
    third["widgets_values"][0] = "another prompt"
    assert smoke.api_prompt(wf, schemas)[str(third["id"])]["inputs"]["text"] == "another prompt"


# =============================================================================================== tests: tiny variants
@pytest.mark.parametrize("name", [n for n in NAMES if not smoke.is_toy(n)])
def test_tiny_variant_uses_only_the_tiny_models(name: str, pack: ModuleType, tiny_models: Path,
                                                schemas: Schemas) -> None:
    original = smoke.api_prompt(_load(name), schemas)
    before = copy.deepcopy(original)
    tiny = smoke.tiny_variant(original)
    assert original == before and smoke.tiny_variant(original) == tiny  # a copy, deterministic
    # every combo of our nodes, file names included, is one of the options with the tiny model folder
    assert prompt_problems(tiny, {**CORE_NODES, **pack_schemas(pack, tiny_models)}) == []
    assert stream_problems(tiny) == []
    kinds = {n["class_type"] for n in tiny.values()}
    assert not kinds & {"CLIPLoader", "VAELoader", "CLIPTextEncode"}, kinds
    for node in tiny.values():
        inputs = node["inputs"]
        if node["class_type"] == "LoadImage":
            assert inputs["image"] == "example.png"  # ships in ComfyUI's input folder
        if node["class_type"] == "CausalForcingStart":
            assert (inputs["width"], inputs["height"]) == (64, 64)
        if node["class_type"] in ("CausalForcingGenerate", "CausalForcingGenerateSchedule"):
            assert inputs["unit"] == "chunks" and inputs["length"] <= 6
        if node["class_type"] == "CausalForcingLive":
            assert inputs["max_seconds"] <= 6 and inputs["realtime"] is False and "text_encoder" in inputs
        for key in ("text", "schedule", "prompt"):
            for part in re.split(r"[|\n]", inputs.get(key) if isinstance(inputs.get(key), str) else ""):
                assert len(part.split(":", 1)[-1].split()) <= 12, part


def test_tiny_names_are_what_make_tiny_models_writes(tiny_models: Path) -> None:
    for folder, name in (("diffusion_models", smoke.TINY_CHUNKWISE), ("diffusion_models", smoke.TINY_FRAMEWISE),
                         ("text_encoders", smoke.TINY_TEXT_ENCODER), ("text_encoders", smoke.TINY_TOKENIZER),
                         ("vae", smoke.TINY_VAE), ("diffusion_models", smoke.TINY_WAN_STUDENT),
                         ("loras", smoke.TINY_WAN_LORA), ("text_encoders", smoke.TINY_WIDE_TEXT_ENCODER)):
        assert (tiny_models / folder / name).exists(), f"{folder}/{name}"


def test_native_vae_tiny_variant_keeps_load_vae(schemas: Schemas) -> None:
    tiny = smoke.tiny_variant(smoke.api_prompt(_load("causal_forcing_t2v_chunkwise"), schemas), native_vae=True)
    loaders = [n for n in tiny.values() if n["class_type"] == "VAELoader"]
    assert [n["inputs"] for n in loaders] == [{"vae_name": smoke.TINY_NATIVE_VAE}]


# =============================================================================================== tests: toy workflows
def test_there_are_toy_workflows_and_no_toy_image_to_video() -> None:
    assert TOY_NAMES == ["causal_forcing_toy_live", "causal_forcing_toy_long_video", "causal_forcing_toy_prompt_switch",
                         "causal_forcing_toy_t2v"]


@pytest.mark.parametrize("name", TOY_NAMES)
def test_toy_workflow_uses_only_the_embedded_model(name: str, pack: ModuleType, schemas: Schemas) -> None:
    entries = importlib.import_module(f"{pack.__name__}.nodes.toy_entries")
    embedded = {"model_name": entries.MODEL_ENTRY, "text_encoder_name": entries.TEXT_ENCODER_ENTRY,
                "tokenizer": entries.TOKENIZER_ENTRY, "vae_name": entries.VAE_ENTRY}
    prompt = smoke.api_prompt(_load(name), schemas)
    kinds = {n["class_type"] for n in prompt.values()}
    assert not kinds & {"CLIPLoader", "VAELoader", "CLIPTextEncode", "LoadImage"}, kinds
    assert kinds & {"SaveVideo", "CausalForcingSaveVideo"}, kinds
    from causal_forcing_core.schedule import schedule_prompts
    from causal_forcing_core.toy.world import parse_caption

    for nid, node in prompt.items():
        inputs = node["inputs"]
        for key in set(embedded) & set(inputs):
            assert inputs[key] == embedded[key], f"node {nid}: {key}={inputs[key]!r}"
        if node["class_type"] == "CausalForcingStart":
            assert (inputs["width"], inputs["height"]) == (64, 64) and "start_image" not in inputs
        if node["class_type"] == "CausalForcingTextEncode":  # every prompt is a toy caption
            parse_caption(inputs["text"])
        if node["class_type"] == "CausalForcingPromptSchedule":
            for text in schedule_prompts(inputs["schedule"], chunk_seconds=0.75):
                parse_caption(text)


# =============================================================================================== tests: the checks bite
def _node(wf: dict, kind: str, index: int = 0) -> dict:
    return [n for n in wf["nodes"] if n["type"] == kind][index]


def _unlink(wf: dict, kind: str, name: str) -> None:
    """Remove the link feeding input ``name`` of the ``kind`` node, everywhere the UI format records it."""
    entry = next(i for i in _node(wf, kind)["inputs"] if i["name"] == name)
    wf["links"] = [link for link in wf["links"] if link[0] != entry["link"]]
    for out in (o for n in wf["nodes"] for o in n["outputs"]):
        if entry["link"] in (out.get("links") or []):
            out["links"].remove(entry["link"])
    entry["link"] = None


def _clip_into_model(wf: dict) -> None:
    """The Start's model input fed from the CLIP loader (CLIP into CF_MODEL), consistently on both ends."""
    entry = next(i for i in _node(wf, "CausalForcingStart")["inputs"] if i["name"] == "model")
    link = next(link for link in wf["links"] if link[0] == entry["link"])
    _node(wf, "CausalForcingModelLoader")["outputs"][0]["links"].remove(link[0])
    _node(wf, "CLIPLoader")["outputs"][0]["links"].append(link[0])
    link[1], link[2], link[5] = _node(wf, "CLIPLoader")["id"], 0, "CLIP"


def _widget(kind: str, index: int, value: Any) -> Callable[[dict], None]:
    return lambda wf: _node(wf, kind)["widgets_values"].__setitem__(index, value)


BREAKS: dict[str, tuple[Callable[[dict], None], str]] = {
    "wrong link type": (_clip_into_model, "CLIP from node"),
    "out-of-range widget": (_widget("CausalForcingStart", 0, 5000), "outside"),  # width > 4096
    "size not a multiple of 16": (_widget("CausalForcingStart", 0, 830), "validate_inputs"),
    "widget of the wrong type": (_widget("CreateVideo", 0, "16"), "expected FLOAT"),
    "unknown node type": (lambda wf: _node(wf, "CausalForcingDecode").update(type="CausalForcingDecoder"),
                          "unknown node type"),
    "required input unlinked": (lambda wf: _unlink(wf, "CausalForcingStart", "positive"), "required input 'positive'"),
    "decode without vae": (lambda wf: _unlink(wf, "CausalForcingDecode", "vae"), "link one of"),
    "widget count": (lambda wf: _node(wf, "CausalForcingStart")["widgets_values"].remove("fixed"),
                     "widget values, expected"),
    "control mode": (_widget("CausalForcingStart", 3, "sometimes"), "neither a control mode"),
    "our combo": (_widget("CausalForcingGenerate", 1, "minutes"), "not one of"),
    "core combo": (_widget("SaveVideo", 1, "avi"), "not one of"),
    "file name": (_widget("CausalForcingModelLoader", 0, "causal_forcing_chunkwise.txt"), "expected a file name"),
    "dangling link id": (lambda wf: wf["links"].pop(), "is not in links"),
    "links disagree": (lambda wf: wf["links"][2].__setitem__(4, 0), "disagree"),  # CONDITIONING into model
    "last ids": (lambda wf: wf.update(last_link_id=1), "last_link_id"),
    "socket type": (lambda wf: _node(wf, "CausalForcingStart")["inputs"][0].update(type="MODEL"), "has type MODEL"),
    "outputs": (lambda wf: _node(wf, "VAELoader")["outputs"][0].update(type="LATENT"), "outputs"),
    "input not in the schema": (lambda wf: _node(wf, "CreateVideo")["inputs"][0].update(name="frames"),
                                "input 'frames' is not in the schema"),
}


@pytest.mark.parametrize("case", sorted(BREAKS))
def test_validator_catches(case: str, schemas: Schemas) -> None:
    wf = _load("causal_forcing_t2v_chunkwise")
    assert validate(wf, schemas) == []
    breaker, message = BREAKS[case]
    breaker(wf)
    problems = validate(wf, schemas)
    assert any(message in p for p in problems), problems


STREAM_BREAKS = {
    "stream too long": ("causal_forcing_t2v_chunkwise",
                        lambda p: _by_class(p, "CausalForcingGenerate").update(length=8), "without a window"),
    "image to video chunk-wise": ("causal_forcing_i2v", lambda p: _by_class(p, "CausalForcingModelLoader").update(
        model_name="causal_forcing_chunkwise.pt", variant="chunkwise-4step"), "needs a frame-wise model"),
    "schedule past its node": ("causal_forcing_prompt_schedule",  # the schedule switches at chunk 5
                               lambda p: _by_class(p, "CausalForcingGenerateSchedule").update(length=4),
                               "does not fit"),
    "live past 21 frames without a window": ("causal_forcing_live", lambda p: _by_class(p, "CausalForcingStart").update(
        window_frames=0, sink_frames=0), "without a window"),
    "live vae decoder without a vae": ("causal_forcing_live", lambda p: _live_vae_decoder_without_vae(p),
                                       "decoder vae needs"),  # defined below
    "rolling with a window": ("causal_forcing_long_video", lambda p: _by_class(p, "CausalForcingStart").update(
        window_frames=12, sink_frames=3), "keeps its own window"),
    "long video without rolling or a window": ("causal_forcing_long_video", lambda p: _by_class(
        p, "CausalForcingModelLoader").update(variant="chunkwise-4step"), "without a window"),
}


def _live_vae_decoder_without_vae(prompt: dict) -> None:
    live = _by_class(prompt, "CausalForcingLive")
    live.pop("vae")
    live["decoder"] = "vae"


def _by_class(prompt: dict, kind: str) -> dict:
    return next(n for n in prompt.values() if n["class_type"] == kind)["inputs"]


@pytest.mark.parametrize("case", sorted(STREAM_BREAKS))
def test_stream_rules_catch(case: str, schemas: Schemas) -> None:
    name, breaker, message = STREAM_BREAKS[case]
    prompt = smoke.api_prompt(_load(name), schemas)
    assert stream_problems(prompt) == []
    breaker(prompt)
    assert any(message in p for p in stream_problems(prompt)), stream_problems(prompt)


def test_prompt_check_catches(schemas: Schemas) -> None:
    prompt = smoke.api_prompt(_load("causal_forcing_t2v_chunkwise"), schemas)
    assert prompt_problems(prompt, schemas) == []
    vae = next(k for k, v in prompt.items() if v["class_type"] == "VAELoader")
    _by_class(prompt, "CreateVideo").update(images=[vae, 0], fps=500.0)
    _by_class(prompt, "CausalForcingStart").pop("seed")
    problems = prompt_problems(prompt, schemas)
    for message in ("(IMAGE) <- VAE", "outside", "required input 'seed'"):
        assert any(message in p for p in problems), (message, problems)


def test_types_match_follows_comfyui() -> None:
    assert types_match("IMAGE", "IMAGE") and types_match("IMAGE", "*") and types_match("*", "LATENT")
    assert types_match("IMAGE,MASK", "MASK") and types_match("INT", "FLOAT,INT")
    assert not types_match("IMAGE", "LATENT") and not types_match("CF_STREAM", "CF_MODEL")


def test_the_tiny_variant_keeps_rolling_forcing(pack: ModuleType) -> None:
    """The smoke runs map students onto the tiny ones; a Rolling Forcing variant stays, so the long-video workflow
    runs Rolling Forcing in a real ComfyUI (the tiny chunk-wise model runs it too), other variants become auto."""
    loader = {"class_type": "CausalForcingModelLoader", "inputs": {"model_name": "x.safetensors", "variant": "rolling-4step",
                                                                  "weight_dtype": "auto", "preview": "auto"}}
    mapped = smoke.tiny_variant({"1": loader})["1"]["inputs"]
    assert mapped["variant"] == "rolling-4step" and mapped["model_name"] == smoke.TINY_CHUNKWISE
    loader["inputs"]["variant"] = "chunkwise-4step"
    assert smoke.tiny_variant({"1": loader})["1"]["inputs"]["variant"] == "auto"
    long_video = smoke.tiny_variant(workflow_prompt("causal_forcing_long_video", pack))
    assert [n["inputs"]["variant"] for n in long_video.values() if "variant" in n["inputs"]] == ["rolling-4step"]
