"""The browser side: the player's JavaScript parses, and its own tests (``node --test js/tests/``) pass.

Needs Node.js (18+); skipped without it locally, a failure under CI, whose machines have it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ci_env import running_in_ci

ROOT = Path(__file__).resolve().parents[1]


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        if running_in_ci():
            pytest.fail("Node.js is needed to test js/ and CI machines have it", pytrace=False)
        pytest.skip("Node.js not installed")
    return node


@pytest.mark.parametrize("path", sorted(p.name for p in (ROOT / "js").glob("*.js")))
def test_extension_modules_parse(path: str) -> None:
    done = subprocess.run([_node(), "--input-type=module", "--check"], input=(ROOT / "js" / path).read_text(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_player_logic() -> None:
    done = subprocess.run([_node(), "--test", "js/tests/"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "# fail 0" in done.stdout
