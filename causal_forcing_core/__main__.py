"""Command line of the core: ``python -m causal_forcing_core <command>``.

- ``generate``: a prompt or a prompt schedule to a video file (see :mod:`.cli`);
- ``convert``: a release ``.pt`` student to safetensors that records its sampler;
- ``demo``: the embedded toy model makes a short video with a prompt switch on the CPU (see :mod:`.demo`).
"""

from __future__ import annotations

import argparse
import logging
import sys

from .config import SAMPLER_PRESETS, WAN_TEXT_LEN
from .errors import CausalForcingError

_DTYPES = {"keep": None, "fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
logger = logging.getLogger("causal_forcing_core")


def _add_convert(sub: argparse._SubParsersAction) -> None:
    conv = sub.add_parser("convert", help="convert a release .pt student to safetensors with metadata")
    conv.add_argument("src", help="release .pt file (generator / generator_ema)")
    conv.add_argument("dst", help="output .safetensors path, or a folder (ending in /) for <src name>.safetensors")
    conv.add_argument("--variant", required=True, choices=sorted(SAMPLER_PRESETS))
    ema = conv.add_mutually_exclusive_group()
    ema.add_argument("--ema", dest="prefer_ema", action="store_true", default=None, help="take generator_ema")
    ema.add_argument("--no-ema", dest="prefer_ema", action="store_false", help="take generator")
    conv.add_argument("--dtype", choices=sorted(_DTYPES), default="keep")
    conv.add_argument("--num-heads", type=int, help="attention heads, when the file has no config (Wan: dim/128)")
    conv.add_argument("--text-len", type=int, default=WAN_TEXT_LEN, help="text tokens the model attends to (Wan: 512)")


def _convert(args: argparse.Namespace) -> None:
    import torch

    from .checkpoint_convert import convert_release_to_safetensors

    dtype = getattr(torch, _DTYPES[args.dtype]) if _DTYPES[args.dtype] else None
    convert_release_to_safetensors(
        args.src, args.dst, variant=args.variant, prefer_ema=args.prefer_ema, dtype=dtype, num_heads=args.num_heads,
        text_len=args.text_len,
    )


def main(argv: list[str] | None = None) -> int:
    from .cli import add_generate_arguments, report, run_generate
    from .demo import add_demo_arguments, run_demo_command

    parser = argparse.ArgumentParser(prog="python -m causal_forcing_core")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="generate a video from a prompt or a prompt schedule")
    add_generate_arguments(gen)
    _add_convert(sub)
    demo = sub.add_parser("demo", help="the embedded toy model: a short video with a prompt switch, on the CPU")
    add_demo_arguments(demo)
    from .training.cli import add_train_toy_arguments

    add_train_toy_arguments(sub.add_parser("train-toy", help="train the toy model: VAE, teachers, stage 2, DMD"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    try:
        if args.command == "generate":
            report(run_generate(args), args.report)
        elif args.command == "train-toy":
            from .training.cli import run_train_toy

            run_train_toy(args)
        elif args.command == "demo":
            run_demo_command(args)
        else:
            _convert(args)
    except CausalForcingError as err:
        logger.error("%s", err)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
