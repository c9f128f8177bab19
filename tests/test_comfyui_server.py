"""Layer 4 (optional): a real ComfyUI (``COMFYUI_PATH``, run by ``COMFYUI_PYTHON``; ``COMFYUI_FRONTEND_ROOT``: another
frontend to serve) imports the pack and runs every example workflow on tiny random models, through
``scripts/comfyui_smoke.py``; the core-node table of ``tests/test_workflows.py`` matches that server's
``/object_info``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_workflows import CORE_NODES, FILES, combo_options

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import comfyui_smoke  # noqa: E402


def core_table_problems(object_info: dict) -> list[str]:
    """Where :data:`CORE_NODES` disagrees with a server's ``/object_info``: input names, order and types, outputs,
    widget ranges, and combo options (ComfyUI's list must hold the table's; ``FILES`` stands for any file)."""
    problems = []
    for kind, ours in CORE_NODES.items():
        real = object_info.get(kind)
        if real is None:
            problems.append(f"{kind}: not in /object_info")
            continue
        mine, theirs = comfyui_smoke.schema_inputs(ours), comfyui_smoke.schema_inputs(real)
        if [(n, o) for n, _, _, o in mine] != [(n, o) for n, _, _, o in theirs]:
            problems.append(f"{kind}: inputs (name, optional) {[(n, o) for n, _, _, o in theirs]}, table "
                            f"{[(n, o) for n, _, _, o in mine]}")
            continue
        for (name, kind_a, opts_a, _), (_, kind_b, opts_b, _) in zip(mine, theirs):
            a, b = combo_options(kind_a, opts_a), combo_options(kind_b, opts_b)
            if (a is None) != (b is None) or a is None and kind_a != kind_b:
                problems.append(f"{kind}.{name}: type {kind_b}, table {kind_a}")
            elif a is not None and not set(a) - {FILES} <= set(b):
                problems.append(f"{kind}.{name}: options {b} lack {sorted(set(a) - {FILES} - set(b))}")
            for key in ("min", "max", "image_upload"):
                if opts_a.get(key) is not None and opts_a.get(key) != opts_b.get(key):
                    problems.append(f"{kind}.{name}: {key} {opts_b.get(key)}, table {opts_a.get(key)}")
        if (real["output"], real["output_name"]) != (ours["output"], ours["output_name"]):
            problems.append(f"{kind}: outputs {real['output']} {real['output_name']}, table {ours['output']}")
    return problems


@pytest.mark.comfyui
def test_every_workflow_runs_in_a_real_comfyui(tmp_path: Path) -> None:
    comfyui = os.environ.get("COMFYUI_PATH")
    if not comfyui:
        pytest.skip("set COMFYUI_PATH (and COMFYUI_PYTHON) to run the pack in a real ComfyUI")
    report_path = tmp_path / "report.json"
    command = [sys.executable, str(ROOT / "scripts" / "comfyui_smoke.py"), "--comfyui", comfyui,
               "--python", os.environ.get("COMFYUI_PYTHON", sys.executable), "--report", str(report_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    assert report_path.is_file(), done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert not report["import"]["import_problems"], report["import"]
    assert not report["import"]["missing_nodes"], report["import"]
    assert core_table_problems(report["core_schemas"]) == []
    failed = {name: w for name, w in report["workflows"].items() if not w["ok"]}
    assert not failed, failed
    assert all(w["preview_frames"] > 0 for w in report["workflows"].values()), report["workflows"]
    assert done.returncode == 0, done.stderr[-3000:]


def test_the_core_table_check_catches_a_difference() -> None:
    real = {kind: json.loads(json.dumps(info)) for kind, info in CORE_NODES.items()}
    assert core_table_problems(real) == []
    real["CreateVideo"]["input"]["required"]["fps"][1]["max"] = 60.0
    real["SaveVideo"]["input"]["required"]["codec"][1]["options"] = ["auto"]
    real["VAELoader"]["output"] = ["LATENT"]
    del real["PreviewAny"]
    problems = core_table_problems(real)
    for message in ("CreateVideo.fps: max 60.0", "SaveVideo.codec: options ['auto'] lack ['h264']",
                    "VAELoader: outputs", "PreviewAny: not in /object_info"):
        assert any(message in p for p in problems), (message, problems)


@pytest.mark.comfyui
def test_a_live_run_queued_from_the_api_keeps_its_token_private_in_a_real_comfyui(tmp_path: Path) -> None:
    """``scripts/live_privacy_check.py``: another page sees the frames of a run queued without a client id but never
    its steering token, and the control route answers every malformed body (deep nesting included) with a 4xx."""
    comfyui = os.environ.get("COMFYUI_PATH")
    if not comfyui:
        pytest.skip("set COMFYUI_PATH (and COMFYUI_PYTHON) to run the pack in a real ComfyUI")
    command = [sys.executable, str(ROOT / "scripts" / "live_privacy_check.py"), "--comfyui", comfyui,
               "--python", os.environ.get("COMFYUI_PYTHON", sys.executable), "--work", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.stdout.strip(), done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["ok"] and done.returncode == 0, json.dumps(report["checks"], indent=2)
    assert report["malformed"]["nested 16,000 deep"]["status"] == 400
    assert report["api_run"]["events"].get("causal_forcing.chunk", 0) > 0 and not report["api_run"]["tokens"]
