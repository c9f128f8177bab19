"""Start a real ComfyUI with this pack and run the example workflows on tiny random models.

    python scripts/comfyui_smoke.py --comfyui /path/to/ComfyUI [--python /path/to/comfy/venv/bin/python]
                                    [--front-end-root /path/to/comfyui_frontend_package/static]

What it does:

1. writes the tiny models of ``scripts/make_tiny_models.py`` (and, unless ``--tiny-vae``, a random VAE of the real
   Wan 2.1 shape, so ComfyUI's own Load VAE runs too) into ``--models`` (default: a temporary folder);
2. links this repository into ``<ComfyUI>/custom_nodes/causal-forcing-nodes`` (a symlink; an existing different
   entry is refused);
3. starts ``main.py --cpu`` on a free loopback port with an ``extra_model_paths`` file for those models (and
   ``--front-end-root`` when given, e.g. a newer ``comfyui-frontend-package``'s ``static`` folder);
4. checks that the pack imported (no ``IMPORT FAILED``, no warning or error logged by it) and that ``/object_info``
   lists every node of the pack;
5. turns each UI-format file of ``example_workflows/`` into the ``/prompt`` format with the server's own
   ``/object_info`` (:func:`api_prompt`, what the frontend's Export (API) writes), maps it onto the tiny models
   (:func:`tiny_variant`), queues it, waits for it, and checks the outputs: files saved, preview frames announced in
   the node's ``ui``. The toy
   workflows (``causal_forcing_toy_*``) run as they are, on the embedded toy model: the shipped bundle, the one
   ``$CAUSAL_FORCING_TOY_BUNDLE`` names, or else a random-weights bundle written for the run (``--no-toy`` skips
   them);
6. prints a JSON report (with the ``/object_info`` entries of the core nodes the workflows use, which
   ``tests/test_comfyui_server.py`` compares with the table of ``tests/test_workflows.py``) and stops the server
   (``--keep-running`` leaves it up for a browser).

The script itself needs the pack's test dependencies (it writes the tiny models with torch); ComfyUI runs with
``--python``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
UI_DIR = ROOT / "example_workflows"
PACK_LINK = "causal-forcing-nodes"
FRONTEND_ENV = "COMFYUI_FRONTEND_ROOT"
logger = logging.getLogger("comfyui_smoke")

#: workflows named so run the embedded toy model as they are (no tiny-model substitution)
TOY_PREFIX = "causal_forcing_toy_"
#: frontend-only node types: no server schema, left out of /prompt
VIRTUAL_NODES = frozenset({"Note", "MarkdownNote", "Reroute", "PrimitiveNode"})
#: input types the frontend shows as widgets (a combo is a list of options, or "COMBO" in V3 schemas)
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
_UPLOAD_OPTIONS = ("image_upload", "video_upload", "animated_image_upload")

# ---------------------------------------------------------------------------------------------- tiny models
#: what scripts/make_tiny_models.py writes (names only; tests/test_workflows.py checks them against a real run)
TINY_CHUNKWISE = "cf_tiny_chunkwise.safetensors"
TINY_FRAMEWISE = "cf_tiny_framewise.safetensors"
TINY_TEXT_ENCODER = "cf_tiny_umt5.pth"
TINY_TOKENIZER = "cf_tiny_umt5_tokenizer"
TINY_VAE = "cf_tiny_vae.safetensors"
#: the random VAE of the real Wan 2.1 shape (make_tiny_models.py --full-size-vae) that ComfyUI's Load VAE reads
TINY_NATIVE_VAE = "cf_random_wan21_vae.safetensors"
#: the Wan-shaped tiny student, LoRA and 4096-wide text encoder for ComfyUI's own UNETLoader / LoraLoaderModelOnly
TINY_WAN_STUDENT = "cf_tiny_wan_chunkwise.safetensors"
TINY_WAN_LORA = "cf_tiny_wan_lora.safetensors"
TINY_WIDE_TEXT_ENCODER = "cf_tiny_umt5_wide.safetensors"
TINY_SIZE = 64
TINY_MAX_CHUNKS = 3  # per Generate node
TINY_SCHEDULE_CHUNKS = 6  # per Generate (Schedule) node
TINY_WINDOW, TINY_SINK = 6, 3
TINY_MAX_WORDS = 12
TINY_LIVE_SECONDS = 6  # per Live node (8 chunks), generated as fast as possible


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http(url: str, data: dict | None = None, timeout: float = 30) -> Any:
    body = None if data is None else json.dumps(data).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def link_pack(comfyui: Path) -> Path:
    target = comfyui / "custom_nodes" / PACK_LINK
    if target.is_symlink() and target.resolve() == ROOT:
        return target
    if target.exists() or target.is_symlink():
        raise SystemExit(f"{target} exists and is not a link to {ROOT}; move it away first.")
    target.symlink_to(ROOT, target_is_directory=True)
    return target


def write_model_paths(models: Path, folder: Path) -> Path:
    path = folder / "extra_model_paths.yaml"
    lines = ["causal_forcing_smoke:", f"    base_path: {models}"]
    lines += [f"    {name}: {name}" for name in ("diffusion_models", "text_encoders", "vae", "vae_approx", "loras")]
    path.write_text("\n".join(lines) + "\n")
    return path


class Server:
    """A ComfyUI server process on loopback, its log, and its address."""

    def __init__(self, comfyui: Path, python: str, model_paths: Path, log_path: Path, port: int,
                 env: dict[str, str] | None = None, front_end_root: str | None = None) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        command = [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
                   "--extra-model-paths-config", str(model_paths), "--preview-method", "auto"]
        if front_end_root:
            command += ["--front-end-root", str(front_end_root)]
        self._log = open(log_path, "w")
        self.process = subprocess.Popen(command, cwd=comfyui, stdout=self._log, stderr=subprocess.STDOUT,
                                        env={**os.environ, **(env or {})})

    def wait_up(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"ComfyUI exited with {self.process.returncode}; see {self.log_path}")
            try:
                _http(self.url + "/system_stats", timeout=3)
                return
            except (urllib.error.URLError, OSError):
                time.sleep(1)
        raise SystemExit(f"ComfyUI did not answer within {timeout:.0f} s; see {self.log_path}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self._log.close()


def start_tiny_server(comfyui: Path, python: str, work: Path, *, full_size_vae: bool = False, port: int = 0,
                      timeout: float = 300, env: dict[str, str] | None = None,
                      front_end_root: str | None = None) -> Server:
    """Write the tiny models into ``work/models``, link the pack into ``comfyui``, start ComfyUI on a free loopback
    port (log: ``work/server.log``; ``front_end_root``, default ``$COMFYUI_FRONTEND_ROOT``: the frontend it serves)
    and wait until it answers. Returns the running :class:`Server`: ``.url`` is its address, ``.stop()`` ends it (the
    caller must call it). Raises ``RuntimeError`` (server stopped) when it does not come up."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from make_tiny_models import write_tiny_models

    work.mkdir(parents=True, exist_ok=True)
    write_tiny_models(work / "models", full_size_vae=full_size_vae)
    link_pack(Path(comfyui))
    server = Server(Path(comfyui), python, write_model_paths(work / "models", work), work / "server.log",
                    port or _free_port(), env=env, front_end_root=front_end_root or os.environ.get(FRONTEND_ENV))
    up = False
    try:
        server.wait_up(timeout)
        up = True
    except SystemExit as err:
        raise RuntimeError(f"{err}\n{server.log()[-3000:]}") from None
    finally:
        if not up:
            server.stop()
    return server


def toy_bundle_env(work: Path) -> tuple[dict[str, str], str]:
    """(environment for the server, where the toy bundle is): nothing to set when the shipped bundle or the one
    ``$CAUSAL_FORCING_TOY_BUNDLE`` names is complete, else a random-weights bundle written into ``work``."""
    for path in (ROOT, ROOT / "tests"):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    from causal_forcing_core.toy.bundle import BUNDLE_ENV, ToyBundlePaths, bundle_available  # noqa: PLC0415

    if bundle_available():
        return {}, str(ToyBundlePaths.of().folder)
    from toy_bundle import write_random_toy_bundle  # noqa: PLC0415 - tests/toy_bundle.py

    folder = write_random_toy_bundle(work / "toy_bundle")
    return {BUNDLE_ENV: str(folder)}, f"{folder} (random weights)"


# =============================================================================================== workflows
def workflow_names() -> list[str]:
    """The example workflows (``example_workflows/NAME.json``), by name."""
    return sorted(p.stem for p in UI_DIR.glob("*.json"))


def load_workflow(name: str) -> dict[str, Any]:
    """An example workflow as the frontend exported it (UI format)."""
    return json.loads((UI_DIR / f"{name}.json").read_text())


def is_toy(name: str) -> bool:
    """True for the toy workflows (they run the embedded toy model as they are)."""
    return name.startswith(TOY_PREFIX)


def schema_inputs(info: dict[str, Any]) -> list[tuple[str, Any, dict[str, Any], bool]]:
    """(name, type, options, optional) of a node's inputs, in widget order, from ``/object_info``-shaped data (our
    nodes' ``INPUT_TYPES`` has the same shape); a combo's type is its option list, or ``"COMBO"``."""
    found = []
    for section in ("required", "optional"):
        entries = info["input"].get(section) or {}
        for name in (info.get("input_order") or {}).get(section) or list(entries):
            spec = entries[name]
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            found.append((name, spec[0], options, section == "optional"))
    return found


def widget_slots(name: str, kind: Any, options: dict[str, Any]) -> int:
    """How many ``widgets_values`` entries an input takes in a UI workflow: 0 for a socket, 1 for a widget, plus one
    for a control_after_generate mode (the frontend adds it to any INT named seed or noise_seed too) and one for an
    upload button."""
    if options.get("forceInput") or not (isinstance(kind, list) or kind in WIDGET_TYPES):
        return 0
    control = options.get("control_after_generate")
    control = control if control is not None else kind == "INT" and name in ("seed", "noise_seed")
    return 1 + bool(control) + any(options.get(k) for k in _UPLOAD_OPTIONS)


def api_prompt(workflow: dict[str, Any], schemas: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """A UI workflow in the ``/prompt`` format: what the frontend's Export (API) writes, for the inputs ``schemas``
    (``/object_info``-shaped) declare: widget values by name (without the UI-only control/upload values), linked
    inputs as ``[source id, output slot]``, notes left out. Only active nodes (mode 0) are supported."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in VIRTUAL_NODES:
            continue
        if node.get("mode", 0) != 0:
            raise ValueError(f"node {node['id']} ({node['type']}) is muted or bypassed; not supported here")
        info = schemas[node["type"]]
        values, inputs = iter(node.get("widgets_values") or []), {}
        for name, kind, options, _ in schema_inputs(info):
            slots = widget_slots(name, kind, options)
            if slots:
                inputs[name] = next(values)
                for _ in range(slots - 1):
                    next(values)
        for entry in node.get("inputs", []):
            if entry.get("link") is not None:
                link = links[entry["link"]]
                inputs[entry["name"]] = [str(link[1]), link[2]]
        title = node.get("title") or info.get("display_name") or node["type"]
        prompt[str(node["id"])] = {"inputs": inputs, "class_type": node["type"], "_meta": {"title": title}}
    return prompt


# =============================================================================================== tiny variants
_SCHEDULE_LINE = re.compile(r"^\s*\d+(?:\.\d+)?\s*s?\s*:\s*(.*)$")


def _short(text: str) -> str:
    return " ".join(text.split()[:TINY_MAX_WORDS])


def _schedule_prompts(text: str) -> list[str]:
    """The distinct prompts of a schedule, in order ('start: prompt' lines, or 'a | b | c')."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    matches = [_SCHEDULE_LINE.match(ln) for ln in lines]
    prompts = [m.group(1) for m in matches if m] if any(matches) else " ".join(lines).split("|")
    return list(dict.fromkeys(_short(p) for p in prompts if p.strip()))


def _links_to(value: Any, node_ids: set[str]) -> bool:
    return isinstance(value, list) and len(value) == 2 and str(value[0]) in node_ids


def tiny_variant(prompt: dict[str, dict[str, Any]], native_vae: bool = False) -> dict[str, dict[str, Any]]:
    """A ``/prompt`` workflow mapped onto the tiny random models of ``scripts/make_tiny_models.py`` (a copy).

    Load CLIP + CLIP Text Encode become Causal Forcing Text Encoder Loader (cf_tiny_umt5.pth; the 4096-wide
    cf_tiny_umt5_wide when a native UNETLoader feeds the graph) + Causal Forcing Text Encode (same node ids), a
    Prompt Schedule's or Live node's ``clip`` becomes ``text_encoder``; UNETLoader and LoraLoaderModelOnly read the
    Wan-shaped tiny student and LoRA (so do Causal Forcing Model Loader and LoRA when a LoRA is applied to it), with
    the 4096-wide text encoder; Load VAE becomes
    Causal Forcing VAE Loader (cf_tiny_vae) and every ``vae`` input ``cf_vae`` (VAE Decode becomes Causal Forcing
    Decode); students become
    cf_tiny_chunkwise/framewise (a Rolling Forcing variant is kept); sizes 64x64; at most 3 chunks per Generate node and 6 per Generate (Schedule) node,
    whose schedule becomes equal segments of its prompts; a Live node runs at most 6 s, not in real time; windows
    6 + 3 sink; prompts at most 12 words; previews "auto".
    With ``native_vae`` Load VAE stays and reads the real-shape random VAE (cf_random_wan21_vae), so ComfyUI's own
    VAE object goes through our nodes.
    """
    prompt = copy.deepcopy(prompt)
    clip_loaders, vae_loaders = set(), set()
    # a native UNETLoader, or a LoRA on our loader's model: the Wan-shaped tiny student (and its LoRA) is read
    native_dit = any(node["class_type"] == "UNETLoader" for node in prompt.values())
    wan_shaped = native_dit or any(node["class_type"] == "CausalForcingLoRA" for node in prompt.values())
    for nid, node in prompt.items():
        inputs, kind = node["inputs"], node["class_type"]
        if kind == "CLIPLoader":
            node["class_type"] = "CausalForcingTextEncoderLoader"
            node["inputs"] = {"text_encoder_name": TINY_WIDE_TEXT_ENCODER if wan_shaped else TINY_TEXT_ENCODER,
                              "tokenizer": TINY_TOKENIZER, "dtype": "auto", "device": "default"}
            clip_loaders.add(nid)
        elif kind == "UNETLoader":
            inputs.update(unet_name=TINY_WAN_STUDENT, weight_dtype="default")
        elif kind in ("LoraLoaderModelOnly", "CausalForcingLoRA"):
            inputs.update(lora_name=TINY_WAN_LORA)
        elif kind == "VAELoader" and native_vae:
            node["inputs"] = {"vae_name": TINY_NATIVE_VAE}
        elif kind == "VAELoader":
            node["class_type"] = "CausalForcingVAELoader"
            node["inputs"] = {"vae_name": TINY_VAE, "dtype": "auto"}
            vae_loaders.add(nid)
        elif kind == "CausalForcingModelLoader":
            framewise = "framewise" in str(inputs["model_name"]) or str(inputs.get("variant", "")).startswith("frame")
            rolling = str(inputs.get("variant", "")).startswith("rolling")  # the tiny chunk-wise model runs it too
            tiny = TINY_FRAMEWISE if framewise else TINY_WAN_STUDENT if wan_shaped else TINY_CHUNKWISE
            inputs.update(model_name=tiny, variant=inputs["variant"] if rolling else "auto", weight_dtype="auto",
                          preview="auto")
        elif kind == "CausalForcingStart":
            inputs.update(width=TINY_SIZE, height=TINY_SIZE)
            if inputs.get("window_frames"):
                inputs.update(window_frames=TINY_WINDOW, sink_frames=TINY_SINK)
        elif kind == "CausalForcingGenerate":
            chunks = inputs["length"] if inputs.get("unit") == "chunks" else TINY_MAX_CHUNKS
            inputs.update(length=max(1, min(int(chunks), TINY_MAX_CHUNKS)), unit="chunks")
        elif kind == "CausalForcingGenerateSchedule":
            inputs.update(length=TINY_SCHEDULE_CHUNKS, unit="chunks")
        elif kind == "CausalForcingLive":
            inputs.update(max_seconds=min(int(inputs["max_seconds"]), TINY_LIVE_SECONDS), realtime=False,
                          prompt=_short(inputs["prompt"]))
        elif kind == "CausalForcingPromptSchedule" and isinstance(inputs.get("schedule"), str):
            inputs.update(schedule=" | ".join(_schedule_prompts(inputs["schedule"])), unit="chunks")
        elif kind in ("SaveVideo", "SaveAnimatedWEBP", "CausalForcingSaveVideo") and isinstance(
                inputs.get("filename_prefix"), str):
            inputs["filename_prefix"] = "causal_forcing_tiny/" + inputs["filename_prefix"].split("/")[-1]
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] == "CLIPTextEncode" and _links_to(inputs.get("clip"), clip_loaders):
            node["class_type"] = "CausalForcingTextEncode"
            node["inputs"] = {"text_encoder": inputs["clip"], "text": _short(inputs["text"])}
        elif node["class_type"] in ("CausalForcingPromptSchedule", "CausalForcingLive") and _links_to(
                inputs.get("clip"), clip_loaders):
            inputs["text_encoder"] = inputs.pop("clip")
        if node["class_type"] == "VAEDecode" and _links_to(inputs.get("vae"), vae_loaders):
            node["class_type"] = "CausalForcingDecode"  # the native decode, on the tiny VAE
            node["inputs"] = {"samples": inputs["samples"], "cf_vae": inputs["vae"], "chunk_frames": 3}
        elif _links_to(inputs.get("vae"), vae_loaders):
            inputs["cf_vae"] = inputs.pop("vae")
    return prompt


def smoke_prompt(name: str, schemas: dict[str, dict[str, Any]], native_vae: bool = False) -> dict[str, dict[str, Any]]:
    """The ``/prompt`` a smoke run queues for example workflow ``name``: its API form, on the tiny models unless it
    is a toy workflow (those run the embedded toy model as they are)."""
    prompt = api_prompt(load_workflow(name), schemas)
    return prompt if is_toy(name) else tiny_variant(prompt, native_vae=native_vae)


def check_import(server: Server, our_nodes: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(what the log and ``/object_info`` say about the pack's import, the server's ``/object_info``)."""
    log = server.log()
    pack_lines = [line for line in log.splitlines() if PACK_LINK in line or "causal_forcing" in line]
    problems = [line for line in pack_lines if "IMPORT FAILED" in line or "WARNING" in line or "Error" in line
                or "Traceback" in line]
    info = _http(server.url + "/object_info", timeout=120)
    missing = [n for n in our_nodes if n not in info]
    return {"import_problems": problems, "missing_nodes": missing, "nodes_listed": len(info),
            "import_line": next((line.strip() for line in pack_lines if "custom_nodes" in line), "")}, info


def run_prompt(server: Server, prompt: dict, timeout: float) -> dict[str, Any]:
    client_id = uuid.uuid4().hex
    try:
        queued = _http(server.url + "/prompt", {"prompt": prompt, "client_id": client_id})
    except urllib.error.HTTPError as err:
        return {"ok": False, "error": json.loads(err.read() or b"{}")}
    prompt_id = queued["prompt_id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        history = _http(f"{server.url}/history/{prompt_id}")
        if prompt_id in history:
            entry = history[prompt_id]
            status = entry.get("status", {})
            messages = [m for m in status.get("messages", []) if m[0] == "execution_error"]
            return {"ok": status.get("status_str") == "success", "outputs": entry.get("outputs", {}),
                    "errors": [m[1].get("exception_message") for m in messages]}
        time.sleep(0.5)
    return {"ok": False, "error": f"not finished within {timeout:.0f} s"}


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    outputs = result.get("outputs", {})
    frames = sum(len(ui.get("causal_forcing_frames", [])) for ui in outputs.values())
    saved = [item.get("filename") for ui in outputs.values() for key in ("images", "gifs", "videos", "animated")
             for item in (ui.get(key) or []) if isinstance(item, dict)]
    return {"ok": result["ok"], "preview_frames": frames, "saved": saved,
            **({"errors": result.get("errors") or result.get("error")} if not result["ok"] else {})}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui", type=Path, default=os.environ.get("COMFYUI_PATH"), help="ComfyUI folder")
    parser.add_argument("--python", default=os.environ.get("COMFYUI_PYTHON", sys.executable),
                        help="the Python that runs ComfyUI (default: this one)")
    parser.add_argument("--models", type=Path, help="folder for the tiny models (default: a temporary one)")
    parser.add_argument("--tiny-vae", action="store_true", help="skip the real-shape random VAE (faster)")
    parser.add_argument("--workflow", action="append", help="example workflow names to run (default: all)")
    parser.add_argument("--no-toy", action="store_true", help="skip the toy workflows (causal_forcing_toy_*)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per workflow")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--front-end-root", default=os.environ.get(FRONTEND_ENV),
                        help="the frontend the server serves (a comfyui-frontend-package's static folder; default: "
                             f"${FRONTEND_ENV}, else ComfyUI's own)")
    parser.add_argument("--keep-running", action="store_true", help="leave the server up (prints its address)")
    parser.add_argument("--report", type=Path, help="also write the JSON report here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.comfyui or not (args.comfyui / "main.py").is_file():
        parser.error("give --comfyui (or COMFYUI_PATH): a ComfyUI folder holding main.py")

    sys.path.insert(0, str(ROOT / "scripts"))
    from make_tiny_models import write_tiny_models  # noqa: PLC0415

    work = Path(tempfile.mkdtemp(prefix="cf_comfyui_smoke_"))
    models = args.models or work / "models"
    written = write_tiny_models(models, full_size_vae=not args.tiny_vae)
    names = args.workflow or workflow_names()
    if args.no_toy:
        names = [n for n in names if not is_toy(n)]
    env, toy_bundle = toy_bundle_env(work) if any(is_toy(n) for n in names) else ({}, "")
    link_pack(args.comfyui)
    server = Server(args.comfyui, args.python, write_model_paths(models, work), work / "server.log",
                    args.port or _free_port(), env=env, front_end_root=args.front_end_root)
    report: dict[str, Any] = {"comfyui": str(args.comfyui), "server": server.url, "models": str(models),
                              "front_end_root": args.front_end_root or "",
                              "toy_bundle": toy_bundle}
    try:
        server.wait_up()
        from pack_import import import_pack  # noqa: PLC0415 - scripts/ is on sys.path above

        pack = import_pack()
        report["import"], object_info = check_import(server, sorted(pack.NODE_CLASSES))
        used = {n["type"] for name in names for n in load_workflow(name)["nodes"]} - VIRTUAL_NODES
        report["core_schemas"] = {t: object_info[t] for t in sorted(used - set(pack.NODE_CLASSES))
                                  if t in object_info}
        report["workflows"] = {}
        for name in names:
            prompt = smoke_prompt(name, object_info, native_vae="full_vae" in written)
            started = time.monotonic()
            result = summarise(run_prompt(server, prompt, args.timeout))
            result["seconds"] = round(time.monotonic() - started, 1)
            report["workflows"][name] = result
            logger.info("%s: %s", name, "ok" if result["ok"] else f"FAILED {result.get('errors')}")
    finally:
        report["pack_log_lines"] = [line for line in server.log().splitlines() if "causal_forcing" in line.lower()][-20:]
        if args.keep_running:
            logger.info("ComfyUI keeps running at %s (pid %d)", server.url, server.process.pid)
        else:
            server.stop()
    text = json.dumps(report, indent=2)
    print(text)
    if args.report:
        args.report.write_text(text)
    ok = (not report["import"]["import_problems"] and not report["import"]["missing_nodes"]
          and all(w["ok"] for w in report["workflows"].values()))
    if not args.keep_running and not args.models:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
