"""The native-MODEL path inside a real ComfyUI, in one process: parity, no copy, fp8, low VRAM, time and memory.

    COMFYUI_PYTHON bench/native_model_bench.py --comfyui COMFYUI_PATH [--models DIR] [--output report.json]

ComfyUI's own ``UNETLoader`` and ``LoraLoaderModelOnly`` load the Wan-shaped tiny student and LoRA of
``scripts/make_tiny_models.py``; Causal Forcing Native Model runs our sampler on that MODEL. Against our own loader
and our core LoRA merge on the same files, it reports:

- the largest latent difference, native against ours, without a LoRA, with the LoRA at strength 1 (ComfyUI's
  patch against our merge), and with the LoRA at strength 0 (against no LoRA);
- how much the LoRA changes the video;
- that the borrowed DiT copies no weight (every parameter is one of ComfyUI's), and that an fp8 MODEL keeps fp8
  weights (their bytes, and the dtypes);
- that switching between the plain and the LoRA MODEL on one base gives each its own video again, and that a
  stream made under one refuses to go on under the other's patches;
- ComfyUI's low-VRAM partial load (most layers left to cast their weights at each call, the LoRA applied to
  them on the fly) against the fully patched model;
- time per chunk through each path (median of repeats, one CPU thread), the weights' bytes, and the memory each
  LoRA path keeps to undo itself (ComfyUI's weight backup, our merge's originals).

Run by ``tests/test_comfyui_native.py`` (the opt-in ``comfyui`` tests), which holds the correctness bounds. The
process imports ComfyUI with ``--cpu``.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PACK_MODULE = "causal_forcing_native_bench_pack"
SEED, SIZE, CHUNKS = 5, 64, (2, 1)
REPEATS = 5
#: bytes of weights the low-VRAM load puts on the device; the rest cast at each call (a few layers of the tiny DiT)
LOWVRAM_BUDGET = 256 * 1024


def _import_comfyui(comfyui: Path) -> ModuleType:
    sys.argv = [sys.argv[0], "--cpu"]
    sys.path.insert(0, str(comfyui))
    import comfy.options  # noqa: PLC0415 - ComfyUI is only importable once its folder is on the path

    comfy.options.enable_args_parsing()
    import nodes  # noqa: PLC0415 - ComfyUI's own nodes.py (UNETLoader, LoraLoaderModelOnly)

    return nodes


def _max_diff(a: Any, b: Any) -> float:
    return float((a - b).abs().max())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui", type=Path, required=True)
    parser.add_argument("--models", type=Path, help="where the tiny models are (written when missing)")
    parser.add_argument("--output", type=Path, help="also write the JSON report here")
    args = parser.parse_args(argv)
    models = args.models or Path(tempfile.mkdtemp(prefix="cf_native_check_"))
    sys.path[:0] = [str(ROOT / "scripts"), str(ROOT / "bench")]
    from bench_io import emit_report  # noqa: PLC0415
    from make_tiny_models import WAN_LORA, WAN_STUDENT, write_tiny_models  # noqa: PLC0415
    from pack_import import import_pack, run_node  # noqa: PLC0415

    if not (models / "diffusion_models" / WAN_STUDENT).is_file():
        write_tiny_models(models)
    comfy_nodes = _import_comfyui(args.comfyui)
    import comfy.model_management as mm  # noqa: PLC0415
    import folder_paths  # noqa: PLC0415
    import torch  # noqa: PLC0415

    torch.set_num_threads(1)

    for folder in ("diffusion_models", "loras", "text_encoders"):
        folder_paths.add_model_folder_path(folder, str(models / folder))
    pack = import_pack(PACK_MODULE)
    model_nodes = importlib.import_module(f"{PACK_MODULE}.nodes.model_nodes")
    stream_nodes = importlib.import_module(f"{PACK_MODULE}.nodes.stream_nodes")
    errors = importlib.import_module(f"{PACK_MODULE}.causal_forcing_core.errors")
    lora_core = importlib.import_module(f"{PACK_MODULE}.causal_forcing_core.lora")
    del pack

    g = torch.Generator().manual_seed(0)
    prompts = [[[torch.randn(1, 9, 4096, generator=g), {"pooled_output": None}]] for _ in CHUNKS]
    timings: dict[str, float] = {}

    def video(model: Any, label: str) -> Any:
        """The same two-segment video on ``model`` (through the Start and Generate nodes); the median seconds per
        chunk of :data:`REPEATS` runs is recorded under ``label``."""
        times = []
        for _ in range(REPEATS):
            (handle,) = run_node(stream_nodes.CausalForcingStart, model, prompts[0], SIZE, SIZE, SEED, 0, 0).result
            begin = time.perf_counter()
            for n, prompt in zip(CHUNKS, prompts):
                handle = run_node(stream_nodes.CausalForcingGenerate, handle, n, "chunks", True,
                                  positive=prompt).result[0]
            times.append((time.perf_counter() - begin) / sum(CHUNKS))
        timings[label] = round(statistics.median(times) * 1000, 2)
        return handle

    unet = comfy_nodes.UNETLoader().load_unet(WAN_STUDENT, "default")[0]
    lora_loader = comfy_nodes.LoraLoaderModelOnly()
    native = {s: lora_loader.load_lora_model_only(unet, WAN_LORA, s)[0] for s in (1.0, 0.0)}
    adapt = model_nodes.adapt_native_model
    cf_native = adapt(unet, "auto", "none", WAN_STUDENT)
    cf_native_lora = adapt(native[1.0], "auto", "none", WAN_STUDENT)
    cf_native_zero = adapt(native[0.0], "auto", "none", WAN_STUDENT)
    ours = model_nodes.load_model(WAN_STUDENT, "auto", "auto", "none")
    ours_lora = model_nodes.add_lora(ours, WAN_LORA, 1.0)

    module = unet.get_model_object("diffusion_model")
    theirs = {id(p) for p in module.parameters()}
    report: dict[str, Any] = {"comfyui": str(args.comfyui)}
    report["no_copy"] = all(id(p) in theirs for p in cf_native.dit.parameters())
    report["weight_bytes"] = {"native": sum(p.nbytes for p in module.parameters()),
                              "ours": sum(p.nbytes for p in ours.dit.parameters())}

    video(cf_native, "warm-up")
    base = video(cf_native, "native")
    own = video(ours, "ours")
    with_lora = video(cf_native_lora, "native_lora")
    own_lora = video(ours_lora, "ours_lora")
    zero = video(cf_native_zero, "native_lora_strength0")
    again = video(cf_native, "native_again")  # the plain MODEL after its LoRA clone patched the shared base
    report["max_diff"] = {
        "native_vs_ours": _max_diff(base.stream.latents, own.stream.latents),
        "native_lora_vs_our_merge": _max_diff(with_lora.stream.latents, own_lora.stream.latents),
        "strength0_vs_no_lora": _max_diff(zero.stream.latents, base.stream.latents),
        "plain_after_lora_vs_plain": _max_diff(again.stream.latents, base.stream.latents),
    }
    report["lora_effect"] = _max_diff(with_lora.stream.latents, base.stream.latents)
    report["latent_mean_abs"] = float(base.stream.latents.abs().mean())
    cf_native_lora.prepare()  # the LoRA clone's patches are on the base now: the plain stream must refuse
    try:
        base.stream.generate(1)
        report["stale_stream_refused"] = False
    except errors.StreamStateError as err:
        report["stale_stream_refused"] = "weights changed" in str(err)

    fp8 = comfy_nodes.UNETLoader().load_unet(WAN_STUDENT, "fp8_e4m3fn")[0]
    cf_fp8 = adapt(fp8, "auto", "none", WAN_STUDENT)
    fp8_video = video(cf_fp8, "native_fp8")
    fp8_module = fp8.get_model_object("diffusion_model")
    report["fp8"] = {
        "linear_dtypes": sorted({str(m.weight.dtype) for m in fp8_module.modules() if isinstance(m, torch.nn.Linear)}),
        "compute_dtype": str(cf_fp8.dit.compute_dtype),
        "no_copy": all(id(p) in {id(q) for q in fp8_module.parameters()} for p in cf_fp8.dit.parameters()),
        "weight_bytes": sum(p.nbytes for p in fp8_module.parameters()),
        "max_diff_vs_fp32": _max_diff(fp8_video.stream.latents, base.stream.latents),
    }
    timings.pop("warm-up")
    # low VRAM: ComfyUI leaves most layers where they rest and patches the LoRA in at each call (weight_function)
    mm.unload_all_models()
    lowvram = native[1.0]
    lowvram.load(lowvram.load_device, lowvram_model_memory=LOWVRAM_BUDGET)
    lazy = [m for m in module.modules() if getattr(m, "comfy_cast_weights", False) and getattr(m, "weight_function", None)]
    full_load, mm.load_models_gpu = mm.load_models_gpu, lambda *a, **k: None  # keep the partial load for this run
    try:
        low = video(adapt(lowvram, "auto", "none", WAN_STUDENT), "native_lora_lowvram")
    finally:
        mm.load_models_gpu = full_load
    report["lowvram"] = {"budget_bytes": LOWVRAM_BUDGET, "layers_patched_at_each_call": len(lazy),
                         "max_diff_vs_full_load": _max_diff(low.stream.latents, with_lora.stream.latents)}
    mm.unload_all_models()

    ours_lora.prepare()  # our merge of the LoRA, and what it keeps to unmerge
    mm.load_models_gpu([native[1.0]])
    report["lora_undo_bytes"] = {
        "comfyui_backup": sum(b.weight.nbytes for b in native[1.0].backup.values()),
        "our_merge_originals": lora_core.undo_bytes(ours.dit),
    }
    report["ms_per_chunk"] = timings
    report["threads"] = torch.get_num_threads()
    emit_report(report, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
