"""Layer 4 (optional): the example workflows and the Live node in a real ComfyUI page, driven by headless Chromium.

A real ComfyUI (``COMFYUI_PATH``, run by ``COMFYUI_PYTHON``; ``COMFYUI_FRONTEND_ROOT``: another frontend to serve,
e.g. the newest ``comfyui-frontend-package``'s ``static`` folder) with this pack:

- every file of ``example_workflows/`` is opened in the page and exported again by the frontend's own Export and
  Export (API) commands (``scripts/workflow_thumbnails.mjs --export``): the frontend that authored a file exports it
  byte for byte, any other reads the same graph, and the ``/prompt`` form the tests and smoke runs derive
  (``comfyui_smoke.api_prompt``) is what the frontend's Export (API) writes;
- the tiny-model variant of the live example workflow runs long enough to steer (120 s in real time);
  ``scripts/browser_live_check.mjs`` opens the page, waits for frames on the Live node's player, sends a new prompt
  from the node's panel with Ctrl+Enter, presses Stop and checks the recorded schedule in ``/history``.

Needs ``node``, playwright-core (``PLAYWRIGHT_CORE_DIR``, or resolvable by Node from ``scripts/``) and Chromium
(``CHROMIUM``, default ``/usr/bin/chromium``); skipped when any is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "browser_live_check.mjs"
EXPORT_SCRIPT = ROOT / "scripts" / "workflow_thumbnails.mjs"
SCREENSHOTS = ("running", "after_prompt", "finished")
sys.path.insert(0, str(ROOT / "scripts"))
import comfyui_smoke  # noqa: E402 - the server, the UI -> /prompt derivation and the tiny-model mapping


def _playwright_core(node: str) -> str | None:
    """Why playwright-core cannot be loaded the way the browser scripts load it (None when it can)."""
    probe = subprocess.run([node, "--input-type=module", "-e",
                            "await (await import('./playwright_loader.mjs')).loadPlaywright()"],
                           cwd=ROOT / "scripts", capture_output=True, text=True, timeout=60, check=False)
    why = next((line for line in probe.stderr.splitlines() if line.startswith("Error")), probe.stderr.strip()[-300:])
    return None if probe.returncode == 0 else f"playwright-core cannot be loaded (set PLAYWRIGHT_CORE_DIR): {why}"


def _requirements() -> tuple[Path, str, str]:
    """(ComfyUI folder, its Python, node), or skip the test saying what is missing."""
    comfyui = os.environ.get("COMFYUI_PATH")
    if not comfyui:
        pytest.skip("set COMFYUI_PATH (and COMFYUI_PYTHON) to run the Live node in a real ComfyUI page")
    if not (Path(comfyui) / "main.py").is_file():
        pytest.skip(f"COMFYUI_PATH={comfyui} holds no main.py")
    node = shutil.which("node")
    if not node:
        pytest.skip("node is not on PATH")
    missing = _playwright_core(node)
    if missing:
        pytest.skip(missing)
    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    if not (Path(chromium).is_file() and os.access(chromium, os.X_OK)):
        pytest.skip(f"no Chromium at {chromium} (set CHROMIUM)")
    return Path(comfyui), os.environ.get("COMFYUI_PYTHON", sys.executable), node


def object_info(server: comfyui_smoke.Server) -> dict:
    with urllib.request.urlopen(server.url + "/object_info", timeout=120) as response:
        return json.loads(response.read())


def tiny_live_prompt(schemas: dict, max_seconds: int = 120) -> dict:
    """The tiny-model variant of the live example workflow (``schemas``: the server's ``/object_info``), running
    ``max_seconds`` in real time."""
    prompt = comfyui_smoke.smoke_prompt("causal_forcing_live", schemas)
    live = [node for node in prompt.values() if node["class_type"] == "CausalForcingLive"]
    assert len(live) == 1, prompt
    live[0]["inputs"].update(max_seconds=max_seconds, realtime=True)
    return prompt


def _schema_inputs_only(prompt: dict, schemas: dict) -> dict:
    """``prompt`` without the inputs its nodes' schemas do not declare (the frontend also sends the values of its
    own display widgets, e.g. Preview Any's ``preview``; ComfyUI ignores them)."""
    return {nid: {**node, "inputs": {k: v for k, v in node["inputs"].items() if k in {
        name for name, *_ in comfyui_smoke.schema_inputs(schemas[node["class_type"]])}}}
        for nid, node in prompt.items()}


@pytest.mark.comfyui
def test_example_workflows_are_what_the_frontend_exports(tmp_path: Path) -> None:
    comfyui, python, node = _requirements()
    names = comfyui_smoke.workflow_names()
    out = tmp_path / "exported"
    server = comfyui_smoke.start_tiny_server(comfyui, python, tmp_path / "comfyui")
    try:
        schemas = object_info(server)
        done = subprocess.run([node, str(EXPORT_SCRIPT), "--url", server.url, "--out", str(out), "--export",
                               *(str(comfyui_smoke.UI_DIR / f"{name}.json") for name in names)],
                              capture_output=True, text=True, timeout=600, cwd=ROOT, check=False)
    finally:
        server.stop()
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").is_file() else {}
    assert report.get("ok") and done.returncode == 0, f"{report.get('error')}\n{done.stderr[-3000:]}"
    for name in names:
        committed = comfyui_smoke.load_workflow(name)
        exported = json.loads((out / f"{name}.json").read_text())
        version = report["frontend_version"] or exported["extra"].get("frontendVersion")
        if version == committed["extra"]["frontendVersion"]:  # the frontend that authored it exports it unchanged
            assert (out / f"{name}.json").read_text() == (comfyui_smoke.UI_DIR / f"{name}.json").read_text(), name
        ours = comfyui_smoke.api_prompt(committed, schemas)
        assert comfyui_smoke.api_prompt(exported, schemas) == ours, f"{name}: frontend {version} reads another graph"
        frontend = json.loads((out / f"{name}.api.json").read_text())
        assert _schema_inputs_only(frontend, schemas) == ours, f"{name}: Export (API) differs from api_prompt"
    print(f"frontend {version}: {len(names)} workflows re-exported, each the same graph and /prompt form")


def _browser_live_check(tmp_path: Path, make_prompt, args: tuple[str, ...] = (), toy: bool = False) -> dict:
    """Start a server (the toy bundle's environment with ``toy``), queue ``make_prompt(object_info)`` from a page
    and drive its Live node with ``scripts/browser_live_check.mjs`` (extra ``args``); the report, all checks passed."""
    comfyui, python, node = _requirements()
    out = tmp_path / "browser"
    env = comfyui_smoke.toy_bundle_env(tmp_path)[0] if toy else None
    server = comfyui_smoke.start_tiny_server(comfyui, python, tmp_path / "comfyui", env=env)
    try:
        prompt_file = tmp_path / "live_api.json"
        prompt_file.write_text(json.dumps(make_prompt(object_info(server)), indent=2))
        done = subprocess.run([node, str(SCRIPT), "--url", server.url, "--prompt-file", str(prompt_file),
                               "--out", str(out), *args], capture_output=True, text=True, timeout=420, cwd=ROOT,
                              check=False)
    finally:
        server.stop()
    report_path = out / "report.json"
    context = f"output in {out}\n--- stderr\n{done.stderr[-4000:]}\n--- server log\n{server.log()[-3000:]}"
    assert report_path.is_file(), context
    report = json.loads(report_path.read_text())
    failed = [c for c in report["checks"] if not c["ok"]]
    assert not report.get("error") and not failed, f"{report.get('error')}\nfailed checks: {failed}\n{context}"
    assert report["ok"] and done.returncode == 0, context
    names = {c["name"] for c in report["checks"]}
    assert {"frames on the player", "status shows the typed prompt", "more frames after the prompt",
            "status finished (stopped)", "schedule has the typed prompt at a chunk > 0"} <= names, names
    for name in SCREENSHOTS:
        assert Path(report["screenshots"][name]).is_file(), report["screenshots"]
    return report


@pytest.mark.comfyui
def test_live_node_steered_from_the_browser(tmp_path: Path) -> None:
    report = _browser_live_check(tmp_path, tiny_live_prompt)
    print(f"browser live check: {report['seconds']} s, schedule {report['schedule']!r}, screenshots in {tmp_path}")


def toy_live_prompt(schemas: dict) -> dict:
    """The toy live example workflow as it is (the embedded toy model), for 120 s of real-time video at most."""
    prompt = comfyui_smoke.smoke_prompt("causal_forcing_toy_live", schemas)
    live = [node for node in prompt.values() if node["class_type"] == "CausalForcingLive"]
    assert len(live) == 1 and live[0]["inputs"]["realtime"] is True, prompt
    live[0]["inputs"].update(max_seconds=120)
    return prompt


@pytest.mark.comfyui
def test_a_misspelled_prompt_is_refused_at_the_route_and_the_toy_take_goes_on(tmp_path: Path) -> None:
    """The toy live workflow in a real page: "a bleu circle" is answered 400 naming "bleu", the panel shows it, the
    take goes on, and the correct prompt typed next is what the schedule records."""
    report = _browser_live_check(tmp_path, toy_live_prompt, toy=True, args=(
        "--bad-text", "a bleu circle moves down slowly", "--bad-word", "bleu",
        "--text", "a blue circle moves down slowly"))
    names = {c["name"] for c in report["checks"]}
    assert {"the route refuses the bad prompt with 400 naming the word",
            "the panel shows the refusal and the take goes on", "the refused prompt is not in the schedule"} <= names
    print(f"toy browser live check: refused {report['refused_reply']}, schedule {report['schedule']!r}")
