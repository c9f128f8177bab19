"""Build the example workflows of the pack from compact graph descriptions.

    python scripts/build_workflows.py            # (re)write the files
    python scripts/build_workflows.py --check    # exit 1 when the committed files differ from what it would write
    python scripts/build_workflows.py --tiny DIR # also write the tiny-model API variants (smoke runs) into DIR
    python scripts/build_workflows.py --core-schemas object_info.json   # refresh tests/data/core_node_schemas.json

writes, for every workflow described in :func:`workflows`:

- ``example_workflows/<name>.json``: the graph in ComfyUI's UI format (workflow JSON 0.4), which ComfyUI lists under
  Workflow -> Browse Templates -> Custom Nodes and which loads when dropped on the canvas;
- ``tests/workflows_api/<name>.json``: the same graph in API format (``POST /prompt``'s ``prompt``), for headless
  runs and tests.

Node schemas come from the pack itself (``INPUT_TYPES`` / ``RETURN_TYPES``) and, for ComfyUI's core nodes, from
``tests/data/core_node_schemas.json`` (a ComfyUI server's ``/object_info``). Widget values are given by input
name; an omitted widget takes its schema default, and the builder writes them in widget order, so a node that gains
or reorders a widget makes ``--check`` fail until the files are rebuilt. Stale ``*.json`` files in both folders are
removed on a rebuild: both are generated.

:func:`tiny_variant` maps an API workflow onto the tiny random models of ``scripts/make_tiny_models.py`` (small
size, few chunks, the pack's own text encoder and VAE loaders), for smoke runs in a real ComfyUI.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
UI_DIR = ROOT / "example_workflows"
API_DIR = ROOT / "tests" / "workflows_api"
CORE_SCHEMAS = ROOT / "tests" / "data" / "core_node_schemas.json"
if str(ROOT / "scripts") not in sys.path:
    sys.path.insert(0, str(ROOT / "scripts"))
from pack_import import import_pack  # noqa: E402 - the pack under the name tests use: one import per session

#: input types the frontend shows as widgets (combos are lists, or "COMBO" in V3 schemas)
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
#: UI-only nodes: they have no schema on the server and are dropped from API prompts
VIRTUAL_NODES = ("MarkdownNote", "Note", "Reroute", "PrimitiveNode")

# ---------------------------------------------------------------------------------------------- model file names
CF_CHUNKWISE = "causal_forcing_chunkwise.safetensors"
CF_FRAMEWISE = "causal_forcing_framewise.safetensors"
CF_LONGVIDEO = "causal_forcing_longvideo.safetensors"
UMT5 = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
WAN_VAE = "wan_2.1_vae.safetensors"
TAEW = "taew2_1.safetensors"
START_IMAGE = "example.png"  # ships in ComfyUI's input folder
_REPACKAGED = "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files"
#: download links shown by the frontend's missing-models dialog (the same as ComfyUI's own Wan templates)
MODEL_URLS = {
    UMT5: (f"{_REPACKAGED}/text_encoders/{UMT5}?download=true", "text_encoders"),
    WAN_VAE: (f"{_REPACKAGED}/vae/{WAN_VAE}?download=true", "vae"),
}

# ---------------------------------------------------------------------------------------------- the toy model
#: the loader choices of the embedded toy model (nodes/toy_entries.py; the test checks they match)
TOY_MODEL = "[embedded toy] cf_toy_chunkwise.safetensors"
TOY_TEXT_ENCODER = "[embedded toy] cf_toy_umt5.safetensors"
TOY_TOKENIZER = "[embedded toy] cf_toy_tokenizer"
TOY_VAE = "[embedded toy] cf_toy_vae.safetensors"
TOY_SIZE = 64
#: workflows named so run the embedded toy model as they are (no tiny-model substitution)
TOY_PREFIX = "causal_forcing_toy_"

# ---------------------------------------------------------------------------------------------- tiny models
#: what scripts/make_tiny_models.py writes (names only; the test checks them against a real run of it)
TINY_CHUNKWISE = "cf_tiny_chunkwise.safetensors"
TINY_FRAMEWISE = "cf_tiny_framewise.safetensors"
TINY_TEXT_ENCODER = "cf_tiny_umt5.pth"
TINY_TOKENIZER = "cf_tiny_umt5_tokenizer"
TINY_VAE = "cf_tiny_vae.safetensors"
#: the random VAE of the real Wan 2.1 shape (make_tiny_models.py --full-size-vae) that ComfyUI's Load VAE reads
TINY_NATIVE_VAE = "cf_random_wan21_vae.safetensors"
TINY_SIZE = 64
TINY_MAX_CHUNKS = 3  # per Generate node
TINY_SCHEDULE_CHUNKS = 6  # per Generate (Schedule) node
TINY_WINDOW, TINY_SINK = 6, 3
TINY_MAX_WORDS = 12
TINY_LIVE_SECONDS = 6  # per Live node (8 chunks), generated as fast as possible

# ---------------------------------------------------------------------------------------------- colours
PROMPT_COLOR = ("#232", "#353")
NOTE_COLOR = ("#432", "#653")
GROUP_COLOR = "#3f789e"
#: x of the layout columns: note, loaders, prompts + Start, generators, then decode and save
X_NOTE, X_LOAD, X_PROMPT, X_GEN = -480, 0, 440, 920
#: Generate nodes get the pack's live player (js/causal_forcing_player.js) below their widgets: room for a 832x480 video
GENERATE_SIZE = (420, 440)
#: the canvas view a workflow opens with fits the graph into a window of about this size (screen pixels)
VIEW_SIZE = (1600, 900)
#: ... but not below this scale, where the frontend stops drawing widgets (the user pans instead)
VIEW_MIN_SCALE = 0.62


# =============================================================================================== schemas
@dataclass(frozen=True)
class InputSpec:
    name: str
    type: Any  # a type name, or a list of combo options
    options: dict[str, Any]
    optional: bool

    @property
    def combo(self) -> list | None:
        if isinstance(self.type, list):
            return self.type
        if self.type == "COMBO":
            return list(self.options.get("options", []))
        return None

    @property
    def is_widget(self) -> bool:
        if self.options.get("forceInput"):
            return False
        return isinstance(self.type, list) or self.type in WIDGET_TYPES

    @property
    def control_after_generate(self) -> bool:
        """An extra UI-only widget after the value (``fixed``/``randomize``...); the frontend also adds it to
        every INT named seed or noise_seed."""
        flag = self.options.get("control_after_generate")
        if flag is not None:
            return bool(flag)
        return self.type == "INT" and self.name in ("seed", "noise_seed")

    @property
    def upload_widget(self) -> bool:
        """A file combo with an upload button: one more UI-only widget value (``"image"``) after it."""
        return any(self.options.get(k) for k in ("image_upload", "video_upload", "animated_image_upload"))

    @property
    def ui_slots(self) -> int:
        return 1 + int(self.control_after_generate) + int(self.upload_widget)


@dataclass(frozen=True)
class NodeSchema:
    type: str
    display_name: str
    inputs: tuple[InputSpec, ...]
    outputs: tuple[tuple[str, str], ...]  # (name, type)

    @property
    def widgets(self) -> list[InputSpec]:
        return [i for i in self.inputs if i.is_widget]

    @property
    def sockets(self) -> list[InputSpec]:
        return [i for i in self.inputs if not i.is_widget]

    def input(self, name: str) -> InputSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(f"{self.type} has no input {name!r} (inputs: {[i.name for i in self.inputs]})")

    def output_index(self, name_or_index: str | int) -> int:
        if isinstance(name_or_index, int):
            return name_or_index
        names = [n for n, _ in self.outputs]
        if name_or_index not in names:
            raise KeyError(f"{self.type} has no output {name_or_index!r} (outputs: {names})")
        return names.index(name_or_index)


def _spec(name: str, value: Any, optional: bool) -> InputSpec:
    if isinstance(value, str):  # hidden-style shorthand
        return InputSpec(name, value, {}, optional)
    options = value[1] if len(value) > 1 and isinstance(value[1], dict) else {}
    return InputSpec(name, value[0], dict(options), optional)


def schema_from_input_types(type_name: str, display: str, input_types: dict, outputs: list[tuple[str, str]],
                            order: dict[str, list[str]] | None = None) -> NodeSchema:
    """A schema from ``INPUT_TYPES``-shaped data (required, then optional; hidden inputs are left out)."""
    inputs = []
    for section in ("required", "optional"):
        entries = input_types.get(section, {}) or {}
        names = (order or {}).get(section) or list(entries)
        inputs += [_spec(n, entries[n], section == "optional") for n in names]
    return NodeSchema(type_name, display, tuple(inputs), tuple(outputs))


def pack_schemas(pack: ModuleType | None = None) -> dict[str, NodeSchema]:
    pack = pack or import_pack()
    found = {}
    for type_name, cls in pack.NODE_CLASS_MAPPINGS.items():
        names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
        display = pack.NODE_DISPLAY_NAME_MAPPINGS.get(type_name, type_name)
        found[type_name] = schema_from_input_types(
            type_name, display, cls.INPUT_TYPES(), list(zip(names, cls.RETURN_TYPES))
        )
    return found


def core_schemas(path: Path = CORE_SCHEMAS) -> dict[str, NodeSchema]:
    data = json.loads(path.read_text())
    found = {}
    for type_name, info in data["nodes"].items():
        names = info.get("output_name") or info["output"]
        found[type_name] = schema_from_input_types(
            type_name, info.get("display_name", type_name), info["input"], list(zip(names, info["output"])),
            info.get("input_order"),
        )
    return found


def all_schemas() -> dict[str, NodeSchema]:
    return {**core_schemas(), **pack_schemas()}


# =============================================================================================== descriptions
@dataclass
class Node:
    """One node of a description: its type, where it sits, its widget values and its links by input name."""

    key: str
    type: str
    pos: tuple[float, float]
    values: dict[str, Any] = field(default_factory=dict)
    links: dict[str, tuple[str, str | int]] = field(default_factory=dict)  # input -> (source key, output)
    title: str | None = None
    color: tuple[str, str] | None = None
    size: tuple[float, float] | None = None
    controls: dict[str, str] = field(default_factory=dict)  # widget -> control_after_generate value
    models: list[str] = field(default_factory=list)  # files for the frontend's missing-models dialog


@dataclass
class Workflow:
    name: str
    nodes: list[Node]
    groups: list[tuple[str, list[str]]] = field(default_factory=list)  # (title, node keys)


def note(key: str, pos: tuple[float, float], text: str, size: tuple[float, float] = (420, 560)) -> Node:
    return Node(key, "MarkdownNote", pos, values={"text": text.strip() + "\n"}, color=NOTE_COLOR, size=size)


# =============================================================================================== the graphs
_FILES_NOTE = """
**Model files** (ComfyUI/models/...):

- `diffusion_models/{dit}`: the Causal Forcing student{dit_hint}
- `text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors` (Load CLIP, type **wan**)
- `vae/wan_2.1_vae.safetensors`
- optional `vae_approx/taew2_1.safetensors` (TAEHV): sharper live previews; *preview: auto* picks it up
"""
_CONVERT = (
    " (convert the release `{release}` from huggingface.co/zhuhz22/Causal-Forcing with "
    "`python -m causal_forcing_core convert {release_file} {dit} --variant {variant}`, or pick the `.pt` itself "
    "and set *variant*)"
)


def files_note(dit: str, release: str, variant: str) -> str:
    hint = _CONVERT.format(release=release, release_file=release.split("/")[-1], dit=dit, variant=variant)
    return _FILES_NOTE.format(dit=dit, dit_hint=hint)


def _loaders(dit: str, y0: float = 0) -> list[Node]:
    return [
        Node("model", "CausalForcingModelLoader", (X_LOAD, y0), {"model_name": dit, "variant": "auto",
                                                            "weight_dtype": "auto", "preview": "auto"}),
        Node("clip", "CLIPLoader", (X_LOAD, y0 + 200), {"clip_name": UMT5, "type": "wan", "device": "default"},
             models=[UMT5]),
        Node("vae", "VAELoader", (X_LOAD, y0 + 350), {"vae_name": WAN_VAE}, models=[WAN_VAE]),
    ]


def _prompt(key: str, pos: tuple[float, float], text: str, title: str) -> Node:
    return Node(key, "CLIPTextEncode", pos, {"text": text}, {"clip": ("clip", 0)}, title=title, color=PROMPT_COLOR,
                size=(400, 150))


def _start(pos: tuple[float, float], *, prompt: str = "prompt", window: int = 0, sink: int = 0, seed: int = 42,
           width: int = 832, height: int = 480, extra_links: dict | None = None) -> Node:
    links = {"model": ("model", 0), "positive": (prompt, 0), **(extra_links or {})}
    return Node("start", "CausalForcingStart", pos,
                {"width": width, "height": height, "seed": seed, "window_frames": window, "sink_frames": sink,
                 "image_fit": "crop"}, links, controls={"seed": "fixed"})


def _generate(key: str, pos: tuple[float, float], stream: str, length: int, *, prompt: str | None = None,
              unit: str = "chunks", title: str | None = None) -> Node:
    links = {"stream": (stream, "stream")}
    if prompt:
        links["positive"] = (prompt, 0)
    return Node(key, "CausalForcingGenerate", pos, {"length": length, "unit": unit, "recache": True}, links,
                title=title, size=GENERATE_SIZE)


def _decode_and_save(x: float, stream: str, prefix: str, webp: bool = False, y: float = 0,
                     vae_input: str = "vae") -> list[Node]:
    nodes = [
        Node("decode", "CausalForcingDecode", (x, y), {"chunk_frames": 3},
             {"stream": (stream, "stream"), vae_input: ("vae", 0)}),
        Node("video", "CreateVideo", (x, y + 200), {"fps": 16}, {"images": ("decode", 0)}),
        Node("save", "SaveVideo", (x + 380, y), {"filename_prefix": f"video/{prefix}", "format": "auto",
                                                 "codec": "auto"}, {"video": ("video", 0)}, size=(520, 560)),
    ]
    if webp:
        nodes.append(Node("webp", "SaveAnimatedWEBP", (x + 940, y),
                          {"filename_prefix": prefix, "fps": 16, "lossless": False, "quality": 90,
                           "method": "default"}, {"images": ("decode", 0)}, size=(520, 560)))
    return nodes


_TWEAK_COMMON = """
**Tweak**: *width/height* (multiples of 16; trained at 832x480), *seed* (fixed, so editing a later node re-runs only
from there), *length* (chunks or seconds). Progress and a live preview show on each Generate node while it runs.
"""


def t2v_chunkwise() -> Workflow:
    text = f"""
## Causal Forcing: text to video (chunk-wise)

A causal Wan2.1-1.3B student makes the video **3 latent frames (12 video frames) per chunk**, 4 denoising steps
each, reusing a KV cache. 7 chunks = 21 latent frames = 81 frames = 5 s at 16 fps.
{files_note(CF_CHUNKWISE, "chunkwise/causal_forcing.pt", "chunkwise-4step")}{_TWEAK_COMMON}
Without a window (*window_frames* 0) a stream holds at most 21 latent frames (7 chunks); for longer videos see the
long-video workflow. Causal Forcing Decode decodes chunk by chunk without seams; the native VAE Decode works on
the Generate node's *latent* output too.
"""
    nodes = [
        note("note", (X_NOTE, 0), text, size=(440, 640)),
        *_loaders(CF_CHUNKWISE),
        _prompt("prompt", (X_PROMPT, 0), "a red cat walks in the snow at night", "Prompt"),
        _start((X_PROMPT, 220)),
        _generate("gen", (X_GEN, 0), "start", 7, title="Generate 7 chunks (81 frames)"),
        *_decode_and_save(X_GEN + 500, "gen", "causal_forcing_t2v"),
    ]
    groups = [("Models", ["model", "clip", "vae"]), ("Prompt and stream", ["prompt", "start"]),
              ("Generate", ["gen"]), ("Decode and save", ["decode", "video", "save"])]
    return Workflow("causal_forcing_t2v_chunkwise", nodes, groups)


def t2v_framewise() -> Workflow:
    text = f"""
## Causal Forcing: text to video (frame-wise)

The frame-wise student makes **one latent frame (4 video frames) per chunk**, 4 steps each (2- and 1-step
Causal Forcing++ students work the same: load them and set *variant* when the file does not say). 21 chunks = 21
latent frames = 81 frames = 5 s. Smaller chunks mean a lower first-frame latency.
{files_note(CF_FRAMEWISE, "framewise/causal_forcing.pt", "framewise-4step")}{_TWEAK_COMMON}
Saves an mp4 (Save Video) and an animated WebP.
"""
    nodes = [
        note("note", (X_NOTE, 0), text, size=(440, 640)),
        *_loaders(CF_FRAMEWISE),
        _prompt("prompt", (X_PROMPT, 0), "a blue dog runs left in the snow", "Prompt"),
        _start((X_PROMPT, 220)),
        _generate("gen", (X_GEN, 0), "start", 21, title="Generate 21 frames (81 video frames)"),
        *_decode_and_save(X_GEN + 500, "gen", "causal_forcing_t2v_framewise", webp=True),
    ]
    groups = [("Models", ["model", "clip", "vae"]), ("Prompt and stream", ["prompt", "start"]),
              ("Generate", ["gen"]), ("Decode and save", ["decode", "video", "save", "webp"])]
    return Workflow("causal_forcing_t2v_framewise", nodes, groups)


def i2v() -> Workflow:
    text = f"""
## Causal Forcing: image to video

The start image is fitted to *width x height* (*image_fit*: crop, pad or stretch), encoded with the VAE and
becomes the first frame; a **frame-wise** student continues from it (chunk-wise students do not take images).
1 + 20 chunks = 21 latent frames = 81 frames.
{files_note(CF_FRAMEWISE, "framewise/causal_forcing.pt", "framewise-4step")}
**Image**: pick or upload one on Load Image (any size; ComfyUI/input).
{_TWEAK_COMMON}
"""
    nodes = [
        note("note", (X_NOTE, 0), text, size=(440, 680)),
        *_loaders(CF_FRAMEWISE),
        Node("image", "LoadImage", (X_LOAD, 480), {"image": START_IMAGE}, size=(340, 360)),
        _prompt("prompt", (X_PROMPT, 0), "a cat walks left in the snow", "Prompt"),
        _start((X_PROMPT, 220), extra_links={"start_image": ("image", "IMAGE"), "vae": ("vae", 0)}),
        _generate("gen", (X_GEN, 0), "start", 20, title="Generate 20 frames after the image"),
        *_decode_and_save(X_GEN + 500, "gen", "causal_forcing_i2v"),
    ]
    groups = [("Models and image", ["model", "clip", "vae", "image"]), ("Prompt and stream", ["prompt", "start"]),
              ("Generate", ["gen"]), ("Decode and save", ["decode", "video", "save"])]
    return Workflow("causal_forcing_i2v", nodes, groups)


def prompt_switch() -> Workflow:
    text = f"""
## Causal Forcing: prompt switch

One stream, three Generate nodes, each with its own prompt: chunks 0-2 follow prompt 1, chunks 3-4 prompt 2,
chunks 5-6 prompt 3 (7 chunks, 81 frames). *recache* re-encodes the cached frames under the new prompt at each
switch (LongLive re-cache), so the video follows the new prompt sooner.

Because the seed is fixed and each Generate node hands on a snapshot of the stream, **editing prompt 3 re-runs only
the last Generate node** (and the decoding); the earlier chunks come from ComfyUI's cache. Add more Generate nodes
to make more segments (a stream without a window holds 7 chunks; see the long-video workflow for more).
{files_note(CF_CHUNKWISE, "chunkwise/causal_forcing.pt", "chunkwise-4step")}{_TWEAK_COMMON}
"""
    nodes = [
        note("note", (X_NOTE, 0), text, size=(440, 720)),
        *_loaders(CF_CHUNKWISE, y0=220),
        _prompt("p1", (X_PROMPT, 0), "a red cat walks in the snow", "Prompt 1 (chunks 0-2)"),
        _start((X_PROMPT, 220), prompt="p1"),
        _generate("gen1", (X_GEN, 220), "start", 3, prompt="p1", title="Generate 3 chunks"),
        _prompt("p2", (X_GEN + 500, 0), "a red cat jumps in the snow", "Prompt 2 (chunks 3-4)"),
        _generate("gen2", (X_GEN + 500, 220), "gen1", 2, prompt="p2", title="Generate 2 chunks"),
        _prompt("p3", (X_GEN + 1000, 0), "a red cat runs right at night", "Prompt 3 (chunks 5-6)"),
        _generate("gen3", (X_GEN + 1000, 220), "gen2", 2, prompt="p3", title="Generate 2 chunks"),
        *_decode_and_save(X_GEN + 1500, "gen3", "causal_forcing_prompt_switch"),
    ]
    groups = [("Models", ["model", "clip", "vae"]), ("Segment 1", ["p1", "start", "gen1"]),
              ("Segment 2", ["p2", "gen2"]), ("Segment 3", ["p3", "gen3"]),
              ("Decode and save", ["decode", "video", "save"])]
    return Workflow("causal_forcing_prompt_switch", nodes, groups)


def _schedule_node(pos: tuple[float, float], text: str, unit: str) -> Node:
    return Node("schedule", "CausalForcingPromptSchedule", pos, {"schedule": text, "unit": unit},
                {"clip": ("clip", 0)}, color=PROMPT_COLOR, size=(420, 200))


def _generate_schedule(pos: tuple[float, float], length: int, unit: str, title: str) -> Node:
    return Node("gen", "CausalForcingGenerateSchedule", pos, {"length": length, "unit": unit, "recache": True},
                {"stream": ("start", 0), "schedule": ("schedule", 0)}, title=title, size=GENERATE_SIZE)


def prompt_schedule() -> Workflow:
    schedule = "0: a red cat walks left in the snow\n3: the cat jumps up\n5: a red cat runs right at night"
    text = f"""
## Causal Forcing: prompt schedule

One node generates the whole video and switches prompts where the schedule says: one `start: prompt` line per
prompt, *start* counted in chunks (or seconds, with *unit*) from the node's first chunk. `a | b | c` splits the
video into equal parts instead. Each distinct prompt is encoded once. 7 chunks = 81 frames.

The Start node needs a prompt of its own: give it the schedule's first prompt (it only opens the stream).
{files_note(CF_CHUNKWISE, "chunkwise/causal_forcing.pt", "chunkwise-4step")}{_TWEAK_COMMON}
"""
    nodes = [
        note("note", (X_NOTE, 0), text, size=(440, 680)),
        *_loaders(CF_CHUNKWISE, y0=220),
        _prompt("prompt", (X_PROMPT, 0), "a red cat walks left in the snow", "First prompt (opens the stream)"),
        _start((X_PROMPT, 220)),
        _schedule_node((X_GEN, 0), schedule, "chunks"),
        _generate_schedule((X_GEN, 280), 7, "chunks", "Generate 7 chunks by the schedule"),
        *_decode_and_save(X_GEN + 500, "gen", "causal_forcing_prompt_schedule"),
    ]
    groups = [("Models", ["model", "clip", "vae"]), ("Stream", ["prompt", "start"]),
              ("Schedule", ["schedule", "gen"]), ("Decode and save", ["decode", "video", "save"])]
    return Workflow("causal_forcing_prompt_schedule", nodes, groups)


def long_video() -> Workflow:
    schedule = ("0: a red cat walks in the snow\n20: the cat runs left in the snow\n"
                "40: a red cat jumps in the snow at night")
    text = f"""
## Causal Forcing: long video (60 s)

A rolling attention window keeps memory and speed flat however long the video gets: *window_frames* 12 latent
frames, of which the first 3 (*sink_frames*) stay forever as an attention sink. The schedule counts **seconds**:
three prompts over 60 s (80 chunks, 957 frames).
{files_note(CF_LONGVIDEO, "chunkwise/longvideo.pt", "chunkwise-4step")}
(`{CF_CHUNKWISE}` works too; the long-video student drifts less.)

**Memory**: generation stays flat, but decoding 60 s at 832x480 makes ~4.6 GB of frames in RAM. Lower
*width/height* or *length* if that is too much. *length* and the schedule count seconds; a chunk lasts 0.75 s.
"""
    nodes = [
        note("note", (X_NOTE, 0), text, size=(440, 680)),
        *_loaders(CF_LONGVIDEO, y0=220),
        _prompt("prompt", (X_PROMPT, 0), "a red cat walks in the snow", "First prompt (opens the stream)"),
        _start((X_PROMPT, 220), window=12, sink=3),
        _schedule_node((X_GEN, 0), schedule, "seconds"),
        _generate_schedule((X_GEN, 280), 60, "seconds", "Generate 60 s by the schedule"),
        *_decode_and_save(X_GEN + 500, "gen", "causal_forcing_long_video"),
    ]
    groups = [("Models", ["model", "clip", "vae"]), ("Stream (window 12 + sink 3)", ["prompt", "start"]),
              ("Schedule", ["schedule", "gen"]), ("Decode and save", ["decode", "video", "save"])]
    return Workflow("causal_forcing_long_video", nodes, groups)


def live() -> Workflow:
    first = "a red fox trots through fresh snow in a quiet forest"
    text = f"""
## Causal Forcing: live

**Run** the workflow, then steer the video while it plays on the **Causal Forcing Live** node: type a prompt in
the box under the player and press **Send** (or **Ctrl+Enter**); the video follows it from the next chunk.
**Pause** / **Resume** hold and continue generation, **Stop** ends the run and keeps everything made so far. The
run also ends after *max_seconds* of video (60 s = 80 chunks), when the queue is interrupted, or when this browser
tab closes. Only the tab that pressed Run can steer its run.

The first prompt is the Live node's *prompt*; give *First prompt* the same text (it opens the stream).
The stream has a rolling window (12 latent frames, 3 of them a sink), so it can run for as long as you like.
*realtime* keeps generation at most one chunk ahead of playback, so a new prompt shows up quickly.
{files_note(CF_CHUNKWISE, "chunkwise/causal_forcing.pt", "chunkwise-4step")}
**What comes out** when the run ends:

- the video as played (Save Video, 16 fps). *decoder*: *preview* is fast but rough; *vae* decodes every chunk with
  the Wan VAE at full quality, at the cost of speed;
- the prompts you sent as a schedule (`chunk: prompt` lines, shown in *Recorded prompt schedule*): paste it into
  **Causal Forcing Prompt Schedule** (*unit*: chunks) of the prompt-schedule workflow, with the same seed and
  window, to re-render the take offline.
"""
    nodes = [
        note("note", (X_NOTE, 0), text, size=(440, 620)),
        *_loaders(CF_CHUNKWISE, y0=220),
        _prompt("prompt", (X_PROMPT, 0), first, "First prompt (opens the stream)"),
        _start((X_PROMPT, 220), window=12, sink=3),
        Node("live", "CausalForcingLive", (X_GEN, 0),
             {"prompt": first, "max_seconds": 60, "realtime": True, "recache": True, "decoder": "preview"},
             {"stream": ("start", "stream"), "clip": ("clip", 0), "vae": ("vae", 0)},
             title="Causal Forcing Live: type prompts below while it runs", size=(480, 780)),
        Node("video", "CreateVideo", (X_GEN + 540, 0), {"fps": 16}, {"images": ("live", "images")}),
        Node("schedule", "PreviewAny", (X_GEN + 540, 200), {}, {"source": ("live", "schedule")},
             title="Recorded prompt schedule", size=(340, 260)),
        Node("save", "SaveVideo", (X_GEN + 920, 0), {"filename_prefix": "video/causal_forcing_live", "format": "auto",
                                                    "codec": "auto"}, {"video": ("video", 0)}, size=(520, 560)),
    ]
    groups = [("Models", ["model", "clip", "vae"]), ("Stream (window 12 + sink 3)", ["prompt", "start"]),
              ("Live", ["live"]), ("Video and schedule", ["video", "schedule", "save"])]
    return Workflow("causal_forcing_live", nodes, groups)


# ---------------------------------------------------------------------------------------------- toy workflows
def _toy_vocabulary() -> str:
    """The toy captions' vocabulary, from the core's toy world (so the notes follow it)."""
    import importlib

    world = importlib.import_module(f"{import_pack().__name__}.causal_forcing_core.toy.world")
    return world.vocabulary_help()


def toy_note(title: str, body: str) -> str:
    return f"""
## Causal Forcing toy model: {title}

**Runs out of the box, no downloads**: the pack ships a tiny toy model (a causal student of about a million parameters,
its text encoder, tokenizer and VAE, trained on a procedural world where one coloured shape moves over a dark
background). It makes 64x64 video in seconds, even on a CPU. The loaders list it after your own files:

- Causal Forcing Model Loader: `{TOY_MODEL}`
- Causal Forcing Text Encoder Loader: `{TOY_TEXT_ENCODER}` with `{TOY_TOKENIZER}`
- Causal Forcing VAE Loader: `{TOY_VAE}`
{body}
**Prompts** are toy captions such as `a red square moves right quickly`; other words are refused. Vocabulary:
{_toy_vocabulary()}

For the real Causal Forcing students (832x480) use the other example workflows.
"""


def _toy_loaders(y0: float = 0) -> list[Node]:
    return [
        Node("model", "CausalForcingModelLoader", (X_LOAD, y0), {"model_name": TOY_MODEL, "variant": "auto",
                                                               "weight_dtype": "auto", "preview": "auto"}),
        Node("text", "CausalForcingTextEncoderLoader", (X_LOAD, y0 + 200),
             {"text_encoder_name": TOY_TEXT_ENCODER, "tokenizer": TOY_TOKENIZER, "dtype": "auto",
              "device": "default"}),
        Node("vae", "CausalForcingVAELoader", (X_LOAD, y0 + 400), {"vae_name": TOY_VAE, "dtype": "auto"}),
    ]


def _toy_prompt(key: str, pos: tuple[float, float], text: str, title: str) -> Node:
    return Node(key, "CausalForcingTextEncode", pos, {"text": text}, {"text_encoder": ("text", 0)}, title=title,
                color=PROMPT_COLOR, size=(400, 150))


def toy_t2v() -> Workflow:
    body = """
One prompt, one Start node (64x64), one Generate node: 7 chunks of 3 latent frames = 81 frames = 5 s at 16 fps,
4 denoising steps per chunk with a KV cache. Change the caption or the *seed* and queue again.
"""
    nodes = [
        note("note", (X_NOTE, 0), toy_note("text to video", body), size=(440, 700)),
        *_toy_loaders(),
        _toy_prompt("prompt", (X_PROMPT, 0), "a red square moves right quickly", "Prompt"),
        _start((X_PROMPT, 220), width=TOY_SIZE, height=TOY_SIZE),
        _generate("gen", (X_GEN, 0), "start", 7, title="Generate 7 chunks (81 frames)"),
        *_decode_and_save(X_GEN + 500, "gen", "causal_forcing_toy_t2v", vae_input="cf_vae"),
    ]
    groups = [("Toy model (embedded)", ["model", "text", "vae"]), ("Prompt and stream", ["prompt", "start"]),
              ("Generate", ["gen"]), ("Decode and save", ["decode", "video", "save"])]
    return Workflow("causal_forcing_toy_t2v", nodes, groups)


def toy_prompt_switch() -> Workflow:
    body = """
A prompt switch in the middle of the video: chunks 0-2 follow prompt 1, chunks 3-6 prompt 2 (7 chunks, 81 frames).
The second Generate node has *recache* on: at the switch the cached frames are re-encoded under the new prompt
(LongLive re-cache), so the shape changes colour, form and direction right away while its position carries on.
Editing prompt 2 re-runs only the second Generate node.
"""
    nodes = [
        note("note", (X_NOTE, 0), toy_note("prompt switch", body), size=(440, 740)),
        *_toy_loaders(y0=220),
        _toy_prompt("p1", (X_PROMPT, 0), "a red square moves right quickly", "Prompt 1 (chunks 0-2)"),
        _start((X_PROMPT, 220), prompt="p1", width=TOY_SIZE, height=TOY_SIZE),
        _generate("gen1", (X_GEN, 220), "start", 3, prompt="p1", title="Generate 3 chunks"),
        _toy_prompt("p2", (X_GEN + 500, 0), "a blue circle moves down slowly", "Prompt 2 (chunks 3-6)"),
        _generate("gen2", (X_GEN + 500, 220), "gen1", 4, prompt="p2", title="Switch, re-cache, generate 4 chunks"),
        *_decode_and_save(X_GEN + 1000, "gen2", "causal_forcing_toy_prompt_switch", vae_input="cf_vae"),
    ]
    groups = [("Toy model (embedded)", ["model", "text", "vae"]), ("Segment 1", ["p1", "start", "gen1"]),
              ("Segment 2 (re-cache)", ["p2", "gen2"]), ("Decode and save", ["decode", "video", "save"])]
    return Workflow("causal_forcing_toy_prompt_switch", nodes, groups)


TOY_LONG_SECONDS = 30


def toy_long_video() -> Workflow:
    schedule = ("0: a red square moves right slowly\n10: a red square moves down quickly\n"
                "20: a yellow triangle moves left slowly")
    body = f"""
A {TOY_LONG_SECONDS}-second video (40 chunks, 481 frames) with a rolling attention window: *window_frames* 12
latent frames, of which the first 3 (*sink_frames*) stay as an attention sink, so memory and time per chunk stay
flat however long it runs. The schedule counts **seconds** (a chunk lasts 0.75 s): three prompts at 0, 10 and 20 s.
A CPU makes it in about a minute.
"""
    nodes = [
        note("note", (X_NOTE, 0), toy_note(f"long video ({TOY_LONG_SECONDS} s)", body), size=(440, 740)),
        *_toy_loaders(y0=220),
        _toy_prompt("prompt", (X_PROMPT, 0), "a red square moves right slowly", "First prompt (opens the stream)"),
        _start((X_PROMPT, 220), window=12, sink=3, width=TOY_SIZE, height=TOY_SIZE),
        Node("schedule", "CausalForcingPromptSchedule", (X_GEN, 0), {"schedule": schedule, "unit": "seconds"},
             {"text_encoder": ("text", 0)}, color=PROMPT_COLOR, size=(420, 200)),
        _generate_schedule((X_GEN, 280), TOY_LONG_SECONDS, "seconds", f"Generate {TOY_LONG_SECONDS} s by the schedule"),
        *_decode_and_save(X_GEN + 500, "gen", "causal_forcing_toy_long_video", vae_input="cf_vae"),
    ]
    groups = [("Toy model (embedded)", ["model", "text", "vae"]),
              ("Stream (window 12 + sink 3)", ["prompt", "start"]), ("Schedule", ["schedule", "gen"]),
              ("Decode and save", ["decode", "video", "save"])]
    return Workflow("causal_forcing_toy_long_video", nodes, groups)


def is_toy(name: str) -> bool:
    """True for the toy workflows (they run the embedded toy model as they are)."""
    return name.startswith(TOY_PREFIX)


def workflows() -> list[Workflow]:
    return [t2v_chunkwise(), t2v_framewise(), i2v(), prompt_switch(), prompt_schedule(), long_video(), live(),
            toy_t2v(), toy_prompt_switch(), toy_long_video()]


# =============================================================================================== building
def _node_size(node: Node, schema: NodeSchema | None) -> list[float]:
    """A size that fits the node's slots and widgets (the frontend grows a node that is too small anyway)."""
    if node.size is not None:
        return [float(node.size[0]), float(node.size[1])]
    rows = max(len(schema.sockets), len(schema.outputs))
    widgets = sum(w.ui_slots for w in schema.widgets)
    return [340.0, float(rows * 22 + widgets * 26 + 16)]


def _topological_order(ids: list[int], deps: dict[int, set[int]]) -> dict[int, int]:
    order, done = {}, set()
    while len(done) < len(ids):
        ready = [i for i in ids if i not in done and deps[i] <= done]
        if not ready:
            raise ValueError("the graph has a cycle")
        for i in ready:
            order[i] = len(order)
            done.add(i)
    return order


def build(workflow: Workflow, schemas: dict[str, NodeSchema]) -> tuple[dict, dict]:
    """A description -> (UI workflow, API prompt)."""
    ids = {n.key: i for i, n in enumerate(workflow.nodes, 1)}
    if len(ids) != len(workflow.nodes):
        raise ValueError(f"{workflow.name}: node keys repeat")
    by_key = {n.key: n for n in workflow.nodes}
    links: list[list] = []
    out_links: dict[tuple[int, int], list[int]] = {}
    ui_nodes, api = [], {}
    deps: dict[int, set[int]] = {i: set() for i in ids.values()}
    in_link_ids: dict[tuple[int, str], int] = {}

    for node in workflow.nodes:  # links first, in node order then input order: stable link ids
        nid = ids[node.key]
        if node.type in VIRTUAL_NODES:
            continue
        schema = schemas[node.type]
        unknown = set(node.links) - {s.name for s in schema.inputs}
        if unknown:
            raise KeyError(f"{workflow.name}/{node.key}: {node.type} has no input(s) {sorted(unknown)}")
        for spec in schema.sockets:
            if spec.name not in node.links:
                if not spec.optional:
                    raise ValueError(f"{workflow.name}/{node.key}: required input {spec.name!r} is not linked")
                continue
            src_key, out = node.links[spec.name]
            src_schema = schemas[by_key[src_key].type]
            slot = src_schema.output_index(out)
            out_type = src_schema.outputs[slot][1]
            if out_type != spec.type and spec.type != "*":  # "*": any type (e.g. Preview Any)
                raise TypeError(f"{workflow.name}/{node.key}.{spec.name}: {spec.type} <- {src_key} {out_type}")
            link_id = len(links) + 1
            links.append([link_id, ids[src_key], slot, nid, None, out_type])  # target slot filled below
            out_links.setdefault((ids[src_key], slot), []).append(link_id)
            in_link_ids[(nid, spec.name)] = link_id
            deps[nid].add(ids[src_key])
    order = _topological_order(list(ids.values()), deps)

    for node in workflow.nodes:
        nid = ids[node.key]
        ui: dict[str, Any] = {"id": nid, "type": node.type, "pos": [float(node.pos[0]), float(node.pos[1])]}
        if node.type in VIRTUAL_NODES:
            ui.update(size=_node_size(node, None), flags={}, order=order[nid], mode=0, inputs=[], outputs=[],
                      properties={}, widgets_values=[node.values["text"]])
        else:
            schema = schemas[node.type]
            unknown = set(node.values) - {w.name for w in schema.widgets}
            if unknown:
                raise KeyError(f"{workflow.name}/{node.key}: {node.type} has no widget(s) {sorted(unknown)}")
            inputs = []
            for slot, spec in enumerate(schema.sockets):
                entry: dict[str, Any] = {"name": spec.name, "type": spec.type}
                if spec.optional:
                    entry["shape"] = 7
                entry["link"] = in_link_ids.get((nid, spec.name))
                if entry["link"] is not None:
                    links[entry["link"] - 1][4] = slot
                inputs.append(entry)
            outputs = [
                {"name": name, "type": typ, "links": out_links.get((nid, slot), []), "slot_index": slot}
                for slot, (name, typ) in enumerate(schema.outputs)
            ]
            widgets_values, api_inputs = [], {}
            for spec in schema.inputs:
                if not spec.is_widget:
                    if (nid, spec.name) in in_link_ids:
                        link = links[in_link_ids[(nid, spec.name)] - 1]
                        api_inputs[spec.name] = [str(link[1]), link[2]]
                    continue
                if spec.name in node.values:
                    value = node.values[spec.name]
                elif "default" in spec.options:
                    value = spec.options["default"]
                else:
                    raise ValueError(f"{workflow.name}/{node.key}: give a value for {node.type}.{spec.name}")
                widgets_values.append(value)
                api_inputs[spec.name] = value
                if spec.control_after_generate:
                    widgets_values.append(node.controls.get(spec.name, "fixed"))
                if spec.upload_widget:
                    widgets_values.append("image")
            properties: dict[str, Any] = {"Node name for S&R": node.type}
            if node.models:
                properties["models"] = [
                    {"name": m, "url": MODEL_URLS[m][0], "directory": MODEL_URLS[m][1]} for m in node.models
                ]
            ui.update(size=_node_size(node, schema), flags={}, order=order[nid], mode=0, inputs=inputs,
                      outputs=outputs, properties=properties, widgets_values=widgets_values)
            title = node.title or schema.display_name
            api[str(nid)] = {"class_type": node.type, "inputs": api_inputs, "_meta": {"title": title}}
        if node.title:
            ui["title"] = node.title
        if node.color:
            ui["color"], ui["bgcolor"] = node.color
        ui_nodes.append(ui)

    groups = []
    for gid, (title, keys) in enumerate(workflow.groups, 1):
        boxes = [(n["pos"], n["size"]) for n in ui_nodes if n["id"] in {ids[k] for k in keys}]
        x0 = min(p[0] for p, _ in boxes) - 20
        y0 = min(p[1] for p, _ in boxes) - 30 - 50  # node title bar, group title
        x1 = max(p[0] + s[0] for p, s in boxes) + 20
        y1 = max(p[1] + s[1] for p, s in boxes) + 20
        groups.append({"id": gid, "title": title, "bounding": [x0, y0, x1 - x0, y1 - y0], "color": GROUP_COLOR,
                       "font_size": 24, "flags": {}})
    ui_workflow = {
        "last_node_id": max(ids.values()),
        "last_link_id": len(links),
        "nodes": ui_nodes,
        "links": links,
        "groups": groups,
        "config": {},
        "extra": {"ds": _view(ui_nodes)},
        "version": 0.4,
    }
    return ui_workflow, api


def _view(ui_nodes: list[dict]) -> dict[str, Any]:
    """The canvas view (``extra.ds``) that shows the whole graph: screen = (canvas + offset) * scale."""
    x0 = min(n["pos"][0] for n in ui_nodes) - 40
    y0 = min(n["pos"][1] for n in ui_nodes) - 100
    x1 = max(n["pos"][0] + n["size"][0] for n in ui_nodes) + 40
    y1 = max(n["pos"][1] + n["size"][1] for n in ui_nodes) + 40
    scale = round(max(VIEW_MIN_SCALE, min(1.0, VIEW_SIZE[0] / (x1 - x0), VIEW_SIZE[1] / (y1 - y0))), 2)
    return {"scale": scale, "offset": [-x0, -y0]}


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def generated_files(schemas: dict[str, NodeSchema] | None = None) -> dict[Path, str]:
    """Every file the builder writes -> its text."""
    schemas = schemas or all_schemas()
    files = {}
    for workflow in workflows():
        ui, api = build(workflow, schemas)
        files[UI_DIR / f"{workflow.name}.json"] = dumps(ui)
        files[API_DIR / f"{workflow.name}.json"] = dumps(api)
    return files


def check(files: dict[Path, str]) -> list[str]:
    """What differs between the files on disk and ``files`` (missing, different, or stale extra .json files)."""
    problems = []
    for path, text in files.items():
        if not path.is_file():
            problems.append(f"missing: {path.relative_to(ROOT)}")
        elif path.read_text() != text:
            problems.append(f"differs: {path.relative_to(ROOT)}")
    for folder in (UI_DIR, API_DIR):
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            if path not in files:
                problems.append(f"not generated (stale): {path.relative_to(ROOT)}")
    return problems


def write(files: dict[Path, str]) -> None:
    for folder in (UI_DIR, API_DIR):
        folder.mkdir(parents=True, exist_ok=True)
        for path in folder.glob("*.json"):
            if path not in files:
                path.unlink()
    for path, text in files.items():
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)


# =============================================================================================== tiny variants
_SCHEDULE_LINE = re.compile(r"^\s*\d+(?:\.\d+)?\s*s?\s*:\s*(.*)$")


def _short(text: str) -> str:
    return " ".join(text.split()[:TINY_MAX_WORDS])


def _schedule_prompts(text: str) -> list[str]:
    """The distinct prompts of a schedule, in order ('start: prompt' lines, or 'a | b | c')."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    matches = [_SCHEDULE_LINE.match(ln) for ln in lines]
    if any(matches):
        prompts = [m.group(1) for m in matches if m]
    else:
        prompts = " ".join(lines).split("|")
    return list(dict.fromkeys(_short(p) for p in prompts if p.strip()))


def tiny_variant(api_prompt: dict[str, dict], native_vae: bool = False) -> dict[str, dict]:
    """An API workflow mapped onto the tiny random models of ``scripts/make_tiny_models.py``, for smoke runs.

    Load CLIP + CLIP Text Encode become Causal Forcing Text Encoder Loader (cf_tiny_umt5.pth) + Causal Forcing Text
    Encode (same node ids), a Prompt Schedule's or Live node's ``clip`` becomes ``text_encoder``; Load VAE becomes
    Causal Forcing VAE Loader (cf_tiny_vae) and every ``vae`` input ``cf_vae``; students become
    cf_tiny_chunkwise/framewise; sizes 64x64; at most 3 chunks per Generate node and 6 per Generate (Schedule) node,
    whose schedule becomes equal segments of its prompts; a Live node runs at most 6 s, not in real time; windows
    6 + 3 sink; prompts at most 12 words; previews "auto".
    With ``native_vae`` Load VAE stays and reads the real-shape random VAE (cf_random_wan21_vae), so ComfyUI's own
    VAE object goes through our nodes.
    """
    prompt = copy.deepcopy(api_prompt)
    replaced = {"CLIPLoader": set(), "VAELoader": set()}
    for nid, node in prompt.items():
        inputs = node["inputs"]
        kind = node["class_type"]
        if kind == "CLIPLoader":
            node["class_type"] = "CausalForcingTextEncoderLoader"
            node["inputs"] = {"text_encoder_name": TINY_TEXT_ENCODER, "tokenizer": TINY_TOKENIZER, "dtype": "auto",
                              "device": "default"}
            replaced["CLIPLoader"].add(nid)
        elif kind == "VAELoader" and native_vae:
            node["inputs"] = {"vae_name": TINY_NATIVE_VAE}
        elif kind == "VAELoader":
            node["class_type"] = "CausalForcingVAELoader"
            node["inputs"] = {"vae_name": TINY_VAE, "dtype": "auto"}
            replaced["VAELoader"].add(nid)
        elif kind == "CausalForcingModelLoader":
            framewise = "framewise" in str(inputs["model_name"]) or str(inputs.get("variant", "")).startswith("frame")
            inputs.update(model_name=TINY_FRAMEWISE if framewise else TINY_CHUNKWISE, variant="auto",
                          weight_dtype="auto", preview="auto")
        elif kind == "CausalForcingStart":
            inputs.update(width=TINY_SIZE, height=TINY_SIZE)
            if inputs.get("window_frames"):
                inputs.update(window_frames=TINY_WINDOW, sink_frames=TINY_SINK)
        elif kind == "CausalForcingGenerate":
            chunks = inputs["length"] if inputs.get("unit") == "chunks" else TINY_MAX_CHUNKS
            inputs.update(length=max(1, min(int(chunks), TINY_MAX_CHUNKS)), unit="chunks")
        elif kind == "CausalForcingGenerateSchedule":
            inputs.update(length=TINY_SCHEDULE_CHUNKS, unit="chunks")
        elif kind == "CausalForcingLive":
            inputs.update(max_seconds=min(int(inputs["max_seconds"]), TINY_LIVE_SECONDS), realtime=False,
                          prompt=_short(inputs["prompt"]))
        elif kind == "CausalForcingPromptSchedule" and isinstance(inputs.get("schedule"), str):
            inputs.update(schedule=" | ".join(_schedule_prompts(inputs["schedule"])), unit="chunks")
        elif kind in ("SaveVideo", "SaveAnimatedWEBP") and isinstance(inputs.get("filename_prefix"), str):
            inputs["filename_prefix"] = "causal_forcing_tiny/" + inputs["filename_prefix"].split("/")[-1]
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] == "CLIPTextEncode" and _links_to(inputs.get("clip"), replaced["CLIPLoader"]):
            node["class_type"] = "CausalForcingTextEncode"
            node["inputs"] = {"text_encoder": inputs["clip"], "text": _short(inputs["text"])}
        elif node["class_type"] in ("CausalForcingPromptSchedule", "CausalForcingLive") and _links_to(
                inputs.get("clip"), replaced["CLIPLoader"]):
            inputs["text_encoder"] = inputs.pop("clip")
        if _links_to(inputs.get("vae"), replaced["VAELoader"]):
            inputs["cf_vae"] = inputs.pop("vae")
    return prompt


def _links_to(value: Any, node_ids: set[str]) -> bool:
    return isinstance(value, list) and len(value) == 2 and str(value[0]) in node_ids


def tiny_variants() -> dict[str, dict]:
    """{workflow name: its tiny API variant}, from the committed API twins (the toy workflows need none)."""
    return {p.stem: tiny_variant(json.loads(p.read_text())) for p in sorted(API_DIR.glob("*.json"))
            if not is_toy(p.stem)}


# =============================================================================================== core schemas
#: core inputs whose combo lists the user's files: (node, input) -> the folder they come from
CORE_FILE_COMBOS = {"CLIPLoader.clip_name": "text_encoders", "VAELoader.vae_name": "vae", "LoadImage.image": "input"}
_CORE_FIELDS = ("display_name", "input", "input_order", "output", "output_name")


def extract_core_schemas(object_info: dict[str, Any], source: str) -> dict[str, Any]:
    """The ``/object_info`` entries of the core nodes the workflows use (the fields the builder and tests read)."""
    ours = set(import_pack().NODE_CLASS_MAPPINGS)
    used = sorted({n.type for w in workflows() for n in w.nodes} - ours - set(VIRTUAL_NODES))
    missing = [t for t in used if t not in object_info]
    if missing:
        raise KeyError(f"/object_info has no {missing}")
    return {
        "note": "The /object_info entries (input, input_order, output, output_name, display_name) of the core "
                "ComfyUI nodes the example workflows use, extracted by scripts/build_workflows.py --core-schemas "
                f"from {source}. The combos listed in file_combos hold the files of that server's folders (empty); "
                "the tests only check that their values are file names.",
        "file_combos": CORE_FILE_COMBOS,
        "nodes": {t: {k: object_info[t][k] for k in _CORE_FIELDS if k in object_info[t]} for t in used},
    }


# =============================================================================================== command line
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when a file is out of date")
    parser.add_argument("--tiny", type=Path, metavar="DIR", help="also write the tiny-model API variants into DIR")
    parser.add_argument("--core-schemas", type=Path, metavar="OBJECT_INFO",
                        help="rewrite tests/data/core_node_schemas.json from a saved /object_info (JSON) first")
    parser.add_argument("--source", default="a ComfyUI server's /object_info",
                        help="with --core-schemas: which ComfyUI it came from (written into the file's note)")
    args = parser.parse_args(argv)
    if args.core_schemas:
        data = extract_core_schemas(json.loads(args.core_schemas.read_text()), args.source)
        CORE_SCHEMAS.parent.mkdir(parents=True, exist_ok=True)
        CORE_SCHEMAS.write_text(dumps(data))
        print(f"wrote {CORE_SCHEMAS.relative_to(ROOT)} ({len(data['nodes'])} nodes)")
    files = generated_files()
    if args.check:
        problems = check(files)
        for line in problems:
            print(line)
        if problems:
            print("The example workflows are out of date: run python scripts/build_workflows.py")
            return 1
        print(f"{len(files)} workflow files up to date")
        return 0
    write(files)
    print(f"wrote {len(files)} files into {UI_DIR.relative_to(ROOT)}/ and {API_DIR.relative_to(ROOT)}/")
    if args.tiny:
        args.tiny.mkdir(parents=True, exist_ok=True)
        for name, prompt in tiny_variants().items():
            (args.tiny / f"{name}.json").write_text(dumps(prompt))
        print(f"wrote the tiny variants into {args.tiny}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
