"""One exception family for everything the core rejects.

Every message says what was wrong, what was expected and what to do about it. Callers (the ComfyUI nodes, the
command line) catch :class:`CausalForcingError` and show the message as is.
"""

from __future__ import annotations


class CausalForcingError(Exception):
    """Base class of every error the Causal Forcing core raises on purpose."""


class InvalidInputError(CausalForcingError, ValueError):
    """A tensor, size, frame count or option does not fit what the model or stream expects."""


class CheckpointError(CausalForcingError):
    """A weight file cannot be read, is not a Wan DiT, or its keys do not match the architecture."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle asked to run code while loading; we refuse such files (``weights_only=True``)."""


class CacheBudgetError(CausalForcingError, MemoryError):
    """A KV cache would need more memory than the caller allowed."""


class StreamStateError(CausalForcingError):
    """A stream operation asked for state that does not exist (rewind past the start, unknown snapshot)."""


class LiveRunEndedError(StreamStateError):
    """A live run was steered (prompt, pause, resume) after it stopped or finished; start a new run instead."""


class TakeWriteError(CausalForcingError, OSError):
    """Writing a take to disk failed part-way (disk full, file too large); the file keeps what was written."""
