"""Layer 1: the live loop, driven in-process. Prompt events at chosen chunks give the same video as the same
schedule run offline with the same seed; pause, stop, interruption and pacing behave; bad steering is refused."""

from __future__ import annotations

import threading

import pytest
import torch

from causal_forcing_core.errors import InvalidInputError, LiveRunEndedError
from causal_forcing_core.live import LiveControl, LiveEnd, LiveLoop, LiveState, events_to_schedule
from causal_forcing_core.schedule import parse_schedule
from tiny import tiny_model, tiny_prompt, tiny_stream

TEXTS = {"a red square": 11, "a blue circle": 12, "a dog at night": 13}


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def encode(text: str):
    return tiny_prompt(TEXTS[text])


def offline(model, schedule: str, chunks: int, window: int = 0):
    """The schedule rendered the way Generate (Schedule) does: each segment switches with re-cache."""
    stream = tiny_stream(model, window_frames=window or None, sink_frames=3 if window else 0)
    entries = parse_schedule(schedule, chunks)
    bounds = [e.start for e in entries] + [chunks]
    for entry, end in zip(entries, bounds[1:]):
        stream = stream.generate(end - entry.start, prompt=encode(entry.prompt), recache=stream.num_frames > 0)
    return stream.latents


@pytest.mark.parametrize("window", [0, 6])
def test_prompt_events_give_the_offline_schedule_video(model, window: int) -> None:
    control = LiveControl()
    changes = {1: "a blue circle", 3: "a dog at night", 4: "a red square"}

    def steer(stream, index: int) -> None:  # after chunk `index`: the change applies to chunk index + 1
        if index + 1 in changes:
            control.set_prompt(changes[index + 1])

    loop = LiveLoop(tiny_stream(model, window_frames=window or None, sink_frames=3 if window else 0), encode,
                    control, "a red square", max_chunks=6, chunk_seconds=0.75, on_chunk=steer)
    result = loop.run()
    assert result.chunks == 6 and result.ended_by is LiveEnd.MAX_CHUNKS and control.state is LiveState.FINISHED
    assert result.schedule() == "0: a red square\n1: a blue circle\n3: a dog at night\n4: a red square"
    assert torch.equal(result.stream.latents, offline(model, result.schedule(), 6, window))


def test_stop_pause_and_resume_from_another_thread(model) -> None:
    control = LiveControl()
    seen = []

    def on_chunk(stream, index: int) -> None:
        seen.append(index)
        if index == 1:
            control.pause()
            threading.Timer(0.05, control.set_prompt, args=("a blue circle",)).start()
            threading.Timer(0.1, control.resume).start()
        if index == 3:
            control.stop()

    result = LiveLoop(tiny_stream(model), encode, control, "a red square", max_chunks=50, chunk_seconds=0.75,
                      on_chunk=on_chunk).run()
    assert result.ended_by is LiveEnd.STOP and result.chunks == 4 and seen == [0, 1, 2, 3]
    assert result.schedule() == "0: a red square\n2: a blue circle"
    assert torch.equal(result.stream.latents, offline(model, result.schedule(), 4))
    with pytest.raises(LiveRunEndedError, match="ended"):
        control.set_prompt("a dog at night")


class Interrupted(Exception):
    pass


def test_an_interruption_is_a_stop_not_a_loss(model) -> None:
    control = LiveControl()
    calls = {"n": 0}

    def check() -> None:
        calls["n"] += 1
        if calls["n"] == 10:  # step 2 of chunk 2
            raise Interrupted()

    def steer(stream, index: int) -> None:
        if index == 1:
            control.set_prompt("a blue circle")  # would apply to the chunk that gets cut off

    result = LiveLoop(tiny_stream(model), encode, control, "a red square", max_chunks=9, chunk_seconds=0.75,
                      check=check, on_chunk=steer, interruptions=(Interrupted,)).run()
    assert result.ended_by is LiveEnd.INTERRUPTED and result.chunks == 2 and result.stream.num_chunks == 2
    assert result.schedule() == "0: a red square"
    assert torch.equal(result.stream.latents, offline(model, "0: a red square", 2))


def test_realtime_pacing_waits_for_the_clock_and_keeps_the_video(model, monkeypatch) -> None:
    now = {"t": 0.0}
    naps = []
    control = LiveControl()

    def sleep(seconds: float) -> None:  # a fake clock: sleeping advances it
        naps.append(round(seconds, 3))
        now["t"] += seconds

    monkeypatch.setattr(control, "sleep", sleep)
    result = LiveLoop(tiny_stream(model), encode, control, "a red square", max_chunks=4, chunk_seconds=0.75,
                      realtime=True, lead_chunks=1, clock=lambda: now["t"]).run()
    assert naps == [0.75, 0.75]  # chunks 0 and 1 go at once (one chunk of lead), then one per 0.75 s
    assert torch.equal(result.stream.latents, offline(model, "0: a red square", 4))


def test_bad_steering_is_refused() -> None:
    control = LiveControl()
    for text in ("", "   ", None, "x" * 2001):
        with pytest.raises(InvalidInputError):
            control.set_prompt(text)  # type: ignore[arg-type]
    request = control.set_prompt("  a dog at night  ")
    assert request.predicted == 0 and not request.done  # not encoded yet: nothing pending for the loop
    control.serve_prompts(encode)
    assert request.wait(0) == 0 and control.take_prompt() == ("a dog at night", True)
    control.stop()
    for action in (control.pause, control.resume, lambda: control.set_prompt("a cat")):
        with pytest.raises(LiveRunEndedError):  # typed, so a server can answer 409 without reading the message
            action()


def test_states_are_enums_with_the_json_values_clients_read() -> None:
    changes = []
    control = LiveControl(on_change=lambda c: changes.append(c.status()["state"]))
    assert control.status() == {"state": "running", "chunk": 0, "pause_requested": False, "prompt": ""}
    assert type(control.status()["state"]) is str  # the plain value goes into JSON, not the enum
    control.prompt_applied("a cat")
    assert control.prompt == "a cat" and control.status()["prompt"] == "a cat"
    control.stop()
    control.finish()
    control.finish()  # a second finish changes and announces nothing
    assert control.state is LiveState.FINISHED and changes == ["stopping", "finished"]
    assert [s.value for s in LiveState] == ["running", "paused", "stopping", "finished"]
    assert {e.value for e in LiveEnd} == {"stop", "max_chunks", "interrupted", "error"} and str(LiveEnd.STOP) == "stop"


def test_events_to_schedule_reads_back() -> None:
    from causal_forcing_core.live import PromptEvent

    events = [PromptEvent(0, "a cat\nwalks"), PromptEvent(4, "a dog"), PromptEvent(4, "a bird")]
    text = events_to_schedule(events)
    assert text == "0: a cat walks\n4: a bird"
    assert [e.start for e in parse_schedule(text, 6)] == [0, 4]


def test_committed_frames_joins_only_what_it_needs(model) -> None:
    from causal_forcing_core.stream import committed_frames

    stream = tiny_stream(model).generate(3)
    stream = stream.switch_prompt(encode("a blue circle"), recache=True).generate(2)
    everything = stream.latents
    for start, end in ((0, 15), (3, 9), (4, 5), (12, 15), (2, 14)):
        assert torch.equal(committed_frames(stream.history, start, end), everything[:, start:end])


def test_a_pending_prompt_does_not_make_the_paced_loop_spin(monkeypatch) -> None:
    """Pacing waits for the clock even with a prompt change waiting (it applies at its chunk's turn): sleep must
    block on the condition, not return at once (which made the loop spin and hog the GIL); stop ends a wait."""
    control = LiveControl()
    waits = []
    monkeypatch.setattr(control._wake, "wait", lambda timeout=None: waits.append(timeout))
    control.set_prompt("a blue circle")
    control.sleep(0.5)
    assert waits == [0.5]
    control.stop()
    control.sleep(0.5)
    assert waits == [0.5]


# ------------------------------------------------------------------------------------------- nothing lost (issue 12)
def strict_encode(text: str):
    """Like the toy text encoder: words it does not know are refused with a message."""
    if text not in TEXTS:
        raise InvalidInputError(f"unknown words in {text!r}")
    return encode(text)


def test_a_refused_prompt_is_answered_and_the_take_goes_on(model) -> None:
    control = LiveControl()
    answers = {}

    def steer_from_the_browser(stream, index: int) -> None:  # another thread, as the server's route is
        if index in (1, 3):
            text = {1: "a blu circle", 3: "a blue circle"}[index]
            request = control.set_prompt(text)
            waiter = threading.Thread(target=lambda: answers.setdefault(index, _outcome(request)))
            waiter.start()
            answers.setdefault("threads", []).append(waiter)

    result = LiveLoop(tiny_stream(model), strict_encode, control, "a red square", max_chunks=6, chunk_seconds=0.75,
                      on_chunk=steer_from_the_browser).run()
    for waiter in answers["threads"]:
        waiter.join(10)
    assert isinstance(answers[1], InvalidInputError) and "unknown words" in str(answers[1])
    assert answers[3] == 4  # encoded at the top of the next chunk: applies to chunk 4
    assert result.ended_by is LiveEnd.MAX_CHUNKS and result.chunks == 6 and result.error is None
    assert result.schedule() == "0: a red square\n4: a blue circle"
    assert torch.equal(result.stream.latents, offline(model, result.schedule(), 6))


def _outcome(request):
    try:
        return request.wait(10)
    except Exception as err:  # noqa: BLE001 - the test looks at what came back
        return err


def test_a_bad_first_prompt_fails_before_any_chunk(model) -> None:
    control = LiveControl()
    made = []
    with pytest.raises(InvalidInputError, match="unknown words"):
        LiveLoop(tiny_stream(model), strict_encode, control, "a purple blob", max_chunks=3, chunk_seconds=0.75,
                 on_chunk=lambda s, i: made.append(i)).run()
    assert made == [] and control.state is LiveState.FINISHED


class OutOfMemory(RuntimeError):
    pass


@pytest.mark.parametrize("where", ["step", "on_chunk", "encoder"])
def test_a_failure_inside_the_loop_ends_the_run_as_error_and_keeps_the_take(model, where: str) -> None:
    """A failure in a denoising step, in on_chunk (the decoder) or in the encoder of a steering prompt ends the run
    as "error" with the snapshot, events and chunk count of the last chunk that was fully made and shown."""
    control = LiveControl()
    steps = {"n": 0}
    shown = []
    late = {}

    def check() -> None:
        steps["n"] += 1
        if where == "step" and steps["n"] == 4 * 3 + 2:  # step 2 of chunk 3
            raise OutOfMemory("CUDA out of memory")

    def on_chunk(stream, index: int) -> None:
        if where == "on_chunk" and index == 3:
            raise OutOfMemory("decoder out of memory")
        shown.append(index)
        if index == 1:
            control.set_prompt("a blue circle")  # applies to chunk 2
        if index == 2:
            late["request"] = control.set_prompt("a dog at night")  # encoded before chunk 3

    def encoder(text: str):
        if where == "encoder" and text == "a dog at night":
            raise OutOfMemory("text encoder out of memory")
        return encode(text)

    result = LiveLoop(tiny_stream(model), encoder, control, "a red square", max_chunks=8, chunk_seconds=0.75,
                      check=check, on_chunk=on_chunk).run()
    assert result.ended_by is LiveEnd.ERROR and "out of memory" in result.error and "OutOfMemory" in result.error
    assert result.chunks == 3 and result.stream.num_chunks == 3 and shown == [0, 1, 2]
    assert control.state is LiveState.FINISHED and control.chunk == 3
    assert result.schedule() == "0: a red square\n2: a blue circle"
    assert torch.equal(result.stream.latents, offline(model, result.schedule(), 3))
    if where == "encoder":  # the browser that sent the prompt is told the run ended
        with pytest.raises(LiveRunEndedError, match="text encoder out of memory"):
            late["request"].wait(1)
    else:
        assert late["request"].wait(1) == 3


def test_prompts_waiting_when_the_run_ends_are_answered() -> None:
    control = LiveControl()
    request = control.set_prompt("a cat")
    control.finish()
    with pytest.raises(LiveRunEndedError, match="ended before"):
        request.wait(1)
    with pytest.raises(TimeoutError):
        LiveControl().set_prompt("a dog").wait(0.01)
