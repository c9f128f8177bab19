"""Check in a real ComfyUI that a live run's steering stays private and that the control route answers malformed
bodies with 4xx:

    python scripts/live_privacy_check.py --comfyui /path/to/ComfyUI [--python /path/to/comfy/venv/bin/python]

1. starts ComfyUI on the tiny models (:func:`comfyui_smoke.start_tiny_server`) and connects a websocket as another
   page would (its own client id);
2. queues the tiny live workflow through ``/prompt`` *without* a ``client_id``, as an API client does, and reads
   every message that page receives until the run is over: the frames may reach it (ComfyUI broadcasts a run
   without a client), the run's steering token must not (no ``causal_forcing.live`` event, no 32-hex token);
3. posts malformed bodies to the control route (``[`` x 16,000, not UTF-8, not JSON, over the size cap, an unknown
   run) and records each status and message: every one must be 4xx.

Prints a JSON report; exits 1 when a check fails. The websocket client is a minimal one of its own (the standard
library has none), enough for ComfyUI's text and binary messages.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import socket
import struct
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfyui_smoke  # noqa: E402

TOKEN = re.compile(r"\b[0-9a-f]{32}\b")
CONTROL = "/causal_forcing/live/control"


class WebSocket:
    """Just enough of RFC 6455 to read a ComfyUI server's messages (the server never masks; we send nothing)."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        parts = urllib.parse.urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade"
                           f"\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("the server closed the websocket handshake")
            head += chunk
        status, _, self.buffer = head.partition(b"\r\n\r\n")
        if b" 101 " not in status.split(b"\r\n")[0]:
            raise ConnectionError(f"websocket refused: {status.decode(errors='replace')[:200]}")

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("websocket closed")
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def receive(self) -> tuple[int, bytes]:
        """One message: (opcode, payload); 1 text, 2 binary, 8 close."""
        first, second = self._read(2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack(">H", self._read(2))[0]
        elif length == 127:
            length = struct.unpack(">Q", self._read(8))[0]
        return first & 0x0F, self._read(length)

    def close(self) -> None:
        self.sock.close()


def post_raw(url: str, body: bytes) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            return err.code, json.loads(raw)
        except ValueError:
            return err.code, raw[:200].decode(errors="replace")


def watch_api_run(server: comfyui_smoke.Server, prompt: dict, timeout: float) -> dict[str, Any]:
    """Queue ``prompt`` without a client id while another page listens; what that page received."""
    ws = WebSocket(server.url.replace("http://", "ws://") + "/ws?clientId=another-page", timeout=timeout)
    seen: dict[str, Any] = {"events": {}, "tokens": [], "binary_messages": 0}
    try:
        queued = comfyui_smoke._http(server.url + "/prompt", {"prompt": prompt})  # no client_id: an API client
        seen["prompt_id"] = prompt_id = queued["prompt_id"]
        deadline = time.monotonic() + timeout
        ws.sock.settimeout(1.0)
        while time.monotonic() < deadline:
            try:
                opcode, payload = ws.receive()
            except TimeoutError:  # ComfyUI tells only a run's own client that it ended: ask /history
                entry = comfyui_smoke._http(f"{server.url}/history/{prompt_id}").get(prompt_id)
                if entry is not None:
                    seen["ended"] = entry.get("status", {}).get("status_str")
                    break
                continue
            if opcode == 2:
                seen["binary_messages"] += 1
                continue
            if opcode != 1:
                continue
            text = payload.decode()
            message = json.loads(text)
            kind = message.get("type", "?")
            seen["events"][kind] = seen["events"].get(kind, 0) + 1
            seen["tokens"] += TOKEN.findall(text.replace(prompt_id, ""))
            data = message.get("data") or {}
            if kind in ("execution_error", "execution_interrupted") and data.get("prompt_id") == prompt_id:
                seen["ended"] = kind
                break
    finally:
        ws.close()
    return seen


def malformed_bodies(server: comfyui_smoke.Server) -> dict[str, Any]:
    url = server.url + CONTROL
    bodies = {
        "nested 16,000 deep": b"[" * 16_000,
        "objects nested 3,000 deep": b'{"a":' * 3_000,  # 15,000 bytes: under the size cap
        "not UTF-8": b"\xff\xfe\xfd",
        "not JSON": b"{run: stop}",
        "a list": b"[1, 2]",
        "over the size cap": b'{"run": "' + b"a" * 20_000 + b'"}',
        "an unknown run": json.dumps({"run": "0" * 32, "action": "stop"}).encode(),
        "a text that is not a string": json.dumps({"run": "0" * 32, "action": "prompt", "text": [[["x"]]]}).encode(),
    }
    return {name: dict(zip(("status", "answer"), post_raw(url, body))) for name, body in bodies.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui", type=Path, default=os.environ.get("COMFYUI_PATH"), help="ComfyUI folder")
    parser.add_argument("--python", default=os.environ.get("COMFYUI_PYTHON", sys.executable),
                        help="the Python that runs ComfyUI")
    parser.add_argument("--work", type=Path, default=None, help="where models and the server log go (temp dir)")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args(argv)
    if args.comfyui is None:
        parser.error("--comfyui (or COMFYUI_PATH) is required")
    import tempfile

    work = args.work or Path(tempfile.mkdtemp(prefix="cf-live-privacy-"))
    server = comfyui_smoke.start_tiny_server(args.comfyui, args.python, work)
    report: dict[str, Any] = {"server_log": str(work / "server.log")}
    try:
        schemas = comfyui_smoke._http(server.url + "/object_info", timeout=120)
        prompt = comfyui_smoke.smoke_prompt("causal_forcing_live", schemas)  # 6 s of video, unpaced
        report["api_run"] = watch_api_run(server, prompt, args.timeout)
        report["malformed"] = malformed_bodies(server)
    finally:
        server.stop()
    run, bad = report["api_run"], report["malformed"]
    report["checks"] = checks = {
        "the API run finished": run.get("ended") == "success",
        "its frames reached the other page": run["events"].get("causal_forcing.chunk", 0) > 0,
        "no live event (it carries the token) reached the other page": "causal_forcing.live" not in run["events"],
        "no 32-hex token reached the other page": not run["tokens"],
        "every malformed body is answered 4xx with a JSON error": all(
            400 <= r["status"] < 500 and isinstance(r["answer"], dict) and r["answer"].get("error") for r in bad.values()),
    }
    report["ok"] = all(checks.values())
    sys.stdout.write(json.dumps(report, indent=2) + "\n")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
