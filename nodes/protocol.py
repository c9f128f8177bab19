"""The names the Python side and the browser side (``js/``) must agree on: websocket events, ``ui`` output keys,
server routes, live-control actions and why a live run ended.

Each name is written here once; the node modules use these constants, and ``tests/test_js_contract.py`` checks
that the JS files use the same strings (the JS keeps its own copies: it cannot import Python).
"""

from __future__ import annotations

from enum import Enum

# --------------------------------------------------------------------------------------------------- websocket
#: the frames of one generated chunk (see :mod:`.live_preview`), played by ``js/causal_forcing_player.js``
CHUNK_EVENT = "causal_forcing.chunk"
#: a live run's state, sent at its start, after each chunk and on every state change (see :mod:`.live_nodes`)
LIVE_EVENT = "causal_forcing.live"

# --------------------------------------------------------------------------------------------------- node ui output
#: ``ui`` key: the preview frames of the node's run (``[{"filename", "subfolder", "type"}]``), replayed by the player
UI_FRAMES_KEY = "causal_forcing_frames"
#: ``ui`` key: ``[frames per second]`` of those frames
UI_FPS_KEY = "causal_forcing_fps"

# --------------------------------------------------------------------------------------------------- routes
#: ``POST`` steering requests for a live run (see :mod:`.live_routes`)
CONTROL_PATH = "/causal_forcing/live/control"
#: ``GET ?run=<token>``: a live run's state (the fields of its :data:`LIVE_EVENT` events)
STATUS_PATH = "/causal_forcing/live/status"
#: the ``action`` values a control request may carry
ACTIONS: tuple[str, ...] = ("prompt", "pause", "resume", "stop")
#: the longest a prompt request waits for the running loop to encode it, in seconds (then: 503, send it again)
PROMPT_WAIT_S = 30.0


class RunEnd(str, Enum):
    """Why a live node's run ended: the ``ended_by`` of its last :data:`LIVE_EVENT` (the JS labels these)."""

    #: Stop was pressed (keeps what was made)
    STOP = "stop"
    #: the run was cancelled from ComfyUI's queue (keeps what was made, like Stop)
    INTERRUPTED = "interrupted"
    #: the run reached its maximum length
    MAX_CHUNKS = "max_chunks"
    #: the client that queued the run went away
    DISCONNECTED = "disconnected"
    #: an exception ended the run (the event's ``error`` says which); what was made is kept as the outputs
    ERROR = "error"

    def __str__(self) -> str:
        return self.value
