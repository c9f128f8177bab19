"""Layer 3: the live node driven in-process (no ComfyUI): steering through the route handlers gives the same
video as the recorded schedule re-rendered offline; stop, queue interruption and a vanished client end a run
cleanly with its outputs; the routes validate every request."""

from __future__ import annotations

import importlib
import sys
from types import ModuleType, SimpleNamespace

import pytest
import torch

from comfy_sim import MiniComfy
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
    node = live.env.nodes["CausalForcingLive"]()
    args = dict(stream=stream, prompt=PROMPTS[0], max_seconds=seconds, realtime=False, recache=True,
                decoder="preview", text_encoder=encoder, unique_id="30")
    args.update(kw)
    return node.run(**args)


def test_steering_through_the_route_equals_the_schedule_offline(live) -> None:
    stream, encoder = _start(live.env)
    answers = []

    def browser(event, data, sid):  # reacts to the run's own events, as the page does
        if event != "causal_forcing.live" or data["state"] != "running":
            return
        assert sid == "browser-1"
        steer = {2: PROMPTS[1], 5: PROMPTS[2]}
        if data["chunk"] in steer and len(answers) < 2 and all(a[1].get("applies_at_chunk") != data["chunk"]
                                                               for a in answers):
            answers.append(live.routes.handle_control({}, {"run": data["run"], "action": "prompt",
                                                           "text": steer[data["chunk"]]}))

    live.listeners.append(browser)
    out = _run_live(live, stream, encoder, seconds=6)  # 6 s = 8 chunks of 0.75 s
    handle, images, schedule = out["result"]
    assert [a[0] for a in answers] == [200, 200] and [a[1]["applies_at_chunk"] for a in answers] == [2, 5]
    assert schedule == f"0: {PROMPTS[0]}\n2: {PROMPTS[1]}\n5: {PROMPTS[2]}"
    assert handle.stream.num_chunks == 8 and images.shape == (8 * 12 - 3, 64, 64, 3)
    # the improvised take, re-rendered offline from its schedule with the same seed, is the same video
    node = live.env.nodes
    sched, = node["CausalForcingPromptSchedule"]().build(schedule, "chunks", text_encoder=encoder)
    again = node["CausalForcingGenerateSchedule"]().generate(stream, sched, 8, "chunks", True)["result"][0]
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
    handle, images, schedule = _run_live(live, stream, encoder, seconds=60)["result"]
    assert seen["pause"][0] == 200 and seen["pause"][1]["pause_requested"] is True
    assert seen["status"][1]["chunk"] == 3 and seen["resume"][0] == 200
    assert seen["stopped"][0] == 200 and seen["stopped"][1]["state"] == "stopping"
    assert handle.stream.num_chunks == 3 and schedule == f"0: {PROMPTS[0]}"
    late = live.routes.handle_control({}, {"run": seen["run"], "action": "prompt", "text": "a cat"})
    assert late[0] == 409 and "ended (stop)" in late[1]["error"]


def test_a_queue_interrupt_is_a_stop_and_a_vanished_client_ends_the_run(live, monkeypatch) -> None:
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
    handle, images, schedule = _run_live(live, stream, encoder, seconds=60)["result"]
    assert handle.stream.num_chunks == 2 and images.shape[0] == 2 * 12 - 3
    ended = [d for e, d, _ in live.events if e == "causal_forcing.live"][-1]
    assert ended["ended_by"] == "stop"

    monkeypatch.setattr(rt, "throw_if_interrupted", lambda: None)
    monkeypatch.setattr(live.nodes, "DISCONNECT_GRACE_S", 0.0)

    def close_the_page(event, data, sid):  # after the first chunk, however long a chunk takes on this machine
        if event == "causal_forcing.live" and data["chunk"] >= 1:
            live.instance.sockets.clear()

    live.listeners.append(close_the_page)
    handle, images, _ = _run_live(live, stream, encoder, seconds=60)["result"]
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
        assert routes.handle_control({}, {"run": session.token, "action": "prompt", "text": "a"})[0] == 200
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
