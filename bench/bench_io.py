"""What the benchmark scripts share: device synchronisation and printing the JSON report."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so a timer read afterwards includes it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def emit_report(report: dict, output: Path | None) -> None:
    """Print ``report`` as one JSON document on stdout (and write it to ``output`` when given)."""
    text = json.dumps(report, indent=2)
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
    sys.stdout.write(text + "\n")
