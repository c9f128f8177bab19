"""``python -m causal_forcing_core train-toy``: the whole toy recipe in one resumable command.

Run it again with the same ``--out`` to resume after an interruption; a changed config is refused with the
difference shown. Multi-GPU: ``accelerate launch -m causal_forcing_core train-toy ...`` runs the same code.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ..errors import InvalidInputError

logger = logging.getLogger(__name__)


def add_train_toy_arguments(parser: argparse.ArgumentParser) -> None:
    from .toy_recipe import INITS

    parser.add_argument("--out", type=Path, default=Path("runs/toy"), help="run folder (resumes when it exists)")
    parser.add_argument("--init", choices=INITS, default="ar_ode",
                        help="stage 2: ar_ode = Causal Forcing (default), ar_cd = Causal Forcing++, bidir_ode = "
                             "Self-Forcing-style ODE init, ar_diffusion = no stage 2")
    parser.add_argument("--config", type=Path, help="JSON overriding fields of the recipe config (see config.json "
                                                    "of a run for every field)")
    parser.add_argument("--micro", action="store_true", help="two steps of every stage on a micro model (smoke test)")
    parser.add_argument("--seed", type=int, help="recipe seed (default 0)")
    parser.add_argument("--no-eval", action="store_true", help="skip the evaluation of the trained student")


def load_recipe_config(args: argparse.Namespace):
    from .toy_recipe import ToyRecipeConfig, micro_config

    base = micro_config() if args.micro else ToyRecipeConfig()
    data = base.to_dict()
    if args.config:
        try:
            override = json.loads(Path(args.config).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise InvalidInputError(f"Cannot read the recipe config {args.config}: {err}") from None
        unknown = sorted(set(override) - set(data))
        if unknown:
            raise InvalidInputError(f"Unknown recipe config field(s) {', '.join(unknown)}; known: {', '.join(sorted(data))}.")
        for key, value in override.items():
            data[key] = {**data[key], **value} if isinstance(data[key], dict) and key != "dit" else value
    if args.seed is not None:
        data["seed"] = args.seed
    try:
        return ToyRecipeConfig.from_dict(data)
    except TypeError as err:
        raise InvalidInputError(f"Invalid recipe config: {err}") from None


def run_train_toy(args: argparse.Namespace) -> dict:
    from .toy_recipe import train_toy

    summary = train_toy(load_recipe_config(args), args.out, init=args.init, evaluate=not args.no_eval)
    print(json.dumps(summary))
    return summary
