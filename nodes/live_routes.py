"""Server routes that steer running live nodes.

``POST`` :data:`.protocol.CONTROL_PATH` (``/causal_forcing/live/control``) with JSON ``{"run": token, "action":
"prompt" | "pause" | "resume" | "stop", "text": "...", "recache": true}`` and ``GET`` :data:`.protocol.STATUS_PATH`
``?run=token``. The token is a random 128-bit value sent only to the client that queued the run, so a request can
reach no other user's run. Answers are JSON: 200 ``{"ok": true, "state", "chunk", "pause_requested", "prompt",
"applies_at_chunk"?}``; 400 a malformed request or a prompt the encoder refuses (the take goes on); 404 an unknown
run; 409 a run that has ended; 429 too many requests (``retry_in_ms``); 503 a run too busy to encode the prompt
within :data:`.protocol.PROMPT_WAIT_S` (``retry_in_ms``; nothing changed). The status comes from the exception's
type, never from its message. A ``prompt`` request answers once the running loop has encoded the text (between two
denoising steps), so its answer says whether the prompt will be used.

The handlers are plain blocking functions ``(query, body) -> (status, json)``, registered through
:func:`.comfy_runtime.add_json_route` (which runs them off the server's event loop), so tests call them without a
server.
"""

from __future__ import annotations

import re
import time
from typing import Any

from ..causal_forcing_core.errors import CausalForcingError, LiveRunEndedError
from . import comfy_runtime as rt
from .live_nodes import REGISTRY, LiveSession
from .protocol import ACTIONS, CONTROL_PATH, PROMPT_WAIT_S, STATUS_PATH

_TOKEN = re.compile(r"^[0-9a-f]{32}$")
#: HTTP status of a refused request, by the type of the error (the first match in order; a subclass first)
_STATUS_BY_ERROR: tuple[tuple[type[CausalForcingError], int], ...] = (
    (LiveRunEndedError, 409),
    (CausalForcingError, 400),  # InvalidInputError and the rest: the request asked for something wrong
)


def error_status(err: CausalForcingError) -> int:
    """The HTTP status for a refused steering request."""
    return next(status for kind, status in _STATUS_BY_ERROR if isinstance(err, kind))


def _session(token: Any) -> tuple[LiveSession | None, tuple[int, dict[str, Any]] | None]:
    if not isinstance(token, str) or not _TOKEN.match(token):
        return None, (400, {"error": "'run' must be the live run's id (32 hex characters)."})
    session, ended = REGISTRY.find(token)
    if session is None:
        if ended is not None:
            return None, (409, {"error": f"This live run has ended ({ended}); queue the node again to start a new one."})
        return None, (404, {"error": "No live run with this id (it may belong to a server that restarted)."})
    return session, None


def handle_control(query: dict[str, str], body: Any) -> tuple[int, dict[str, Any]]:
    """Apply one steering request to a running live node."""
    if not isinstance(body, dict):
        return 400, {"error": "Send a JSON object: {\"run\": ..., \"action\": ...}."}
    session, problem = _session(body.get("run"))
    if problem is not None:
        return problem
    action = body.get("action")
    if action not in ACTIONS:
        return 400, {"error": f"'action' must be one of {', '.join(ACTIONS)}."}
    wait = session.allow_request(time.monotonic())
    if wait > 0:
        return 429, {"error": "Too many requests; slow down.", "retry_in_ms": int(wait * 1000) + 1}
    control = session.control
    extra: dict[str, Any] = {}
    try:
        if action == "prompt":
            recache = body.get("recache", True)
            if not isinstance(recache, bool):
                return 400, {"error": "'recache' must be true or false."}
            applies_at = _wait_for_encoding(control, control.set_prompt(body.get("text"), recache))
            if applies_at is None:
                return 503, {"error": f"The live run did not get to the prompt within {PROMPT_WAIT_S:g} s (it is "
                                      "busy); nothing changed, send it again.", "retry_in_ms": 1000}
            extra["applies_at_chunk"] = applies_at
        else:
            getattr(control, action)()
    except CausalForcingError as err:
        return error_status(err), {"error": str(err)}
    return 200, {"ok": True, **control.status(), **extra}


def _wait_for_encoding(control: Any, request: Any) -> int | None:
    """The chunk the loop says ``request`` applies to once it encoded it; None when it did not get to it in time
    (the request is then withdrawn). Raises what refused it (:class:`CausalForcingError`)."""
    try:
        return request.wait(PROMPT_WAIT_S)
    except TimeoutError:
        if control.withdraw(request):
            return None
        return request.wait()  # the loop took it as the wait ended: the encoder answers every request it takes


def handle_status(query: dict[str, str], body: Any) -> tuple[int, dict[str, Any]]:
    """The state of a running live node (the same fields as its live events)."""
    session, problem = _session(query.get("run"))
    if problem is not None:
        return problem
    return 200, {"ok": True, **session.status()}


def register() -> bool:
    """Add the routes to ComfyUI's server (a no-op outside ComfyUI)."""
    return rt.add_json_route("POST", CONTROL_PATH, handle_control) and rt.add_json_route("GET", STATUS_PATH, handle_status)
