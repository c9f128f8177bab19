"""Runtime patches shared by the scripts that run official reference code on tiny weights on the CPU
(``make_rolling_fixtures.py``, ``make_longlive_fixtures.py``): nothing here changes an official file."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """The official attention signature ([B, L, H, D] in and out), in float32 without a mask."""
    out = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2).float(), k.transpose(1, 2).float(), v.transpose(1, 2).float(),
        scale=1.0 / math.sqrt(q.shape[-1]))
    return out.transpose(1, 2).type_as(v)


#: modules of the official ``wan`` package that ``wan/__init__.py`` imports for the image-to-video pipeline, which
#: the rolling one never calls (it needs torchvision)
UNUSED_IMPORTS = {"wan.image2video": "WanI2V"}


def stub_unused_imports() -> None:
    """Stand-ins for :data:`UNUSED_IMPORTS` (a module with the one name ``wan/__init__.py`` imports from it)."""
    import types

    for name, attribute in UNUSED_IMPORTS.items():
        if name not in sys.modules:
            module = types.ModuleType(name)
            setattr(module, attribute, None)
            sys.modules[name] = module


class RecordedRandn:
    """``torch.randn_like`` from a seeded generator, remembering every tensor it returned."""

    def __init__(self, seed: int) -> None:
        self.gen = torch.Generator().manual_seed(seed)
        self.drawn: list[torch.Tensor] = []

    def __call__(self, like: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = torch.randn(like.shape, generator=self.gen, dtype=torch.float32).to(like.dtype)
        self.drawn.append(out.clone())
        return out


@contextmanager
def importing_official_code(folder: str) -> Iterator[None]:
    """While the official modules import: ``folder`` first on ``sys.path``, :func:`stub_unused_imports`, and
    ``torch.cuda.current_device`` answering 0 (``wan/modules/t5.py`` and ``utils/memory.py`` call it at import,
    for a default argument and a module-level ``cuda:N`` device object that CPU runs never use)."""
    sys.path.insert(0, folder)
    current_device = torch.cuda.current_device
    torch.cuda.current_device = lambda: 0
    stub_unused_imports()
    try:
        yield
    finally:
        torch.cuda.current_device = current_device


def official_kv_cache(layers: int, batch: int, tokens: int, heads: int, head_dim: int, dtype: torch.dtype,
                      device: Any) -> list[dict]:
    """The official self-attention KV cache layout (one dict per layer), sized for a tiny model."""
    return [{
        "k": torch.zeros([batch, tokens, heads, head_dim], dtype=dtype, device=device),
        "v": torch.zeros([batch, tokens, heads, head_dim], dtype=dtype, device=device),
        "global_end_index": torch.tensor([0], dtype=torch.long, device=device),
        "local_end_index": torch.tensor([0], dtype=torch.long, device=device),
    } for _ in range(layers)]


def official_crossattn_cache(layers: int, batch: int, text_len: int, heads: int, head_dim: int, dtype: torch.dtype,
                             device: Any) -> list[dict]:
    """The official cross-attention cache layout (one dict per layer), sized for a tiny model."""
    return [{
        "k": torch.zeros([batch, text_len, heads, head_dim], dtype=dtype, device=device),
        "v": torch.zeros([batch, text_len, heads, head_dim], dtype=dtype, device=device),
        "is_init": False,
    } for _ in range(layers)]


def write_fixture_cases(
    doc: str, official_help: str, prefix: str, cases: dict[str, Any],
    run_case: Callable[[str, Any, Path, Path], tuple[dict, dict[str, torch.Tensor]]],
    describe: Callable[[dict, dict[str, torch.Tensor]], str], argv: list[str] | None = None,
) -> int:
    """The command line both fixture scripts share: ``--official`` (the checkout, ``official_help``), ``--weights``
    (the shared tiny DiT) and ``--out``; runs ``run_case(name, spec, official, weights)`` for each case on one CPU
    thread and writes ``<out>/<prefix>_<name>.safetensors`` + ``.json``, logging ``describe(meta, tensors)``."""
    import argparse
    import json

    from safetensors.torch import save_file

    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--official", type=Path, required=True, help=official_help)
    parser.add_argument("--weights", type=Path, required=True, help="dit_tiny.safetensors of the shared fixtures")
    parser.add_argument("--out", type=Path, default=Path("tests/data"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, spec in cases.items():
        meta, tensors = run_case(name, spec, args.official.resolve(), args.weights)
        save_file(tensors, str(args.out / f"{prefix}_{name}.safetensors"))
        (args.out / f"{prefix}_{name}.json").write_text(json.dumps(meta, indent=1) + "\n")
        print(f"{prefix}_{name}: {describe(meta, tensors)}", file=sys.stderr)
    return 0
