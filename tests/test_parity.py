"""Layer 2: parity with the reference implementation through the shared fixtures.

Cases are discovered from the fixture folder (``CF_PARITY_FIXTURES`` or ``../shared/fixtures/parity``); a folder
that exists but holds a case we cannot run fails the suite, it is never skipped.
"""

from __future__ import annotations

import json

import pytest
import torch

from causal_forcing_core.scheduler import FlowMatchScheduler
from ci_env import require_fixture, require_parity_dir
from parity_cases import MEASURED, RUNNERS, discover_dit_cases, fixture_dir, load_model

FOLDER = fixture_dir()


def _cases() -> list:
    if not FOLDER.is_dir():
        return []
    return discover_dit_cases(FOLDER)


def test_fixture_folder_present() -> None:
    require_parity_dir(FOLDER)
    assert _cases(), f"{FOLDER} exists but holds no DiT parity case"


#: max |ours - reference| with the reference's float64 RoPE (bench/parity_error.py --exact-rope). Bit-exact for all
#: but fwd_train (1.91e-6) and sample_longlive_recache (9.6e-7) on the Intel CPU the fixtures were checked on; on an
#: AMD EPYC the float32 matmul kernels sum in another order from the second block on, and every case measured
#: between 9.5e-7 and 1.91e-6. The bound is the largest of both machines, so a real departure (one ulp at 1.0 is
#: 1.2e-7, a wrong mask or RoPE is >1e-3) still fails.
EXACT_ROPE_MAX = 1.91e-6
#: with the default float32 rotation every case measured <= 1.91e-6 on both CPUs; bound with 2x margin
DEFAULT_ROPE_MAX = 4e-6


@pytest.mark.parametrize("rope", ["default", "float64"])
@pytest.mark.parametrize("case", _cases(), ids=lambda c: c.name)
def test_dit_case(case, rope: str) -> None:
    """Every case within what was measured: a few float32 ulps, with the reference's float64 rotation or the
    default one."""
    model = load_model(FOLDER, case.meta["dit_config"], torch.float64 if rope == "float64" else None)
    MEASURED.clear()
    RUNNERS[case.kind](case, model)
    worst = max(MEASURED.values())
    bound = EXACT_ROPE_MAX if rope == "float64" else DEFAULT_ROPE_MAX
    assert worst <= bound, f"{case.name}: max abs diff {worst:.3g} > {bound:.3g} measured before"


def test_scheduler_table_and_warped_lists() -> None:
    path = require_fixture(FOLDER / "scheduler.json", "scheduler fixture")
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
