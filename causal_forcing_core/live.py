"""A live stream: chunk after chunk until stopped, steered while it runs.

A :class:`LiveControl` is the mailbox between whoever steers (a server route, a test, a command line) and the
:class:`LiveLoop` that generates. Steering applies at chunk boundaries: a prompt change is taken before the next
chunk starts (text K/V swapped, optionally the cached frames re-encoded under the new prompt, LongLive re-cache),
pause holds the loop between chunks, stop ends it after the chunk in progress. What the loop made is a stream
snapshot plus the list of prompt events, which :func:`events_to_schedule` turns into a schedule text that
:func:`.schedule.parse_schedule` reads back, so an improvised take can be re-rendered offline (same seed, same
video).

A prompt is checked and encoded when it arrives, not when its chunk starts: :meth:`LiveControl.set_prompt` returns
a :class:`PromptRequest`, the loop encodes it on its own thread at its next check point (between denoising steps,
while paused, between chunks), and the request then holds either the chunk it applies to or the encoder's
:class:`.errors.CausalForcingError` (an unknown toy word, too many tokens). A refused prompt changes nothing: the
take goes on with the prompt it had.

Nothing is lost when the loop fails: any exception while generating, encoding or in ``on_chunk`` (a decoder out of
memory) ends the run with :attr:`LiveEnd.ERROR` and the message in :attr:`LiveResult.error`, and the result holds
the last snapshot whose ``on_chunk`` completed and the prompt events up to it, so the outputs agree on one length.

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

from .errors import CausalForcingError, InvalidInputError, LiveRunEndedError
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
    #: an exception ended the run (:attr:`LiveResult.error` says which); what was made is kept
    ERROR = "error"

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
    """What a live run made: the final snapshot, its prompt events (the first at chunk 0), why it ended, and the
    error's message when an exception ended it."""

    stream: Stream
    events: list[PromptEvent]
    chunks: int
    ended_by: LiveEnd
    error: str | None = None

    def schedule(self) -> str:
        """The prompt events as a schedule text (``chunk: prompt`` lines)."""
        return events_to_schedule(self.events)


def events_to_schedule(events: list[PromptEvent]) -> str:
    """``0: first prompt`` / ``5: next prompt`` lines; a later event at the same chunk replaces an earlier one."""
    by_chunk: dict[int, str] = {}
    for event in events:
        by_chunk[event.chunk] = " ".join(event.text.split())  # one line each
    return format_schedule([ScheduleEntry(chunk, text) for chunk, text in sorted(by_chunk.items())])


class PromptRequest:
    """A steering prompt waiting for the loop to encode it. :meth:`wait` gives the chunk it applies to (counted
    from the run's first chunk, as in the schedule), or raises what refused it."""

    def __init__(self, text: str, recache: bool, predicted: int) -> None:
        self.text, self.recache = text, recache
        #: the chunk it would apply to if it were encoded now (the one after the chunk in progress, if any)
        self.predicted = predicted
        self._done = threading.Event()
        self._applies_at: int | None = None
        self._error: CausalForcingError | None = None

    def resolve(self, applies_at: int | None = None, error: CausalForcingError | None = None) -> None:
        """Called once by the loop side: accepted for ``applies_at``, or refused with ``error``."""
        self._applies_at, self._error = applies_at, error
        self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> int:
        """Block until the loop has encoded the prompt (at most ``timeout`` seconds); the chunk it applies to.
        Raises the encoder's :class:`.errors.CausalForcingError`, :class:`.errors.LiveRunEndedError` when the run
        ended first, or :class:`TimeoutError`."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"the live run did not get to the prompt within {timeout} s")
        if self._error is not None:
            raise self._error
        assert self._applies_at is not None
        return self._applies_at


class LiveControl:
    """Thread-safe steering of one live run: prompt changes, pause, resume, stop.

    ``on_change(control)`` is called (outside the lock, on whichever thread made the change) when the state
    changes: pause requested or reached, resumed, stop requested, finished; the loop's owner reports chunks itself.
    Every change of the shared state happens under the control's lock; steering a run that stopped or finished
    raises :class:`LiveRunEndedError`. Prompt texts are checked by :func:`.prompt.check_prompt_text` at once, and
    by the encoder when the loop serves them (:meth:`serve_prompts`).
    """

    def __init__(self, on_change: Callable[["LiveControl"], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending: tuple[str, bool] | None = None  # encoded, waiting for its chunk boundary
        self._requests: list[PromptRequest] = []  # waiting to be encoded
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

    def set_prompt(self, text: str, recache: bool = True) -> PromptRequest:
        """Ask for ``text`` from the next chunk boundary after the loop has encoded it (a newer change before that
        boundary replaces it). Returns at once with the request; :meth:`PromptRequest.wait` tells whether the
        encoder took it. Raises :class:`InvalidInputError` for empty or too long text and
        :class:`LiveRunEndedError` once the run ended."""
        text = check_prompt_text(text)
        with self._lock:
            self._check_open()
            request = PromptRequest(text, bool(recache), self.chunk + (1 if self.generating else 0))
            self._requests.append(request)
            self._wake.notify_all()
            return request

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

    def withdraw(self, request: PromptRequest) -> bool:
        """Take back a request the loop has not served yet (a route gave up waiting); False if it was served."""
        with self._lock:
            if request in self._requests:
                self._requests.remove(request)
                return True
            return False

    # ----------------------------------------------------------------------------------------------- loop side
    def serve_prompts(self, encode: Callable[[str], object]) -> None:
        """Encode every prompt request that arrived (call on the loop's thread). An accepted prompt becomes the
        pending change; one the encoder refuses with a :class:`CausalForcingError` is answered with that error and
        changes nothing. Any other exception (out of memory) refuses the request and propagates: the run ends."""
        with self._lock:
            requests, self._requests = self._requests, []
        for index, request in enumerate(requests):
            try:
                encode(request.text)
            except CausalForcingError as err:
                logger.info("Live prompt refused: %s", err)
                request.resolve(error=err)
                continue
            except BaseException as err:
                for left in requests[index:]:
                    left.resolve(error=LiveRunEndedError(
                        f"The live run ended with an error while encoding this prompt ({type(err).__name__}: {err})."))
                raise
            with self._lock:
                self._pending = (request.text, request.recache)
                applies_at = self.chunk + (1 if self.generating else 0)
            request.resolve(applies_at)

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
        """Mark the run finished (once; later calls change nothing and announce nothing); prompt requests still
        waiting are answered with :class:`LiveRunEndedError`."""
        with self._lock:
            if self.state == LiveState.FINISHED:
                return
            self.state = LiveState.FINISHED
            self.generating = False
            left, self._requests = self._requests, []
            self._wake.notify_all()
        for request in left:
            request.resolve(error=LiveRunEndedError("The live run ended before it got to this prompt."))
        self._changed()


@dataclass
class LiveLoop:
    """Generate chunks from ``stream`` until stopped or ``max_chunks``, applying ``control``'s prompt changes at
    chunk boundaries.

    ``encode(text) -> Prompt`` turns a prompt text into embeddings (called on the loop's thread, once per distinct
    text; ``encoded`` may hold texts encoded beforehand). ``first_prompt`` (a text) drives the run from its first
    chunk; it is encoded before anything is generated, and an encoder error then propagates. ``check()`` is called
    between steps and while paused and may raise to interrupt; the loop then ends with what it made
    (``ended_by=LiveEnd.INTERRUPTED``). ``on_chunk(stream, index)`` runs after each chunk; the chunk counts as made
    once it returned. Any other exception ends the run with ``LiveEnd.ERROR`` (see the module docstring).
    ``chunk_seconds`` is the video time per chunk (pacing with ``realtime``).
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
    encoded: dict[str, Prompt] = field(default_factory=dict)

    def run(self) -> LiveResult:
        if self.max_chunks < 1:
            raise InvalidInputError(f"A live run needs at least one chunk, got max {self.max_chunks}.")
        first = check_prompt_text(self.first_prompt)
        try:
            self._prompt(first)
        except BaseException:
            self.control.finish()
            raise
        stream = self.stream
        pending: tuple[str, bool] | None = (first, self.recache_first)
        started = self.clock()
        paused_for = 0.0
        made = 0
        ended_by, error = LiveEnd.MAX_CHUNKS, None
        try:
            while made < self.max_chunks:
                self._serve()
                if self.control.stopped:
                    ended_by = LiveEnd.STOP
                    break
                before = self.clock()
                if self.control.wait_if_paused(self._check):
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
                        prompt = self._prompt(text)
                        self.events.append(PromptEvent(made, text, recache))
                        self.control.prompt_applied(text)
                    new = stream.generate(
                        1, prompt=prompt, recache=recache and stream.num_frames > 0, on_step=self._step,
                    )
                except BaseException:
                    self.control.end_chunk(made)
                    raise
                self.control.end_chunk(made + 1)  # the count on_chunk reports
                try:
                    self.on_chunk(new, made)
                except BaseException:
                    self.control.end_chunk(made)  # not shown, not made: the outputs keep one length
                    raise
                stream, made = new, made + 1
        except self.interruptions:
            ended_by = LiveEnd.INTERRUPTED
            logger.info("Live run interrupted after %d chunks; keeping them", made)
        except Exception as err:  # noqa: BLE001 - whatever failed, the take made so far is kept
            ended_by, error = LiveEnd.ERROR, _describe(err)
            logger.exception("Live run failed after %d chunks; keeping them", made)
        finally:
            self.events = [e for e in self.events if e.chunk < made]  # a switch for a chunk that was not made
            self.control.finish()
        return LiveResult(stream, list(self.events), made, ended_by, error)

    def _prompt(self, text: str) -> Prompt:
        if text not in self.encoded:
            self.encoded[text] = self.encode(text)
        return self.encoded[text]

    def _serve(self) -> None:
        self.control.serve_prompts(self._prompt)

    def _check(self) -> None:
        self.check()
        self._serve()

    def _step(self, step: int, steps: int, x0) -> None:  # noqa: ANN001 - the core's StepCallback
        self._check()
        if self.on_step is not None:
            self.on_step(step, steps, x0)


def _describe(err: BaseException) -> str:
    """An error as one line for a person: the message of our own errors, else the type and the message."""
    text = " ".join(str(err).split())
    if isinstance(err, CausalForcingError):
        return text or type(err).__name__
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
