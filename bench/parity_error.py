"""Measured error against the reference parity fixtures: for every DiT case, the largest abs difference of each
compared tensor (output latents, x0 of every step, KV cache, flows), and the tolerance the tests allow.

    python bench/parity_error.py [--fixtures ../shared/fixtures/parity]

Prints one JSON document: {"tolerance": {...}, "cases": {case: max abs diff}, "quantities": {name: diff}}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from bench_io import emit_report  # noqa: E402

from parity_cases import ATOL, MEASURED, RTOL, RUNNERS, discover_dit_cases, fixture_dir, load_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", type=Path, default=None, help="parity fixture folder")
    parser.add_argument("--exact-rope", action="store_true", help="rotate in float64 like the reference")
    args = parser.parse_args()
    folder = args.fixtures or fixture_dir()
    rope_dtype = torch.float64 if args.exact_rope else None
    cases: dict[str, float] = {}
    quantities: dict[str, float] = {}
    for case in discover_dit_cases(folder):
        MEASURED.clear()
        RUNNERS[case.kind](case, load_model(folder, case.meta["dit_config"], rope_dtype))
        cases[case.name] = max(MEASURED.values(), default=0.0)
        quantities.update({f"{case.name}: {what}": diff for what, diff in MEASURED.items()})
    emit_report({"rope": "float64" if args.exact_rope else "default", "tolerance": {"atol": ATOL, "rtol": RTOL}, "cases": cases, "quantities": quantities}, None)


if __name__ == "__main__":
    main()
