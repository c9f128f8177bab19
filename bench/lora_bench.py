"""LoRA cost: merge and unmerge time, the memory kept to unmerge, and per-chunk time with a LoRA merged against the
plain model. Prints one JSON document on stdout (logs go to stderr).

    python bench/lora_bench.py [--quick] [--rank 16]

Random weights (tiny config, and without ``--quick`` the 1.3B student's shape in bf16, built on the meta device and
materialised, about 3 GB of RAM), a rank-``--rank`` LoRA on every linear layer of every block (self- and
cross-attention q/k/v/o and both FFN matrices, as LongLive's), on the CPU (CUDA when present). Merging changes the
weights once, so sampling with a merged LoRA costs what the plain model costs; the per-chunk figures check it.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_io import emit_report, median_time, sync  # noqa: E402
from stream_bench import random_model  # noqa: E402

from causal_forcing_core.config import SAMPLER_PRESETS, TINY, WAN_1_3B  # noqa: E402
from causal_forcing_core.lora import Lora, LoraLayer, merge_loras  # noqa: E402
from causal_forcing_core.stream import Prompt, start_stream  # noqa: E402

logger = logging.getLogger("lora_bench")


def block_lora(model: torch.nn.Module, rank: int) -> Lora:
    """A random LoRA on every linear layer inside the blocks."""
    gen = torch.Generator().manual_seed(0)
    layers = {}
    for name, module in model.named_modules():
        if name.startswith("blocks.") and isinstance(module, torch.nn.Linear):
            out_dim, in_dim = module.weight.shape
            layers[name] = LoraLayer(torch.randn(rank, in_dim, generator=gen) * 0.01,
                                     torch.randn(out_dim, rank, generator=gen) * 0.01, float(rank))
    return Lora("bench", layers, "peft")


def run(name: str, cfg, dtype: torch.dtype, rank: int, size: int, device: torch.device, chunks: bool) -> dict:
    model = random_model(cfg, device, dtype)
    lora = block_lora(model, rank)
    t0 = time.perf_counter()
    merge = merge_loras(model, [(lora, 1.0)])
    sync(device)
    merge_s = time.perf_counter() - t0
    result = {"config": name, "dtype": str(dtype).replace("torch.", ""), "rank": rank, "layers": len(lora.layers),
              "lora_mb": round(sum(x.down.nbytes + x.up.nbytes for x in lora.layers.values()) / 2**20, 2),
              "merge_s": round(merge_s, 4), "kept_to_unmerge_mb": round(merge.backup_bytes / 2**20, 1),
              "weights_mb": round(sum(p.nbytes for p in model.parameters()) / 2**20, 1)}
    if chunks:  # the same chunks merged and plain, interleaved
        prompt = Prompt(torch.randn(1, cfg.text_len, cfg.text_dim))

        def chunk() -> None:
            start_stream(model, SAMPLER_PRESETS["chunkwise-4step"], height=size, width=size, prompt=prompt).generate(2)

        merged = median_time(chunk, 5, device)
        merge.unmerge()
        plain = median_time(chunk, 5, device)
        result.update(per_chunk_ms_merged=round(merged / 2 * 1000, 2), per_chunk_ms_plain=round(plain / 2 * 1000, 2))
    else:
        t0 = time.perf_counter()
        merge.unmerge()
        sync(device)
        result["unmerge_s"] = round(time.perf_counter() - t0, 4)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the tiny config only")
    parser.add_argument("--rank", type=int, default=16)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results = [run("tiny", TINY, torch.float32, args.rank, 64, device, chunks=True)]
    if not args.quick:
        results.append(run("wan2.1-1.3b", WAN_1_3B, torch.bfloat16, args.rank, 0, device, chunks=False))
    emit_report({"torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads(),
                 "results": results}, None)


if __name__ == "__main__":
    main()
