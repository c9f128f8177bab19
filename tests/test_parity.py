"""Layer 2: parity with the reference implementation through the shared fixtures.

Cases are discovered from the fixture folder (``CF_PARITY_FIXTURES`` or ``../shared/fixtures/parity``); a folder
that exists but holds a case we cannot run fails the suite, it is never skipped.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from causal_forcing_core.scheduler import FlowMatchScheduler
from parity_cases import RUNNERS, discover_dit_cases, fixture_dir, load_model

FOLDER = fixture_dir()


def _cases() -> list:
    if not FOLDER.is_dir():
        return []
    return discover_dit_cases(FOLDER)


def test_fixture_folder_present() -> None:
    if not FOLDER.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"Parity fixtures missing in CI: {FOLDER} (set CF_PARITY_FIXTURES)")
        pytest.skip(f"no parity fixtures at {FOLDER}")
    assert _cases(), f"{FOLDER} exists but holds no DiT parity case"


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c.name)
def test_dit_case(case) -> None:
    model = load_model(FOLDER, case.meta["dit_config"])
    RUNNERS[case.kind](case, model)


def test_scheduler_table_and_warped_lists() -> None:
    path = FOLDER / "scheduler.json"
    if not path.exists():
        pytest.skip(f"no scheduler.json in {FOLDER}")
    data = json.loads(path.read_text())
    table = data["flow_match_scheduler"]
    sched = FlowMatchScheduler(table["timestep_shift"], table["num_train_timesteps"])
    assert torch.equal(sched.timesteps, torch.tensor(table["timesteps"], dtype=torch.float32))
    assert torch.equal(sched.sigmas, torch.tensor(table["sigmas"], dtype=torch.float32))
    for name, cfg in data["configs"].items():
        s = FlowMatchScheduler(cfg["timestep_shift"])
        warped = s.warp(cfg["denoising_step_list"])
        assert warped.dtype == torch.float32
        assert torch.equal(warped, torch.tensor(cfg["warped_denoising_step_list"], dtype=torch.float32)), name
        if cfg["denoising_step_list_first_chunk"]:
            first = s.warp(cfg["denoising_step_list_first_chunk"])
            assert torch.equal(first, torch.tensor(cfg["warped_first_chunk"], dtype=torch.float32)), name
