"""Layer 4 (optional): a real ComfyUI (``COMFYUI_PATH``, run by ``COMFYUI_PYTHON``) imports the pack and runs every
example workflow's API twin on tiny random models, through ``scripts/comfyui_smoke.py``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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
    failed = {name: w for name, w in report["workflows"].items() if not w["ok"]}
    assert not failed, failed
    assert all(w["preview_frames"] > 0 for w in report["workflows"].values()), report["workflows"]
    assert done.returncode == 0, done.stderr[-3000:]
