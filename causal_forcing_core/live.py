"""A live stream: chunk after chunk until stopped, steered while it runs.

A :class:`LiveControl` is the mailbox between whoever steers (a server route, a test, a command line) and the
:class:`LiveLoop` that generates. Steering applies at chunk boundaries: a prompt change is taken before the next
chunk starts (text K/V swapped, optionally the cached frames re-encoded under the new prompt, LongLive re-cache),
pause holds the loop between chunks, stop ends it after the chunk in progress. What the loop made is a stream
snapshot plus the list of prompt events, which :func:`events_to_schedule` turns into a schedule text that
:func:`.schedule.parse_schedule` reads back, so an improvised take can be re-rendered offline (same seed, same
video).

Pacing: with ``realtime`` the loop never runs more than ``lead_chunks`` chunks ahead of the wall clock at the
stream's frame rate (back-pressure), so a prompt change shows up within about a chunk of what the viewer sees.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from .errors import InvalidInputError, LiveRunEndedError
from .prompt import Prompt, check_prompt_text
from .schedule import ScheduleEntry, format_schedule
from .stream import StepCallback, Stream

logger = logging.getLogger(__name__)


class LiveState(str, Enum):
    """The state of a live run (its value is what clients see in status JSON)."""

    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"
    FINISHED = "finished"

    def __str__(self) -> str:
        return self.value


class LiveEnd(str, Enum):
    """Why a :class:`LiveLoop` run ended."""

    #: :meth:`LiveControl.stop` was called
    STOP = "stop"
    #: the run made its ``max_chunks`` chunks
    MAX_CHUNKS = "max_chunks"
    #: ``check()`` raised one of the loop's ``interruptions``
    INTERRUPTED = "interrupted"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class PromptEvent:
    """``text`` drives the live run from chunk ``chunk`` (counted from the run's first chunk) on."""

    chunk: int
    text: str
    recache: bool = True


@dataclass
class LiveResult:
    """What a live run made: the final snapshot, its prompt events (the first at chunk 0), and why it ended."""

    stream: Stream
    events: list[PromptEvent]
    chunks: int
    ended_by: LiveEnd

    def schedule(self) -> str:
        """The prompt events as a schedule text (``chunk: prompt`` lines)."""
        return events_to_schedule(self.events)


def events_to_schedule(events: list[PromptEvent]) -> str:
    """``0: first prompt`` / ``5: next prompt`` lines; a later event at the same chunk replaces an earlier one."""
    by_chunk: dict[int, str] = {}
    for event in events:
        by_chunk[event.chunk] = " ".join(event.text.split())  # one line each
    return format_schedule([ScheduleEntry(chunk, text) for chunk, text in sorted(by_chunk.items())])


class LiveControl:
    """Thread-safe steering of one live run: prompt changes, pause, resume, stop.

    ``on_change(control)`` is called (outside the lock, on whichever thread made the change) when the state
    changes: pause requested or reached, resumed, stop requested, finished; the loop's owner reports chunks itself.
    Every change of the shared state happens under the control's lock; steering a run that stopped or finished
    raises :class:`LiveRunEndedError`. Prompt texts are checked by :func:`.prompt.check_prompt_text`.
    """

    def __init__(self, on_change: Callable[["LiveControl"], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending: tuple[str, bool] | None = None
        self._paused = False
        self._stop = False
        self.on_change = on_change
        self.state = LiveState.RUNNING
        self.chunk = 0  # chunks made so far
        self.generating = False  # a chunk is being made now
        self._prompt = ""  # the prompt text driving the newest chunk

    @property
    def prompt(self) -> str:
        """The prompt text driving the newest chunk ("" before the first)."""
        with self._lock:
            return self._prompt

    def set_prompt(self, text: str, recache: bool = True) -> int:
        """Use ``text`` from the next chunk boundary on (a newer change before that boundary replaces it);
        returns the index of the chunk it will apply to (the one after the chunk in progress, if any)."""
        text = check_prompt_text(text)
        with self._lock:
            self._check_open()
            self._pending = (text, bool(recache))
            self._wake.notify_all()
            return self.chunk + (1 if self.generating else 0)

    def pause(self) -> None:
        """Hold the loop at the next chunk boundary (``pause_requested`` until it gets there)."""
        with self._lock:
            self._check_open()
            self._paused = True
            self._wake.notify_all()
        self._changed()

    def resume(self) -> None:
        with self._lock:
            self._check_open()
            self._paused = False
            self._wake.notify_all()
        self._changed()

    def stop(self) -> None:
        """End the run after the chunk in progress (a stopped run keeps everything it made)."""
        with self._lock:
            if self._stop or self.state == LiveState.FINISHED:
                return
            self._stop = True
            self.state = LiveState.STOPPING
            self._wake.notify_all()
        self._changed()

    @property
    def stopped(self) -> bool:
        with self._lock:
            return self._stop

    @property
    def pause_requested(self) -> bool:
        with self._lock:
            return self._paused and not self._stop

    def status(self) -> dict[str, object]:
        """What a client shows: state (its string value), chunks made, whether a pause is pending, and the
        current prompt."""
        with self._lock:
            return {"state": self.state.value, "chunk": self.chunk,
                    "pause_requested": self._paused and not self._stop, "prompt": self._prompt}

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change(self)
            except Exception:  # noqa: BLE001 - a broken listener must not break the run
                logger.exception("live run listener failed")

    def _check_open(self) -> None:
        """Raise :class:`LiveRunEndedError` once the run stopped or finished (call with the lock held)."""
        if self.state in (LiveState.FINISHED, LiveState.STOPPING) or self._stop:
            raise LiveRunEndedError("This live run has ended; start a new one to steer it.")

    # ----------------------------------------------------------------------------------------------- loop side
    def take_prompt(self) -> tuple[str, bool] | None:
        """The pending prompt change (None if none); from now until :meth:`end_chunk` a chunk counts as in progress,
        so a change arriving meanwhile is announced for the chunk after it."""
        with self._lock:
            pending, self._pending = self._pending, None
            self.generating = True
            return pending

    def prompt_applied(self, text: str) -> None:
        """The loop makes the chunk in progress (and the ones after it) with ``text``."""
        with self._lock:
            self._prompt = text

    def end_chunk(self, made: int) -> None:
        with self._lock:
            self.generating = False
            self.chunk = made

    def wait_if_paused(self, check: Callable[[], None], poll_s: float = 0.1) -> bool:
        """Block while paused (calling ``check`` every ``poll_s``, which may raise to interrupt); True if it did."""
        with self._lock:
            if not self._paused or self._stop:
                return False
            self.state = LiveState.PAUSED
        self._changed()
        try:
            with self._lock:
                while self._paused and not self._stop:
                    self._lock.release()
                    try:
                        check()
                    finally:
                        self._lock.acquire()
                    self._wake.wait(poll_s)
        finally:
            with self._lock:
                if self.state == LiveState.PAUSED:
                    self.state = LiveState.RUNNING
            self._changed()
        return True

    def sleep(self, seconds: float) -> None:
        """Wait up to ``seconds`` (pacing); a stop or pause ends the wait, any change wakes it for a re-check. A
        pending prompt does not shorten it: the change waits for its chunk's turn like any other chunk."""
        if seconds <= 0:
            return
        with self._lock:
            if not (self._stop or self._paused):
                self._wake.wait(seconds)

    def finish(self) -> None:
        """Mark the run finished (once; later calls change nothing and announce nothing)."""
        with self._lock:
            if self.state == LiveState.FINISHED:
                return
            self.state = LiveState.FINISHED
            self.generating = False
            self._wake.notify_all()
        self._changed()


@dataclass
class LiveLoop:
    """Generate chunks from ``stream`` until stopped or ``max_chunks``, applying ``control``'s prompt changes at
    chunk boundaries.

    ``encode(text) -> Prompt`` turns a prompt text into embeddings (called on the loop's thread). ``first_prompt``
    (a text) drives the run from its first chunk. ``check()`` is called between steps and while paused and may
    raise to interrupt; the loop then ends with what it made (``ended_by=LiveEnd.INTERRUPTED``). ``on_chunk(stream,
    index)`` runs after each chunk. ``chunk_seconds`` is the video time per chunk (pacing with ``realtime``).
    """

    stream: Stream
    encode: Callable[[str], Prompt]
    control: LiveControl
    first_prompt: str
    max_chunks: int
    chunk_seconds: float
    realtime: bool = False
    lead_chunks: int = 1
    recache_first: bool = True
    check: Callable[[], None] = lambda: None
    on_chunk: Callable[[Stream, int], None] = lambda stream, index: None
    on_step: StepCallback | None = None
    interruptions: tuple[type[BaseException], ...] = ()
    clock: Callable[[], float] = time.monotonic
    events: list[PromptEvent] = field(default_factory=list)

    def run(self) -> LiveResult:
        if self.max_chunks < 1:
            raise InvalidInputError(f"A live run needs at least one chunk, got max {self.max_chunks}.")
        stream = self.stream
        prompts: dict[str, Prompt] = {}
        pending: tuple[str, bool] | None = (check_prompt_text(self.first_prompt), self.recache_first)
        started = self.clock()
        paused_for = 0.0
        made = 0
        ended_by = LiveEnd.MAX_CHUNKS
        try:
            while made < self.max_chunks:
                if self.control.stopped:
                    ended_by = LiveEnd.STOP
                    break
                before = self.clock()
                if self.control.wait_if_paused(self.check):
                    paused_for += self.clock() - before
                if self.control.stopped:
                    ended_by = LiveEnd.STOP
                    break
                if self.realtime:  # back-pressure: stay at most lead_chunks ahead of real time
                    ahead = (made - self.lead_chunks) * self.chunk_seconds - (self.clock() - started - paused_for)
                    if ahead > 0:
                        self.control.sleep(ahead)
                        continue  # re-check stop / pause / prompt after waking
                change = self.control.take_prompt() or pending
                pending = None
                prompt = None
                recache = False
                try:
                    if change is not None:
                        text, recache = change
                        if text not in prompts:
                            prompts[text] = self.encode(text)
                        prompt = prompts[text]
                        self.events.append(PromptEvent(made, text, recache))
                        self.control.prompt_applied(text)
                    stream = stream.generate(
                        1, prompt=prompt, recache=recache and stream.num_frames > 0, on_step=self._step,
                    )
                    made += 1
                finally:
                    self.control.end_chunk(made)
                self.on_chunk(stream, made - 1)
        except self.interruptions:
            ended_by = LiveEnd.INTERRUPTED
            self.events = [e for e in self.events if e.chunk < made]  # a switch for the chunk that was cut off
            logger.info("Live run interrupted after %d chunks; keeping them", made)
        finally:
            self.control.finish()
        return LiveResult(stream, list(self.events), made, ended_by)

    def _step(self, step: int, steps: int, x0) -> None:  # noqa: ANN001 - the core's StepCallback
        self.check()
        if self.on_step is not None:
            self.on_step(step, steps, x0)
