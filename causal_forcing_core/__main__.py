"""Command line of the core: ``python -m causal_forcing_core <command>``.

Commands so far: ``convert`` (release .pt -> safetensors with metadata). Generation from the command line comes
with the text encoder / VAE work.
"""

from __future__ import annotations

import argparse
import logging
import sys

from .checkpoint_convert import convert_release_to_safetensors
from .config import SAMPLER_PRESETS
from .errors import CausalForcingError

_DTYPES = {"keep": None, "fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m causal_forcing_core")
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert", help="convert a release .pt student to safetensors with metadata")
    conv.add_argument("src", help="release .pt file (generator / generator_ema)")
    conv.add_argument("dst", help="output .safetensors path")
    conv.add_argument("--variant", required=True, choices=sorted(SAMPLER_PRESETS))
    ema = conv.add_mutually_exclusive_group()
    ema.add_argument("--ema", dest="prefer_ema", action="store_true", default=None, help="take generator_ema")
    ema.add_argument("--no-ema", dest="prefer_ema", action="store_false", help="take generator")
    conv.add_argument("--dtype", choices=sorted(_DTYPES), default="keep")
    conv.add_argument("--num-heads", type=int, help="attention heads, when the file has no config (Wan: dim/128)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    import torch

    try:
        dtype = getattr(torch, _DTYPES[args.dtype]) if _DTYPES[args.dtype] else None
        convert_release_to_safetensors(
            args.src, args.dst, variant=args.variant, prefer_ema=args.prefer_ema, dtype=dtype, num_heads=args.num_heads
        )
    except CausalForcingError as err:
        logging.getLogger("causal_forcing_core").error("%s", err)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
