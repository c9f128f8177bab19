"""Start a real ComfyUI with this pack and run the API twins of the example workflows on tiny random models.

    python scripts/comfyui_smoke.py --comfyui /path/to/ComfyUI [--python /path/to/comfy/venv/bin/python]

What it does:

1. writes the tiny models of ``scripts/make_tiny_models.py`` (and, unless ``--tiny-vae``, a random VAE of the real
   Wan 2.1 shape, so ComfyUI's own Load VAE runs too) into ``--models`` (default: a temporary folder);
2. links this repository into ``<ComfyUI>/custom_nodes/causal-forcing-nodes`` (a symlink; an existing different
   entry is refused);
3. starts ``main.py --cpu`` on a free loopback port with an ``extra_model_paths`` file for those models;
4. checks that the pack imported (no ``IMPORT FAILED``, no warning or error logged by it) and that ``/object_info``
   lists every node of the pack;
5. queues each API twin in ``tests/workflows_api/`` mapped onto the tiny models (``build_workflows.tiny_variant``),
   waits for it, and checks the outputs: files saved, preview frames announced in the node's ``ui``. The toy
   workflows (``causal_forcing_toy_*``) run as they are, on the embedded toy model: the shipped bundle, the one
   ``$CAUSAL_FORCING_TOY_BUNDLE`` names, or else a random-weights bundle written for the run (``--no-toy`` skips
   them);
6. prints a JSON report and stops the server (``--keep-running`` leaves it up for a browser).

The script itself needs the pack's test dependencies (it writes the tiny models with torch); ComfyUI runs with
``--python``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
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
API_DIR = ROOT / "tests" / "workflows_api"
PACK_LINK = "causal-forcing-nodes"
logger = logging.getLogger("comfyui_smoke")


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
    lines += [f"    {name}: {name}" for name in ("diffusion_models", "text_encoders", "vae", "vae_approx")]
    path.write_text("\n".join(lines) + "\n")
    return path


class Server:
    """A ComfyUI server process on loopback, its log, and its address."""

    def __init__(self, comfyui: Path, python: str, model_paths: Path, log_path: Path, port: int,
                 env: dict[str, str] | None = None) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        command = [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
                   "--extra-model-paths-config", str(model_paths), "--preview-method", "auto"]
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
                      timeout: float = 300) -> Server:
    """Write the tiny models into ``work/models``, link the pack into ``comfyui``, start ComfyUI on a free loopback
    port (log: ``work/server.log``) and wait until it answers. Returns the running :class:`Server`: ``.url`` is its
    address, ``.stop()`` ends it (the caller must call it). Raises ``RuntimeError`` (server stopped) when it does not
    come up."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from make_tiny_models import write_tiny_models

    work.mkdir(parents=True, exist_ok=True)
    write_tiny_models(work / "models", full_size_vae=full_size_vae)
    link_pack(Path(comfyui))
    server = Server(Path(comfyui), python, write_model_paths(work / "models", work), work / "server.log",
                    port or _free_port())
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


def check_import(server: Server, our_nodes: list[str]) -> dict[str, Any]:
    log = server.log()
    pack_lines = [line for line in log.splitlines() if PACK_LINK in line or "causal_forcing" in line]
    problems = [line for line in pack_lines if "IMPORT FAILED" in line or "WARNING" in line or "Error" in line
                or "Traceback" in line]
    info = _http(server.url + "/object_info", timeout=120)
    missing = [n for n in our_nodes if n not in info]
    return {"import_problems": problems, "missing_nodes": missing, "nodes_listed": len(info),
            "import_line": next((line.strip() for line in pack_lines if "custom_nodes" in line), "")}


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
    parser.add_argument("--workflow", action="append", help="API twin names to run (default: all)")
    parser.add_argument("--no-toy", action="store_true", help="skip the toy workflows (causal_forcing_toy_*)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per workflow")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--keep-running", action="store_true", help="leave the server up (prints its address)")
    parser.add_argument("--report", type=Path, help="also write the JSON report here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.comfyui or not (args.comfyui / "main.py").is_file():
        parser.error("give --comfyui (or COMFYUI_PATH): a ComfyUI folder holding main.py")

    sys.path.insert(0, str(ROOT / "scripts"))
    from build_workflows import is_toy, tiny_variant  # noqa: PLC0415
    from make_tiny_models import write_tiny_models  # noqa: PLC0415

    work = Path(tempfile.mkdtemp(prefix="cf_comfyui_smoke_"))
    models = args.models or work / "models"
    written = write_tiny_models(models, full_size_vae=not args.tiny_vae)
    names = args.workflow or sorted(p.stem for p in API_DIR.glob("*.json"))
    if args.no_toy:
        names = [n for n in names if not is_toy(n)]
    env, toy_bundle = toy_bundle_env(work) if any(is_toy(n) for n in names) else ({}, "")
    link_pack(args.comfyui)
    server = Server(args.comfyui, args.python, write_model_paths(models, work), work / "server.log",
                    args.port or _free_port(), env=env)
    report: dict[str, Any] = {"comfyui": str(args.comfyui), "server": server.url, "models": str(models),
                              "toy_bundle": toy_bundle}
    try:
        server.wait_up()
        from pack_import import import_pack  # noqa: PLC0415 - scripts/ is on sys.path above

        pack = import_pack()
        report["import"] = check_import(server, sorted(pack.NODE_CLASS_MAPPINGS))
        report["workflows"] = {}
        for name in names:
            prompt = json.loads((API_DIR / f"{name}.json").read_text())
            if not is_toy(name):  # the toy workflows run the embedded toy model as they are
                prompt = tiny_variant(prompt, native_vae="full_vae" in written)
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
