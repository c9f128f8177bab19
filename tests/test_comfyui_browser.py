"""Layer 4 (optional): the Live node in a real ComfyUI page, driven by headless Chromium.

A real ComfyUI (``COMFYUI_PATH``, run by ``COMFYUI_PYTHON``) runs the tiny API variant of the live example workflow
(long enough to steer: 120 s in real time); ``scripts/browser_live_check.mjs`` opens the page, waits for frames on the
Live node's player, sends a new prompt from the node's panel with Ctrl+Enter, presses Stop and checks the recorded
schedule in ``/history``. Needs ``node``, playwright-core (``PLAYWRIGHT_CORE_DIR``, or resolvable by Node from
``scripts/``) and Chromium (``CHROMIUM``, default ``/usr/bin/chromium``); skipped when any is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "browser_live_check.mjs"
LIVE_API = ROOT / "tests" / "workflows_api" / "causal_forcing_live.json"
SCREENSHOTS = ("running", "after_prompt", "finished")


def _playwright_core(node: str) -> str | None:
    """Why playwright-core cannot be loaded (None when it can)."""
    folder = os.environ.get("PLAYWRIGHT_CORE_DIR")
    if folder:
        path = Path(folder)
        if not (path / "package.json").is_file() and (path / "playwright-core" / "package.json").is_file():
            path = path / "playwright-core"
        return None if (path / "package.json").is_file() else f"PLAYWRIGHT_CORE_DIR={folder} holds no playwright-core"
    probe = subprocess.run([node, "--input-type=module", "-e", "await import('playwright-core')"], cwd=ROOT / "scripts",
                           capture_output=True, text=True, timeout=60, check=False)
    return None if probe.returncode == 0 else "playwright-core not resolvable (set PLAYWRIGHT_CORE_DIR)"


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


def tiny_live_prompt(max_seconds: int = 120) -> dict:
    """The tiny API variant of the live example workflow, running ``max_seconds`` in real time."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from build_workflows import tiny_variant

    prompt = tiny_variant(json.loads(LIVE_API.read_text()))
    live = [node for node in prompt.values() if node["class_type"] == "CausalForcingLive"]
    assert len(live) == 1, prompt
    live[0]["inputs"].update(max_seconds=max_seconds, realtime=True)
    return prompt


@pytest.mark.comfyui
def test_live_node_steered_from_the_browser(tmp_path: Path) -> None:
    comfyui, python, node = _requirements()
    sys.path.insert(0, str(ROOT / "scripts"))
    import comfyui_smoke

    prompt_file = tmp_path / "tiny_live_api.json"
    prompt_file.write_text(json.dumps(tiny_live_prompt(), indent=2))
    out = tmp_path / "browser"
    server = comfyui_smoke.start_tiny_server(comfyui, python, tmp_path / "comfyui")
    try:
        done = subprocess.run([node, str(SCRIPT), "--url", server.url, "--prompt-file", str(prompt_file),
                               "--out", str(out)], capture_output=True, text=True, timeout=420, cwd=ROOT, check=False)
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
    print(f"browser live check: {report['seconds']} s, schedule {report['schedule']!r}, screenshots in {out}")
