"""Layer 3: the live node driven in-process (no ComfyUI): steering through the route handlers gives the same
video as the recorded schedule re-rendered offline; stop, queue interruption and a vanished client end a run
cleanly with its outputs; the routes validate every request."""

from __future__ import annotations

import importlib
import sys
import threading
import time
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import torch

from causal_forcing_core.video_io import read_video_frames
from comfy_sim import MiniComfy, call
from test_nodes_stream import PROMPTS, chain, env, models_dir  # noqa: F401 - fixtures


@pytest.fixture
def live(env, monkeypatch: pytest.MonkeyPatch):  # noqa: F811
    """A fake ComfyUI server that records events per client, and the pack's live modules."""
    events: list[tuple[str, dict, str | None]] = []
    listeners = []
    instance = SimpleNamespace(client_id="browser-1", sockets={"browser-1": object()})

    def send_sync(event, data, sid=None):
        events.append((event, data, sid))
        for listener in listeners:
            listener(event, data, sid)

    instance.send_sync = send_sync
    server = ModuleType("server")
    server.PromptServer = SimpleNamespace(instance=instance)
    monkeypatch.setitem(sys.modules, "server", server)
    name = env.pack.__name__
    return SimpleNamespace(
        env=env, events=events, listeners=listeners, instance=instance,
        nodes=importlib.import_module(f"{name}.nodes.live_nodes"),
        routes=importlib.import_module(f"{name}.nodes.live_routes"),
    )


def _start(env, window: int = 6):  # noqa: F811
    comfy = MiniComfy(env.nodes)
    out = comfy.run(chain(prompts=PROMPTS[:1], chunks=(), window=window, sink=3 if window else 0), "3", "2")
    return out["3"][0], out["2"][0]


def _run_live(live, stream, encoder, seconds=6, **kw):
    args = dict(stream=stream, prompt=PROMPTS[0], max_seconds=seconds, realtime=False, recache=True,
                decoder="preview", text_encoder=encoder)
    args.update(kw)
    return call(live.env.nodes["CausalForcingLive"], hidden={"unique_id": "30"}, **args)


class Browser:
    """Sends control requests from threads of its own, as the server does (a prompt request waits for the loop to
    encode it, so it cannot be answered on the loop's thread). ``send`` returns once the request was answered or,
    for a prompt, handed to the run (so the chunk it applies to does not depend on thread timing)."""

    def __init__(self, live, monkeypatch) -> None:
        self.routes = live.routes
        self.handed = threading.Semaphore(0)
        control_class = live.nodes.LiveControl
        original = control_class.set_prompt

        def set_prompt(control, *args, **kwargs):
            request = original(control, *args, **kwargs)
            self.handed.release()
            return request

        monkeypatch.setattr(control_class, "set_prompt", set_prompt)
        self.threads: list[threading.Thread] = []

    def send(self, body) -> dict:
        box: dict = {}
        thread = threading.Thread(target=lambda: box.update(answer=self.routes.handle_control({}, body)))
        thread.start()
        self.threads.append(thread)
        while thread.is_alive() and not self.handed.acquire(timeout=0.01):
            pass
        return box

    def answers(self, boxes: list[dict]) -> list[tuple[int, dict]]:
        for thread in self.threads:
            thread.join(30)
        return [box["answer"] for box in boxes]


def test_steering_through_the_route_equals_the_schedule_offline(live, monkeypatch) -> None:
    stream, encoder = _start(live.env)
    browser = Browser(live, monkeypatch)
    sent = []

    def page(event, data, sid):  # reacts to the run's own events, as the page does
        if event != "causal_forcing.live" or data["state"] != "running":
            return
        assert sid == "browser-1"
        steer = {2: PROMPTS[1], 5: PROMPTS[2]}
        if data["chunk"] in steer and data["chunk"] not in [c for c, _ in sent]:
            sent.append((data["chunk"], browser.send({"run": data["run"], "action": "prompt",
                                                      "text": steer[data["chunk"]]})))

    live.listeners.append(page)
    out = _run_live(live, stream, encoder, seconds=6)  # 6 s = 8 chunks of 0.75 s
    handle, images, schedule = out.result[:3]
    answers = browser.answers([box for _, box in sent])
    assert [a[0] for a in answers] == [200, 200] and [a[1]["applies_at_chunk"] for a in answers] == [2, 5]
    assert schedule == f"0: {PROMPTS[0]}\n2: {PROMPTS[1]}\n5: {PROMPTS[2]}"
    assert handle.stream.num_chunks == 8 and images.shape == (8 * 12 - 3, 64, 64, 3)
    # the improvised take, re-rendered offline from its schedule with the same seed, is the same video
    node = live.env.nodes
    sched, = call(node["CausalForcingPromptSchedule"], schedule, "chunks", text_encoder=encoder).result
    again = call(node["CausalForcingGenerateSchedule"], stream, sched, 8, "chunks", True).result[0]
    assert torch.equal(again.stream.latents, handle.stream.latents)
    last = [d for e, d, _ in live.events if e == "causal_forcing.live"][-1]
    assert last["state"] == "finished" and last["ended_by"] == "max_chunks" and len(live.nodes.REGISTRY) == 0
    assert all(sid == "browser-1" for e, _, sid in live.events if e.startswith("causal_forcing."))


def test_stop_pause_and_a_finished_run(live) -> None:
    stream, encoder = _start(live.env)
    seen = {}

    def browser(event, data, sid):
        if event != "causal_forcing.live":
            return
        seen["run"] = data["run"]
        if data["chunk"] == 3 and data["state"] == "running" and "steered" not in seen:
            seen["steered"] = True  # the requests below announce changes, which call this again
            seen["pause"] = live.routes.handle_control({}, {"run": data["run"], "action": "pause"})
            seen["status"] = live.routes.handle_status({"run": data["run"]}, None)
            seen["resume"] = live.routes.handle_control({}, {"run": data["run"], "action": "resume"})
            seen["stopped"] = live.routes.handle_control({}, {"run": data["run"], "action": "stop"})

    live.listeners.append(browser)
    handle, images, schedule = _run_live(live, stream, encoder, seconds=60).result[:3]
    assert seen["pause"][0] == 200 and seen["pause"][1]["pause_requested"] is True
    assert seen["status"][1]["chunk"] == 3 and seen["resume"][0] == 200
    assert seen["stopped"][0] == 200 and seen["stopped"][1]["state"] == "stopping"
    assert handle.stream.num_chunks == 3 and schedule == f"0: {PROMPTS[0]}"
    # the end is announced once, with its reason (the take is closed first; the player labels "finished (stopped)")
    ends = [d for e, d, _ in live.events if e == "causal_forcing.live" and d["state"] == "finished"]
    assert [d.get("ended_by") for d in ends] == ["stop"]
    late = live.routes.handle_control({}, {"run": seen["run"], "action": "prompt", "text": "a cat"})
    assert late[0] == 409 and "ended (stop)" in late[1]["error"]


def test_a_queue_interrupt_and_a_vanished_client_end_the_run_with_its_outputs(live, monkeypatch) -> None:
    stream, encoder = _start(live.env)

    class Interrupt(Exception):
        pass

    steps = {"n": 0}

    def interrupt_at_step_10():
        steps["n"] += 1
        if steps["n"] == 10:
            raise Interrupt()

    rt = live.env.rt
    monkeypatch.setattr(rt, "throw_if_interrupted", interrupt_at_step_10)
    monkeypatch.setattr(rt, "interruption_types", lambda: (Interrupt,))
    handle, images, schedule = _run_live(live, stream, encoder, seconds=60).result[:3]
    assert handle.stream.num_chunks == 2 and images.shape[0] == 2 * 12 - 3
    ended = [d for e, d, _ in live.events if e == "causal_forcing.live"][-1]
    assert ended["ended_by"] == "interrupted"  # a cancel from the queue, labelled as such, keeping the take

    monkeypatch.setattr(rt, "throw_if_interrupted", lambda: None)
    monkeypatch.setattr(live.nodes, "DISCONNECT_GRACE_S", 0.0)

    def close_the_page(event, data, sid):  # after the first chunk, however long a chunk takes on this machine
        if event == "causal_forcing.live" and data["chunk"] >= 1:
            live.instance.sockets.clear()

    live.listeners.append(close_the_page)
    handle, images, _ = _run_live(live, stream, encoder, seconds=60).result[:3]
    ended = [d for e, d, _ in live.events if e == "causal_forcing.live"][-1]
    assert ended["ended_by"] == "disconnected" and 1 <= handle.stream.num_chunks < 80
    assert len(live.nodes.REGISTRY) == 0


def test_route_validation(live) -> None:
    routes = live.routes
    assert routes.handle_control({}, None)[0] == 400
    assert routes.handle_control({}, {"run": "../etc", "action": "stop"})[0] == 400
    assert routes.handle_control({}, {"run": "0" * 32, "action": "stop"})[0] == 404
    assert routes.handle_status({"run": "f" * 32}, None)[0] == 404
    stream, encoder = _start(live.env)
    checked = {}

    def browser(event, data, sid):
        if event != "causal_forcing.live" or data["chunk"] != 1 or checked:
            return
        checked["busy"] = True
        run = data["run"]
        checked["action"] = routes.handle_control({}, {"run": run, "action": "explode"})
        checked["empty"] = routes.handle_control({}, {"run": run, "action": "prompt", "text": "  "})
        checked["long"] = routes.handle_control({}, {"run": run, "action": "prompt", "text": "x" * 2001})
        checked["recache"] = routes.handle_control({}, {"run": run, "action": "prompt", "text": "a", "recache": "no"})
        checked["burst"] = [routes.handle_control({}, {"run": run, "action": "resume"})[0] for _ in range(12)]
        checked["other"] = routes.handle_control({}, {"run": run[::-1], "action": "stop"})

    live.listeners.append(browser)
    _run_live(live, stream, encoder, seconds=3)
    assert checked["action"][0] == 400 and "must be one of" in checked["action"][1]["error"]
    assert checked["empty"][0] == 400 and "empty" in checked["empty"][1]["error"]
    assert checked["long"][0] == 400 and "2000" in checked["long"][1]["error"]
    assert checked["recache"][0] == 400
    assert 429 in checked["burst"] and checked["burst"][:5] == [200] * 5
    assert checked["other"][0] == 404  # another id reaches no run


def test_the_http_status_comes_from_the_error_type(live, monkeypatch) -> None:
    errors = sys.modules[f"{live.env.pack.__name__}.causal_forcing_core.errors"]  # the classes the pack raises
    routes = live.routes
    assert routes.error_status(errors.LiveRunEndedError("gone")) == 409
    assert routes.error_status(errors.InvalidInputError("the run ended, and this text is bad")) == 400
    assert routes.error_status(errors.CausalForcingError("anything else refused")) == 400

    def ended_without_saying_so() -> None:
        raise errors.LiveRunEndedError("no longer running")

    session = live.nodes.LiveSession("a" * 32, "30", "browser-1", live.nodes.LiveControl(), max_chunks=4)
    live.nodes.REGISTRY.open(session)
    try:
        monkeypatch.setattr(session.control, "pause", ended_without_saying_so)
        assert routes.handle_control({}, {"run": session.token, "action": "pause"})[0] == 409
        assert routes.handle_control({}, {"run": session.token, "action": "prompt", "text": 7})[0] == 400
        loop_side = threading.Timer(0.05, session.control.serve_prompts, args=(lambda text: None,))
        loop_side.start()  # the running loop encodes the prompt; the request waits for it
        assert routes.handle_control({}, {"run": session.token, "action": "prompt", "text": "a"})[0] == 200
        monkeypatch.setattr(routes, "PROMPT_WAIT_S", 0.01)  # a loop too busy to encode: 503, and nothing changed
        busy = routes.handle_control({}, {"run": session.token, "action": "prompt", "text": "b"})
        assert busy[0] == 503 and busy[1]["retry_in_ms"] > 0 and "nothing changed" in busy[1]["error"]
        session.control.serve_prompts(lambda text: pytest.fail(f"{text!r} was withdrawn and must not be encoded"))
        # a prompt the loop takes just as the wait ends is being encoded: the route waits for the encoder's answer
        slow = threading.Timer(0.0, session.control.serve_prompts, args=(lambda text: time.sleep(0.1),))
        monkeypatch.setattr(routes, "PROMPT_WAIT_S", 0.03)
        threading.Timer(0.01, slow.start).start()
        taken = routes.handle_control({}, {"run": session.token, "action": "prompt", "text": "c"})
        assert taken[0] == 200 and taken[1]["applies_at_chunk"] == 0
        session.control.stop()
        late = routes.handle_control({}, {"run": session.token, "action": "resume"})
        assert late[0] == 409 and "ended" in late[1]["error"]
    finally:
        live.nodes.REGISTRY.close(session)
    assert routes.handle_status({"run": session.token}, None)[0] == 409  # remembered as ended


def test_live_needs_an_encoder_and_a_window_for_long_runs(live) -> None:
    stream, encoder = _start(live.env, window=0)
    with pytest.raises(Exception, match="Connect a CLIP"):
        _run_live(live, stream, None, seconds=3)
    with pytest.raises(Exception, match="set window_frames"):
        _run_live(live, stream, encoder, seconds=60)
    with pytest.raises(Exception, match="vae"):
        _run_live(live, stream, encoder, seconds=3, decoder="vae")


# ------------------------------------------------------------------------------------------- nothing lost (issue 12)
def test_a_misspelled_prompt_is_refused_at_the_route_and_the_take_goes_on(live, monkeypatch) -> None:
    stream, encoder = _start(live.env)
    encoder.toy_vocabulary = True  # as the embedded toy encoder: words outside the toy vocabulary are refused
    browser = Browser(live, monkeypatch)
    sent = {}

    def page(event, data, sid):
        if event == "causal_forcing.live" and data["state"] == "running" and data["chunk"] in (2, 4):
            if data["chunk"] not in sent:
                text = {2: "a bleu circle moves up", 4: PROMPTS[1]}[data["chunk"]]
                sent[data["chunk"]] = browser.send({"run": data["run"], "action": "prompt", "text": text})

    live.listeners.append(page)
    handle, images, schedule = _run_live(live, stream, encoder, seconds=6).result[:3]
    (bad, refused), (good, accepted) = browser.answers([sent[2], sent[4]])
    assert bad == 400 and "bleu" in refused["error"] and "circle" in refused["error"]  # names word and vocabulary
    assert good == 200 and accepted["applies_at_chunk"] == 4
    assert handle.stream.num_chunks == 8 and schedule == f"0: {PROMPTS[0]}\n4: {PROMPTS[1]}"
    last = [d for e, d, _ in live.events if e == "causal_forcing.live"][-1]
    assert last["ended_by"] == "max_chunks" and "error" not in last


def test_a_prompt_longer_than_the_model_reads_is_refused_at_the_route(live, monkeypatch) -> None:
    stream, encoder = _start(live.env)
    text_len = stream.model.config.text_len
    too_long = " ".join(["snow"] * (text_len + 5))  # under the 2000-character limit, over the token limit
    assert len(too_long) < 2000
    browser = Browser(live, monkeypatch)
    sent = {}

    def page(event, data, sid):
        if event == "causal_forcing.live" and data["state"] == "running" and data["chunk"] == 2 and not sent:
            sent["box"] = browser.send({"run": data["run"], "action": "prompt", "text": too_long})

    live.listeners.append(page)
    handle, _, schedule = _run_live(live, stream, encoder, seconds=3).result[:3]
    (status, answer), = browser.answers([sent["box"]])
    assert status == 400 and f"this model reads at most {text_len}" in answer["error"]
    assert handle.stream.num_chunks == 4 and schedule == f"0: {PROMPTS[0]}"


def test_a_misspelled_first_prompt_fails_the_node_before_any_chunk(live) -> None:
    stream, encoder = _start(live.env)
    encoder.toy_vocabulary = True
    with pytest.raises(Exception, match="bleu"):
        _run_live(live, stream, encoder, seconds=3, prompt="a bleu circle moves up")
    assert not [e for e, _, _ in live.events if e.startswith("causal_forcing.")] and len(live.nodes.REGISTRY) == 0


@pytest.mark.parametrize("where", ["decoder", "generator"])
def test_an_error_inside_the_loop_ends_the_run_as_error_with_its_outputs(live, monkeypatch, where: str) -> None:
    """Out of memory in the decoder (during chunk 4's preview) or in the generator (chunk 4's steps): the node
    returns the three chunks fully made and shown, the last event says error with the message, the node says it."""
    stream, encoder = _start(live.env)
    texts = []
    monkeypatch.setattr(live.env.rt, "send_progress_text", lambda text, node_id=None: texts.append((text, node_id)))
    count = {"n": 0}
    if where == "decoder":
        preview = live.env.pack.nodes.live_preview
        original = preview.ChunkReporter._decode

        def decode_then_fail(self, latents):
            count["n"] += 1
            if count["n"] == 4:
                raise RuntimeError("CUDA out of memory (decoder)")
            return original(self, latents)

        monkeypatch.setattr(preview.ChunkReporter, "_decode", decode_then_fail)
    else:
        def step_then_fail():
            count["n"] += 1
            if count["n"] == 3 * 4 + 2:
                raise RuntimeError("CUDA out of memory (generator)")

        monkeypatch.setattr(live.env.rt, "throw_if_interrupted", step_then_fail)
    out = _run_live(live, stream, encoder, seconds=60)
    handle, images, schedule, take = out.result
    assert handle.stream.num_chunks == 3 and images.shape[0] == 3 * 12 - 3 and schedule == f"0: {PROMPTS[0]}"
    assert len(out.ui["causal_forcing_frames"]) == images.shape[0]  # the player replays exactly the outputs
    last = [d for e, d, _ in live.events if e == "causal_forcing.live"][-1]
    assert last["state"] == "finished" and last["ended_by"] == "error" and last["chunk"] == 3
    assert f"RuntimeError: CUDA out of memory ({where})" == last["error"]
    # the take on disk holds the same frames
    assert take.endswith("live_00001.mp4") and read_video_frames(take).shape[0] == images.shape[0]
    assert texts == [(f"Live run ended by an error after 3 chunks: RuntimeError: CUDA out of memory ({where}). "
                      f"The outputs hold the 3 chunks made. Saved the take: {take} (33 frames, 2.1 s).", "30")]
    assert len(live.nodes.REGISTRY) == 0


def test_an_error_before_the_first_chunk_fails_the_node(live, monkeypatch) -> None:
    stream, encoder = _start(live.env)

    def fail():
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(live.env.rt, "throw_if_interrupted", fail)
    with pytest.raises(Exception, match="failed before its first chunk: RuntimeError: CUDA out of memory"):
        _run_live(live, stream, encoder, seconds=3)
    last = [d for e, d, _ in live.events if e == "causal_forcing.live"][-1]
    assert last["ended_by"] == "error" and "CUDA out of memory" in last["error"]


def test_a_run_queued_without_a_client_never_sends_its_token(live) -> None:
    """From the API (no client_id): no steering, so the token goes nowhere; frames still reach the page."""
    live.instance.client_id = None
    stream, encoder = _start(live.env)
    registered = []
    live.listeners.append(lambda event, data, sid: registered.append(len(live.nodes.REGISTRY)))
    handle, images, schedule = _run_live(live, stream, encoder, seconds=3).result[:3]
    assert handle.stream.num_chunks == 4 and images.shape[0] == 4 * 12 - 3
    assert {e for e, _, _ in live.events} == {"causal_forcing.chunk"} and set(registered) == {0}
    assert all("run" not in d or len(d["run"]) != 32 for _, d, _ in live.events)  # the chunk events' ids are short


def test_malformed_bodies_are_400_not_500(live) -> None:
    parse = live.env.rt.parse_json_body
    assert parse(b'{"run": "x", "action": "stop"}') == ({"run": "x", "action": "stop"}, None)
    assert parse(b"") == (None, None)
    for raw in (b"[" * 16_000, b'{"a":' * 10_000, b"\xff\xfe", b"{nope"):
        value, problem = parse(raw)
        assert value is None and "not JSON" in problem


def test_a_live_run_on_rolling_forcing_steers_like_any_stream(live, monkeypatch) -> None:
    """The Live node on a Rolling Forcing stream (no window: it keeps its own): 8 chunks past the 21 frames a plain
    stream holds without a window, a prompt change through the route, and the take re-renders from its schedule."""
    comfy = MiniComfy(live.env.nodes)
    prompt = chain(prompts=PROMPTS[:1], chunks=(), window=0)
    prompt["1"]["inputs"]["variant"] = "rolling-4step"
    out = comfy.run(prompt, "3", "2")
    stream, encoder = out["3"][0], out["2"][0]
    browser = Browser(live, monkeypatch)
    sent = {}

    def page(event, data, sid):
        if event == "causal_forcing.live" and data["state"] == "running" and data["chunk"] == 3 and not sent:
            sent["box"] = browser.send({"run": data["run"], "action": "prompt", "text": PROMPTS[1]})

    live.listeners.append(page)
    handle, images, schedule = _run_live(live, stream, encoder, seconds=6).result[:3]
    (status, answer), = browser.answers([sent["box"]])
    assert status == 200 and answer["applies_at_chunk"] == 3 and handle.stream.num_chunks == 8
    assert schedule == f"0: {PROMPTS[0]}\n3: {PROMPTS[1]}" and images.shape[0] == 8 * 12 - 3
    node = live.env.nodes
    sched, = call(node["CausalForcingPromptSchedule"], schedule, "chunks", text_encoder=encoder).result
    again = call(node["CausalForcingGenerateSchedule"], stream, sched, 8, "chunks", True).result[0]
    assert torch.equal(again.stream.latents, handle.stream.latents)


def test_a_long_take_keeps_bounded_images_and_replay_and_saves_everything(live, monkeypatch) -> None:
    """images holds the newest image_seconds, the player's JPEGs the newest REPLAY_FRAMES (older files are
    deleted during the run), and the saved take every frame: the same video, frame for frame."""
    stream, encoder = _start(live.env)
    full = _run_live(live, stream, encoder, seconds=4, save_take=False).result
    assert full[3] == "" and not (live.env.rt.output_directory() / "causal_forcing").exists()
    monkeypatch.setattr(live.env.pack.nodes.live_preview, "REPLAY_FRAMES", 32)
    out = _run_live(live, stream, encoder, seconds=4, image_seconds=1)
    handle, images, schedule, take = out.result
    assert handle.stream.num_chunks == full[0].stream.num_chunks == 6 and schedule == full[2]
    assert torch.equal(images, full[1][-16:])  # the newest second, exactly
    replay = out.ui["causal_forcing_frames"]
    folder = live.env.rt.temp_directory() / replay[0]["subfolder"]
    assert len(replay) == 32 and sorted(p.name for p in folder.iterdir()) == sorted(f["filename"] for f in replay)
    saved = read_video_frames(take)
    assert saved.shape[0] == full[1].shape[0] == 9 + 5 * 12
    # H.264 at CRF 18 on the tiny model's 64x64 frames: per-frame mean |error| measured at most 3.4 (of 255)
    err = (torch.from_numpy(saved).float() - full[1] * 255).abs().mean(dim=(1, 2, 3))
    assert err.max() < 6, err


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE stands in for a full disk on Linux")
def test_a_disk_that_fills_during_a_take_ends_the_run_as_error_and_the_file_plays(live, monkeypatch) -> None:
    """The file-size limit makes the take's writes fail (EFBIG) like a full disk (ENOSPC) does: the run ends as an
    error that names the file, the outputs keep the chunks made, and the file plays up to its last fragment."""
    import resource
    import signal

    stream, encoder = _start(live.env)
    texts = []
    monkeypatch.setattr(live.env.rt, "send_progress_text", lambda text, node_id=None: texts.append(text))
    whole = _run_live(live, stream, encoder, seconds=8).result
    chunks, whole = whole[0].stream.num_chunks, whole[3]
    limit = Path(whole).stat().st_size // 2
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        handle, images, schedule, take = _run_live(live, stream, encoder, seconds=8).result
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    last = [d for e, d, _ in live.events if e == "causal_forcing.live"][-1]
    assert last["ended_by"] == "error" and f"Writing the take to {take} failed" in last["error"]
    assert "File too large" in last["error"] and "plays" in last["error"]
    made = handle.stream.num_chunks
    assert 0 < made < chunks and images.shape[0] == made * 12 - 3 and len(schedule.splitlines()) == 1
    assert texts[-1].startswith(f"Live run ended by an error after {made} chunks: Writing the take")
    kept = read_video_frames(take)
    assert 16 <= kept.shape[0] < images.shape[0] and Path(take).stat().st_size <= limit


def test_an_output_folder_that_cannot_be_written_fails_the_live_node_before_any_chunk(live, monkeypatch,
                                                                                        tmp_path) -> None:
    stream, encoder = _start(live.env)
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the output folder should be")
    monkeypatch.setattr(live.env.rt, "output_directory", lambda: blocker)
    with pytest.raises(Exception, match="not_a_folder"):
        _run_live(live, stream, encoder, seconds=3)
    assert not [e for e, _, _ in live.events if e == "causal_forcing.chunk"] and len(live.nodes.REGISTRY) == 0
    assert _run_live(live, stream, encoder, seconds=1, save_take=False).result[3] == ""  # without a take it runs
