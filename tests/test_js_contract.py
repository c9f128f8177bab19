"""Layer 3: the browser code in ``js/`` and the Python in ``nodes/`` agree on the names they exchange.

The Python names live once, in ``nodes/protocol.py`` (events sent with ``send_sync``, ``ui`` output keys, routes,
control actions, why a run ended), in ``causal_forcing_core/live.py`` (run states) and ``causal_forcing_core/
prompt.py`` (the prompt length limit). The JS cannot import them, so it keeps copies; this test reads the JS files as
text and checks every copy, every name of the pack's namespace the JS uses, and the fields the JS reads from a live
event and a control reply. ``test_the_checks_catch_a_rename`` shows each check failing on a renamed name.
"""

from __future__ import annotations

import ast
import re
import sys
import threading
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
JS_DIR = ROOT / "js"
NODES_DIR = ROOT / "nodes"

#: string literals of the pack's namespace: events (``causal_forcing.x``), ui keys (``causal_forcing_x``), routes
NAMESPACED = re.compile(r"^/?causal_forcing(?:[._/][\w./-]+)$")
#: namespaced literals that are not part of the protocol, and why
NOT_PROTOCOL = {
    "causal_forcing.player": "the JS extension's registration name (app.registerExtension), never sent",
    "causal_forcing_temp": "the fallback temp folder outside ComfyUI (comfy_runtime.temp_directory)",
    "causal_forcing_output": "the fallback output folder outside ComfyUI (comfy_runtime.output_directory)",
    "causal_forcing/video": "Causal Forcing Save Video's default filename_prefix (a folder in the output folder)",
}
#: JS constant -> the Python protocol constant it copies
JS_COPIES = {
    "CHUNK_EVENT": "CHUNK_EVENT",
    "LIVE_EVENT": "LIVE_EVENT",
    "UI_FRAMES_KEY": "UI_FRAMES_KEY",
    "UI_FPS_KEY": "UI_FPS_KEY",
    "CONTROL_ROUTE": "CONTROL_PATH",
}
_STRING = re.compile(r"""(["'`])((?:\\.|(?!\1).)*)\1""")
_CONST = re.compile(r"^(?:export\s+)?const\s+(\w+)\s*=\s*(.+?);?\s*$", re.M)


# =============================================================================================== reading the JS
def js_sources(folder: Path = JS_DIR) -> dict[str, str]:
    """The extension's JS files (not its tests) by file name."""
    sources = {p.name: p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.js"))}
    assert sources, f"no JS files in {folder}"
    return sources


def strip_comments(text: str) -> str:
    """JS without block comments and ``//`` comments (a whole line, or after code and a space)."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"(?m)(^|\s)//.*$", r"\1", text)


def js_constants(text: str) -> dict[str, Any]:
    """Top-level ``const NAME = ...`` values the test understands: a string, an integer, a frozen array of strings
    (as a list) or a frozen object (as the list of its keys)."""
    code = strip_comments(text)
    found: dict[str, Any] = {}
    for const in _CONST.finditer(code):
        name, value = const.group(1), const.group(2).strip()
        rest = code[const.start(2) :]  # the value and what follows (a frozen literal may span lines)
        if m := re.fullmatch(r"""(["'])(.*)\1""", value):
            found[name] = m.group(2)
        elif re.fullmatch(r"\d+", value):
            found[name] = int(value)
        elif value.startswith("Object.freeze(["):
            found[name] = [s.group(2) for s in _STRING.finditer(rest[: rest.index("]")])]
        elif value.startswith("Object.freeze({"):
            found[name] = re.findall(r"(?m)^\s*(\w+)\s*:", rest[: rest.index("})")])
    return found


def js_namespaced_literals(text: str) -> set[str]:
    """The string literals of the pack's namespace in JS code (comments left out)."""
    return {m.group(2) for m in _STRING.finditer(strip_comments(text)) if NAMESPACED.match(m.group(2))}


def python_namespaced_literals(path: Path) -> set[str]:
    """The string constants of the pack's namespace in a Python file (docstrings never match: whole strings only)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and NAMESPACED.match(n.value)}


# =============================================================================================== the checks
def contract_problems(sources: dict[str, str], py: Any) -> list[str]:
    """Every disagreement between the JS ``sources`` and the Python modules (``py.protocol``: nodes/protocol.py,
    ``py.live``, ``py.prompt``, ``py.geometry``: the core's modules); empty when they agree."""
    protocol, live = py.protocol, py.live
    problems: list[str] = []
    consts: dict[str, Any] = {}
    for name, text in sources.items():
        for key, value in js_constants(text).items():
            if key in consts and consts[key] != value:
                problems.append(f"{name}: {key} = {value!r} differs from another file's {consts[key]!r}")
            consts.setdefault(key, value)

    for js_name, py_name in JS_COPIES.items():
        want = getattr(protocol, py_name)
        if consts.get(js_name) != want:
            problems.append(f"JS {js_name} is {consts.get(js_name)!r}, Python protocol.{py_name} is {want!r}")

    known = {getattr(protocol, n) for n in ("CHUNK_EVENT", "LIVE_EVENT", "UI_FRAMES_KEY", "UI_FPS_KEY",
                                            "CONTROL_PATH", "STATUS_PATH")}
    for name, text in sources.items():
        for literal in sorted(js_namespaced_literals(text) - known - set(NOT_PROTOCOL)):
            problems.append(f"{name} uses {literal!r}, which nodes/protocol.py does not define")

    states = [s.value for s in live.LiveState]
    if consts.get("LIVE_STATES") != states:
        problems.append(f"JS LIVE_STATES {consts.get('LIVE_STATES')} != core LiveState values {states}")
    if consts.get("ACTIONS") != list(protocol.ACTIONS):
        problems.append(f"JS ACTIONS {consts.get('ACTIONS')} != protocol.ACTIONS {list(protocol.ACTIONS)}")
    labels = set(consts.get("ENDED_LABELS") or ())
    sent = {e.value for e in protocol.RunEnd}
    # the JS shows the raw value of an unlabelled end; only an error may go without a label
    for missing in sorted(sent - {protocol.RunEnd.ERROR.value} - labels):
        problems.append(f"JS ENDED_LABELS has no label for ended_by {missing!r}")
    for unknown in sorted(labels - sent - {e.value for e in live.LiveEnd}):
        problems.append(f"JS ENDED_LABELS labels {unknown!r}, which Python never sends")
    if consts.get("MAX_PROMPT_CHARS") != py.prompt.MAX_PROMPT_CHARS:
        problems.append(f"JS MAX_PROMPT_CHARS {consts.get('MAX_PROMPT_CHARS')} != core {py.prompt.MAX_PROMPT_CHARS}")
    if consts.get("DEFAULT_FPS") != py.geometry.WAN21.fps:
        problems.append(f"JS DEFAULT_FPS {consts.get('DEFAULT_FPS')} != WAN21.fps {py.geometry.WAN21.fps}")
    return problems


def fields_read(text: str, variable: str) -> set[str]:
    """The fields JS code reads from ``variable`` (``variable.name``)."""
    return set(re.findall(rf"\b{variable}\.(\w+)", strip_comments(text)))


# =============================================================================================== tests
@pytest.fixture
def py(pack: ModuleType) -> SimpleNamespace:
    """The Python side, as the pack imports it."""
    name = pack.__name__
    return SimpleNamespace(
        protocol=sys.modules[f"{name}.nodes.protocol"],
        live_nodes=sys.modules[f"{name}.nodes.live_nodes"],
        routes=sys.modules[f"{name}.nodes.live_routes"],
        live=sys.modules[f"{name}.causal_forcing_core.live"],
        prompt=sys.modules[f"{name}.causal_forcing_core.prompt"],
        geometry=sys.modules[f"{name}.causal_forcing_core.geometry"],
    )


def test_js_and_python_agree_on_names(py: SimpleNamespace) -> None:
    assert contract_problems(js_sources(), py) == []


def test_python_writes_each_protocol_name_only_in_protocol_py(py: SimpleNamespace) -> None:
    """nodes/ sends events and returns ui keys through the constants, so the names above are what it sends."""
    names = {py.protocol.CHUNK_EVENT, py.protocol.LIVE_EVENT, py.protocol.UI_FRAMES_KEY, py.protocol.UI_FPS_KEY,
             py.protocol.CONTROL_PATH, py.protocol.STATUS_PATH}
    assert python_namespaced_literals(NODES_DIR / "protocol.py") == names
    for path in sorted(NODES_DIR.glob("*.py")):
        if path.name != "protocol.py":
            stray = python_namespaced_literals(path) - set(NOT_PROTOCOL)
            assert not stray, f"{path.name} writes {sorted(stray)} itself; use the constants of nodes/protocol.py"


def test_the_fields_the_js_reads_are_sent(py: SimpleNamespace) -> None:
    """A live event's fields (normalizeLiveEvent reads ``detail.*``) and a control reply's (parseControlResponse
    reads ``body.*``) come from the real session and route handler."""
    controls = js_sources()["cf_live_controls.js"]
    session = py.live_nodes.LiveSession("c" * 32, "7", None, py.live.LiveControl(), max_chunks=4)
    session.ended_by, session.error = py.protocol.RunEnd.ERROR, "RuntimeError: out of memory"
    assert fields_read(controls, "detail") <= set(session.status())
    session.ended_by = session.error = None
    py.live_nodes.REGISTRY.open(session)
    try:  # the running loop encodes the prompt while the request waits
        threading.Timer(0.05, session.control.serve_prompts, args=(lambda text: None,)).start()
        status, reply = py.routes.handle_control({}, {"run": session.token, "action": "prompt", "text": "a cat"})
        _, refused = py.routes.handle_control({}, {"run": session.token, "action": "explode"})
    finally:
        py.live_nodes.REGISTRY.close(session)
    assert status == 200 and fields_read(controls, "body") <= set(reply) | set(refused)


def test_the_checks_catch_a_rename(py: SimpleNamespace) -> None:
    sources = js_sources()

    def problems_after(old: str, new: str) -> list[str]:
        changed = {name: text.replace(old, new) for name, text in sources.items()}
        assert changed != sources, f"{old!r} is not in the JS"
        return contract_problems(changed, py)

    assert any("LIVE_EVENT" in p for p in problems_after('"causal_forcing.live"', '"causal_forcing.live_state"'))
    assert any("UI_FPS_KEY" in p for p in problems_after('"causal_forcing_fps"', '"causal_forcing_rate"'))
    assert any("CONTROL_ROUTE" in p for p in problems_after('"/causal_forcing/live/control"', '"/causal_forcing/steer"'))
    assert any("LIVE_STATES" in p for p in problems_after('"stopping"', '"halting"'))
    assert any("ACTIONS" in p for p in problems_after('"resume"', '"unpause"'))
    assert any("disconnected" in p for p in problems_after("disconnected:", "gone:"))
    assert any("MAX_PROMPT_CHARS" in p for p in problems_after("MAX_PROMPT_CHARS = 2000", "MAX_PROMPT_CHARS = 4000"))
    assert any("DEFAULT_FPS" in p for p in problems_after("DEFAULT_FPS = 16", "DEFAULT_FPS = 24"))
    stray = problems_after('api.fetchApi(CONTROL_ROUTE', 'api.fetchApi("/causal_forcing/live/steer"')
    assert any("'/causal_forcing/live/steer'" in p for p in stray)
    # and a Python-side rename is caught the same way
    protocol = SimpleNamespace(**{k: getattr(py.protocol, k) for k in dir(py.protocol) if k.isupper()},
                               RunEnd=py.protocol.RunEnd)
    protocol.CHUNK_EVENT = "causal_forcing.frames"
    renamed = SimpleNamespace(**{**vars(py), "protocol": protocol})
    assert any("CHUNK_EVENT" in p for p in contract_problems(sources, renamed))
