"""Layer 3: the stream nodes under ComfyUI-like caching (edit, bypass, branch, interrupt), progress and previews,
image-to-video and continuation, on tiny random weights written to disk the way users install models."""

from __future__ import annotations

import copy
import gc
import importlib
import sys
import weakref
from types import ModuleType, SimpleNamespace

import pytest
import torch

from comfy_sim import MiniComfy, bypass, call

PROMPTS = ("a red square moves left", "a blue circle moves up", "a dog runs in snow")


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory):
    from scripts.make_tiny_models import write_tiny_models

    root = tmp_path_factory.mktemp("models")
    write_tiny_models(root)
    return root


@pytest.fixture
def env(models_dir, monkeypatch: pytest.MonkeyPatch, pack: ModuleType, tmp_path):
    monkeypatch.setenv("CF_MODELS_DIR", str(models_dir))
    rt = importlib.import_module(f"{pack.__name__}.nodes.comfy_runtime")
    monkeypatch.setattr(rt, "temp_directory", lambda: tmp_path / "temp")
    monkeypatch.setattr(rt, "output_directory", lambda: tmp_path / "output")
    return SimpleNamespace(nodes=pack.NODE_CLASSES, rt=rt, root=models_dir, pack=pack)


def chain(prompts=PROMPTS, chunks=(2, 1, 2), model="cf_tiny_chunkwise.safetensors", window=0, sink=0, seed=42,
          recache=True) -> dict:
    """Start -> Generate -> Generate(prompt 2) -> Generate(prompt 3), in API format."""
    p = {
        "1": {"class_type": "CausalForcingModelLoader", "inputs": {
            "model_name": model, "variant": "auto", "weight_dtype": "auto", "preview": "latent2rgb"}},
        "2": {"class_type": "CausalForcingTextEncoderLoader", "inputs": {
            "text_encoder_name": "cf_tiny_umt5.pth", "tokenizer": "cf_tiny_umt5_tokenizer", "dtype": "auto",
            "device": "default"}},
        "3": {"class_type": "CausalForcingStart", "inputs": {
            "model": ["1", 0], "positive": ["10", 0], "width": 64, "height": 64, "seed": seed,
            "window_frames": window, "sink_frames": sink}},
    }
    for i, text in enumerate(prompts):
        p[f"1{i}"] = {"class_type": "CausalForcingTextEncode", "inputs": {"text_encoder": ["2", 0], "text": text}}
    previous = "3"
    for i, n in enumerate(chunks):
        node = {"stream": [previous, 0], "length": n, "unit": "chunks", "recache": recache}
        if i:
            node["positive"] = [f"1{min(i, len(prompts) - 1)}", 0]
        p[str(4 + i)] = {"class_type": "CausalForcingGenerate", "inputs": node}
        previous = str(4 + i)
    return p


def last_generate(prompt: dict) -> str:
    return max((k for k, v in prompt.items() if v["class_type"] == "CausalForcingGenerate"), key=int)


def video(comfy: MiniComfy, prompt: dict, target: str | None = None) -> torch.Tensor:
    target = target or last_generate(prompt)
    return comfy.run(prompt, target)[target][1]["samples"]


def fresh(env, prompt: dict, target: str | None = None) -> torch.Tensor:
    return video(MiniComfy(env.nodes), prompt, target)


class Interrupted(Exception):
    """Stands in for ComfyUI's InterruptProcessingException."""


# ------------------------------------------------------------------------------------------------- caching
def test_editing_the_third_prompt_reruns_only_the_third_segment(env) -> None:
    comfy = MiniComfy(env.nodes)
    prompt = chain()
    before = video(comfy, prompt)
    assert before.shape == (1, 16, 15, 8, 8)  # 5 chunks of 3 latent frames, raw VAE space [B, C, F, h, w]
    edited = copy.deepcopy(prompt)
    edited["12"]["inputs"]["text"] = "a cat jumps at night"
    after = video(comfy, edited)
    assert comfy.executed == ["12", "6"]
    assert torch.equal(after[:, :, :9], before[:, :, :9])  # the first two segments are untouched
    assert not torch.equal(after[:, :, 9:], before[:, :, 9:])
    assert torch.equal(after, fresh(env, edited))
    # and back: the original prompt gives the original video again
    assert torch.equal(video(comfy, prompt), before)


def test_chunks_split_over_nodes_give_the_same_video(env) -> None:
    one = chain(prompts=PROMPTS[:1], chunks=(4,))
    split = chain(prompts=PROMPTS[:1], chunks=(1, 3))
    split["5"]["inputs"].pop("positive")
    assert torch.equal(fresh(env, one), fresh(env, split))


def test_bypassing_and_reenabling_a_generate_node(env) -> None:
    comfy = MiniComfy(env.nodes)
    prompt = chain()
    full = video(comfy, prompt)
    bypassed = bypass(prompt, "5", {0: ("4", 0)})
    short = video(comfy, bypassed, "6")
    assert short.shape[2] == 12
    assert torch.equal(short, fresh(env, bypassed, "6"))
    assert torch.equal(video(comfy, prompt), full)


def test_two_branches_from_one_stream(env) -> None:
    comfy = MiniComfy(env.nodes)
    prompt = chain()
    prompt["7"] = {"class_type": "CausalForcingGenerate", "inputs": {
        "stream": ["4", 0], "length": 2, "unit": "chunks", "recache": False, "positive": ["11", 0]}}
    expected_6, expected_7 = fresh(env, prompt, "6"), fresh(env, prompt, "7")
    for _ in range(2):  # alternate between the branches: each is right whatever ran before
        out = comfy.run(prompt, "6", "7")
        assert torch.equal(out["6"][1]["samples"], expected_6)
        assert torch.equal(out["7"][1]["samples"], expected_7)
        comfy.cache.pop("6")
        comfy.cache.pop("7")
    assert torch.equal(expected_6[:, :, :6], expected_7[:, :, :6])


@pytest.mark.parametrize("window", [0, 6])
@pytest.mark.parametrize("stop_at", [10, 14])
def test_interrupt_mid_chunk_then_queue_again(env, monkeypatch: pytest.MonkeyPatch, window: int, stop_at: int) -> None:
    """Steps 1-8 are node 4 (2 chunks x 4 steps), 9-12 node 5, 13-20 node 6: interrupt inside node 5 or 6."""
    prompt = chain(window=window, sink=3 if window else 0)
    expected = fresh(env, prompt)
    comfy = MiniComfy(env.nodes)
    calls = {"n": 0}

    def interrupt() -> None:
        calls["n"] += 1
        if calls["n"] == stop_at:
            raise Interrupted()

    monkeypatch.setattr(env.rt, "throw_if_interrupted", interrupt)
    with pytest.raises(Interrupted):
        video(comfy, prompt)
    stopped = "5" if stop_at <= 12 else "6"
    assert stopped not in comfy.cache and "4" in comfy.cache
    monkeypatch.undo()
    monkeypatch.setenv("CF_MODELS_DIR", str(env.root))
    assert torch.equal(video(comfy, prompt), expected)
    assert [n for n in comfy.executed if n in ("4", "5", "6")] == (["5", "6"] if stopped == "5" else ["6"])


@pytest.mark.parametrize("stop_at", [14, 18])
def test_queueing_again_resumes_an_interrupted_node_at_its_last_chunk(env, monkeypatch, stop_at: int) -> None:
    """Node 6 makes chunks 5-6 (steps 13-16, 17-20). Stopped in its second chunk, the re-run makes only that one;
    stopped in its first, everything of node 6 again. Either way the video is the uninterrupted one."""
    prompt = chain()
    expected = fresh(env, prompt)
    comfy = MiniComfy(env.nodes)
    steps = {"n": 0, "stop": stop_at}

    def count_and_interrupt() -> None:
        steps["n"] += 1
        if steps["n"] == steps["stop"]:
            raise Interrupted()

    monkeypatch.setattr(env.rt, "throw_if_interrupted", count_and_interrupt)
    with pytest.raises(Interrupted):
        video(comfy, prompt)
    steps.update(n=0, stop=-1)
    assert torch.equal(video(comfy, prompt), expected)
    assert comfy.executed == ["6"] and steps["n"] == (4 if stop_at == 18 else 8)
    # a changed request does not resume: interrupted with an edited third prompt (in node 6's second chunk, the
    # only node that re-runs), then queued with the original prompt, node 6 starts afresh
    edited = copy.deepcopy(prompt)
    edited["12"]["inputs"]["text"] = "a cat jumps at night"
    steps.update(n=0, stop=6)
    with pytest.raises(Interrupted):
        video(comfy, edited)
    steps.update(n=0, stop=-1)
    assert torch.equal(video(comfy, prompt), expected) and steps["n"] == 8


def test_nothing_is_kept_after_the_stream_is_dropped(env, monkeypatch) -> None:
    comfy = MiniComfy(env.nodes)
    steps = {"n": 0}

    def interrupt_once() -> None:  # leave an interrupted run behind (kept for resuming) before the full run
        steps["n"] += 1
        if steps["n"] == 18:
            raise Interrupted()

    monkeypatch.setattr(env.rt, "throw_if_interrupted", interrupt_once)
    with pytest.raises(Interrupted):
        comfy.run(chain(), "6")
    resumes = sys.modules[f"{env.pack.__name__}.nodes.stream_state"]._resumes
    assert len(resumes) == 1
    comfy.cache.clear()  # ComfyUI drops every output (the graph changed upstream)
    gc.collect()
    assert len(resumes) == 0, "the interrupted run outlived the snapshot it started from"
    out = comfy.run(chain(), "6")
    storage = weakref.ref(out["6"][0].stream.storage)
    model = weakref.ref(out["1"][0].dit)
    del out, comfy
    gc.collect()
    assert storage() is None, "the KV cache outlived every stream snapshot"
    assert model() is None, "the model outlived ComfyUI's cache"


# ------------------------------------------------------------------------------------------------- schedule
def _schedule_prompt(text: str, unit: str, length: int) -> dict:
    p = chain(prompts=PROMPTS[:1], chunks=())
    p["20"] = {"class_type": "CausalForcingPromptSchedule", "inputs": {
        "schedule": text, "unit": unit, "text_encoder": ["2", 0]}}
    p["21"] = {"class_type": "CausalForcingGenerateSchedule", "inputs": {
        "stream": ["3", 0], "schedule": ["20", 0], "length": length, "unit": unit, "recache": True}}
    return p


def test_schedule_equals_a_chain_of_generate_nodes(env) -> None:
    scheduled = fresh(env, _schedule_prompt(f"0: {PROMPTS[0]}\n2: {PROMPTS[1]}\n3: {PROMPTS[2]}", "chunks", 5), "21")
    assert torch.equal(scheduled, fresh(env, chain()))
    # the same switch points in seconds (a chunk-wise chunk lasts 12 / 16 = 0.75 s); 4 s round up to 6 chunks
    timed = fresh(env, _schedule_prompt(f"0: {PROMPTS[0]}\n1.5: {PROMPTS[1]}\n2.25s: {PROMPTS[2]}", "seconds", 4),
                  "21")
    assert timed.shape[2] == 18 and torch.equal(timed[:, :, :15], scheduled)
    # 'a | b | c' over 5 chunks: segments of 2, 2 and 1 chunks
    equal = fresh(env, _schedule_prompt(" | ".join(PROMPTS), "chunks", 5), "21")
    assert torch.equal(equal, fresh(env, chain(chunks=(2, 2, 1))))


def test_schedule_errors_name_the_line(env) -> None:
    node = env.nodes["CausalForcingPromptSchedule"]
    message = node.validate_inputs(schedule="0: a dog\nthe dog runs")
    assert isinstance(message, str) and "line 2" in message
    assert "must start at chunk 0" in node.validate_inputs(schedule="3: a dog")
    assert node.validate_inputs(schedule="0: a dog\n2.5: a cat") is True  # seconds or chunks: exact at run time
    assert node.validate_inputs(schedule=None) is True  # linked: checked at run time
    comfy = MiniComfy(env.nodes)
    bad = _schedule_prompt(f"0: {PROMPTS[0]}\n9: {PROMPTS[1]}", "chunks", 4)
    with pytest.raises(Exception, match="line 2 starts at chunk 9"):
        comfy.run(bad, "21")


# ------------------------------------------------------------------------------------------------- progress
class _Bar:
    bars: list["_Bar"] = []

    def __init__(self, total: int, node_id: str | None = None) -> None:
        self.total, self.node_id, self.values, self.previews = total, node_id, [], []
        _Bar.bars.append(self)

    def update_absolute(self, value: int, total: int | None = None, preview=None) -> None:
        self.values.append(value)
        if preview is not None:
            self.previews.append(preview)


def test_one_progress_bar_a_preview_per_chunk_and_player_frames(env, monkeypatch: pytest.MonkeyPatch) -> None:
    events = []
    utils = ModuleType("comfy.utils")
    utils.ProgressBar = _Bar
    server = ModuleType("server")
    server.PromptServer = SimpleNamespace(instance=SimpleNamespace(send_sync=lambda e, d, sid=None: events.append((e, d))))
    monkeypatch.setitem(sys.modules, "comfy.utils", utils)
    monkeypatch.setitem(sys.modules, "server", server)
    _Bar.bars = []
    comfy = MiniComfy(env.nodes)
    prompt = _schedule_prompt(f"0: {PROMPTS[0]}\n1: {PROMPTS[1]}", "chunks", 3)
    prompt["1"]["inputs"]["preview"] = "cf_tiny_preview.safetensors"
    comfy.run(prompt, "21")
    bar = next(b for b in _Bar.bars if b.node_id == "21")
    assert [b.node_id for b in _Bar.bars].count("21") == 1, "one bar for the whole run, switches included"
    assert bar.total == 12 and bar.values[-1] == 12 and sorted(bar.values) == bar.values
    assert bar.previews == [], "the player shows the frames: no progress preview beside it"
    chunks = [d for e, d in events if e == "causal_forcing.chunk"]
    assert [d["chunk"] for d in chunks] == [0, 1, 2] and len({d["run"] for d in chunks}) == 1
    assert [len(d["frames"]) for d in chunks] == [9, 12, 12]  # taew: the first chunk loses 3 frames
    temp = env.rt.temp_directory()
    for d in chunks:
        assert d["node"] == "21" and d["fps"] == 16 and (d["width"], d["height"]) == (64, 64)
        for f in d["frames"]:
            assert f["type"] == "temp" and (temp / f["subfolder"] / f["filename"]).is_file()


def test_the_node_preview_takes_over_when_the_player_frames_cannot_be_written(env, monkeypatch) -> None:
    """A full temp disk: no player frames, no chunk events, ComfyUI's own preview shows each chunk's last frame,
    and the run still gives its video."""
    events = []
    utils = ModuleType("comfy.utils")
    utils.ProgressBar = _Bar
    server = ModuleType("server")
    server.PromptServer = SimpleNamespace(instance=SimpleNamespace(send_sync=lambda e, d, sid=None: events.append((e, d))))
    monkeypatch.setitem(sys.modules, "comfy.utils", utils)
    monkeypatch.setitem(sys.modules, "server", server)
    preview = importlib.import_module(f"{env.pack.__name__}.nodes.live_preview")

    def full_disk(self, frames, chunk):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(preview.ChunkReporter, "_write_frames", full_disk)
    _Bar.bars = []
    comfy = MiniComfy(env.nodes)
    prompt = _schedule_prompt(f"0: {PROMPTS[0]}", "chunks", 2)
    prompt["1"]["inputs"]["preview"] = "cf_tiny_preview.safetensors"
    comfy.run(prompt, "21")
    bar = next(b for b in _Bar.bars if b.node_id == "21")
    assert len(bar.previews) == 2 and all(p[0] == "JPEG" and p[1].size == (64, 64) for p in bar.previews)
    assert not [d for e, d in events if e == "causal_forcing.chunk"]
    assert comfy.cache["21"][0][1]["samples"].shape[2] == 6


# ------------------------------------------------------------------------------------------------- I2V, continue
def _image(size: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return torch.rand(1, size, size + 16, 3, generator=g)  # not square: it is fitted (cropped) to the stream size


def test_image_to_video_starts_from_the_encoded_image(env) -> None:
    nodes = env.nodes
    model, = call(nodes["CausalForcingModelLoader"], "cf_tiny_framewise.safetensors", "auto", "auto", "none").result
    te, = call(nodes["CausalForcingTextEncoderLoader"], "cf_tiny_umt5.pth", "cf_tiny_umt5_tokenizer", "auto", "default").result
    cond, = call(nodes["CausalForcingTextEncode"], te, PROMPTS[0]).result
    vae, = call(nodes["CausalForcingVAELoader"], "cf_tiny_vae.safetensors", "fp32").result
    stream, = call(nodes["CausalForcingStart"], model, cond, 64, 64, 1, 0, 0, start_image=_image(), cf_vae=vae).result
    assert stream.stream.num_frames == 1
    out = call(nodes["CausalForcingGenerate"], stream, 3, "chunks", True)
    latent = out.result[1]["samples"]
    assert latent.shape == (1, 16, 4, 8, 8)
    core = importlib.import_module(f"{env.pack.__name__}.causal_forcing_core")
    pixels = core.image_io.fit_image_tensor(_image(), 64, 64)
    encoded = core.latent_space.to_raw_latents(vae.vae.encode(pixels))
    assert torch.allclose(latent[:, :, :1], encoded, atol=1e-5)
    images, = call(nodes["CausalForcingDecode"], 3, stream=out.result[0], cf_vae=vae).result
    assert images.shape == (13, 64, 64, 3) and 0 <= images.min() and images.max() <= 1


def test_continuing_a_latent(env) -> None:
    comfy = MiniComfy(env.nodes)
    first = chain(prompts=PROMPTS[:1], chunks=(2,))
    latent = video(comfy, first)
    nodes = env.nodes
    model = comfy.cache["1"][0][0]
    cond = comfy.cache["10"][0][0]
    stream, = call(nodes["CausalForcingStart"], model, cond, 64, 64, 42, 0, 0, continue_latent={"samples": latent}).result
    assert stream.stream.num_frames == 6
    out = call(nodes["CausalForcingGenerate"], stream, 1, "chunks", True)
    assert out.result[1]["samples"].shape[2] == 9
    with pytest.raises(Exception, match="set width and height to match"):
        call(nodes["CausalForcingStart"], model, cond, 128, 64, 42, 0, 0, continue_latent={"samples": latent})


def test_a_native_vae_decodes_like_the_pack_vae_on_the_same_weights(env) -> None:
    """ComfyUI's VAE object holds the Wan VAE module as first_stage_model (reference key names): the nodes build
    the core VAE on its tensors, so both inputs give the same frames."""
    nodes = env.nodes
    cf_vae, = call(nodes["CausalForcingVAELoader"], "cf_tiny_vae.safetensors", "fp32").result
    native = SimpleNamespace(first_stage_model=cf_vae.vae, patcher=None)
    out = MiniComfy(nodes).run(chain(chunks=(2, 1)), "5")["5"]
    ours, = call(nodes["CausalForcingDecode"], 3, stream=out[0], cf_vae=cf_vae).result
    theirs, = call(nodes["CausalForcingDecode"], 2, stream=out[0], vae=native).result
    assert ours.shape == (33, 64, 64, 3) and torch.equal(ours, theirs)  # chunk size does not matter either
    # the LATENT output is raw VAE space: back to the stream's normalised latents up to float rounding
    core = importlib.import_module(f"{env.pack.__name__}.causal_forcing_core")
    assert torch.allclose(core.latent_space.from_raw_latents(out[1]["samples"]), out[0].stream.latents, atol=1e-5)
    from_latent, = call(nodes["CausalForcingDecode"], 3, samples=out[1], vae=native).result
    assert torch.allclose(from_latent, ours, atol=5e-3)  # the random tiny VAE amplifies that rounding


def test_save_video_writes_the_decoded_stream_chunk_by_chunk(env, monkeypatch) -> None:
    """Causal Forcing Save Video gives the frames Decode gives, in an mp4 under the output folder that the frontend
    shows; a queue interrupt part-way leaves a playable file of the chunks decoded; a prefix leaving the output
    folder is refused before anything is written."""
    from causal_forcing_core.video_io import read_video_frames

    nodes = env.nodes
    cf_vae, = call(nodes["CausalForcingVAELoader"], "cf_tiny_vae.safetensors", "fp32").result
    stream = MiniComfy(nodes).run(chain(chunks=(2, 1)), "5")["5"][0]
    decoded, = call(nodes["CausalForcingDecode"], 3, stream=stream, cf_vae=cf_vae).result
    out = call(nodes["CausalForcingSaveVideo"], "cf/take", 3, stream=stream, cf_vae=cf_vae)
    path, = out.result
    assert out.ui == {"images": [{"filename": "take_00001.mp4", "subfolder": "cf", "type": "output"}],
                         "animated": [True]}
    assert path == str(env.rt.output_directory() / "cf" / "take_00001.mp4")
    saved = torch.from_numpy(read_video_frames(path)).float()
    assert saved.shape == (33, 64, 64, 3)
    # each frame's mean colour survives H.264 (CRF 18) of the random tiny VAE's noise: measured at most 1.6 (of
    # 255); the same comparison shifted by one frame reaches 59.5
    colour = (saved.mean(dim=(1, 2)) - decoded.mean(dim=(1, 2)) * 255).abs()
    assert colour.max() < 4

    calls = {"n": 0}

    def interrupt_at_the_third_chunk() -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise InterruptedError("queue interrupted")

    monkeypatch.setattr(env.rt, "throw_if_interrupted", interrupt_at_the_third_chunk)
    with pytest.raises(InterruptedError):
        call(nodes["CausalForcingSaveVideo"], "cf/take", 3, stream=stream, cf_vae=cf_vae)
    assert read_video_frames(env.rt.output_directory() / "cf" / "take_00002.mp4").shape[0] == 9 + 12  # 2 chunks
    for bad in ("../outside", "/abs/video", "cf/../../x"):
        with pytest.raises(Exception, match="inside the output folder"):
            call(nodes["CausalForcingSaveVideo"], bad, 3, stream=stream, cf_vae=cf_vae)
    assert sorted(p.name for p in (env.rt.output_directory() / "cf").iterdir()) == ["take_00001.mp4", "take_00002.mp4"]


@pytest.mark.parametrize("stop_at", [10, 14, 18])
def test_an_interrupted_schedule_resumes_with_the_right_prompts(env, monkeypatch, stop_at: int) -> None:
    """Chunks 0-1 prompt 0, chunk 2 prompt 1, chunks 3-4 prompt 2; stopped at the start of a segment, at its first
    chunk or inside it, the resumed run switches prompts exactly where the uninterrupted one does."""
    prompt = _schedule_prompt(f"0: {PROMPTS[0]}\n2: {PROMPTS[1]}\n3: {PROMPTS[2]}", "chunks", 5)
    expected = fresh(env, prompt, "21")
    comfy = MiniComfy(env.nodes)
    steps = {"n": 0}

    def interrupt() -> None:
        steps["n"] += 1
        if steps["n"] == stop_at + 3:  # the Prompt Schedule node checks once per prompt before any step
            raise Interrupted()

    monkeypatch.setattr(env.rt, "throw_if_interrupted", interrupt)
    with pytest.raises(Interrupted):
        video(comfy, prompt, "21")
    steps["n"] = -1000
    assert torch.equal(video(comfy, prompt, "21"), expected)
    assert steps["n"] == -1000 + 20 - (stop_at - 1) // 4 * 4


def test_preview_frames_are_pruned_per_node(env) -> None:
    """A node keeps the frames of its last two runs; a node that did not run again (cached) keeps its own."""
    nodes = env.nodes
    out = MiniComfy(nodes).run(chain(prompts=PROMPTS[:1], chunks=(1,)), "3")
    start = out["3"][0]
    generate = nodes["CausalForcingGenerate"]
    first = call(generate, start, 1, "chunks", True, hidden={"unique_id": "12:7"}).ui["causal_forcing_frames"]
    for _ in range(3):
        call(generate, start, 1, "chunks", True, hidden={"unique_id": "9"})
    root = env.rt.temp_directory() / "causal_forcing"
    assert len(list((root / "9").iterdir())) == 2
    assert all((env.rt.temp_directory() / f["subfolder"] / f["filename"]).is_file() for f in first)
    assert first[0]["subfolder"].startswith("causal_forcing/12_7/")


def test_start_chooses_what_a_recache_re_encodes(env) -> None:
    """recache_frames on Start: 'window' re-encodes the whole window on each switch (the sink moves), 'recent' keeps
    the sink; the same video before the first switch, another after it, and the mode reaches the stream."""
    out = {}
    for mode in ("recent", "window"):
        prompt = chain(chunks=(3, 2), window=6, sink=3)
        prompt["3"]["inputs"]["recache_frames"] = mode
        comfy = MiniComfy(env.nodes)
        results = comfy.run(prompt, "5")
        out[mode] = results["5"][1]["samples"]
        assert str(results["3"][0].stream.settings.recache) == mode
    assert torch.equal(out["recent"][:, :, :9], out["window"][:, :, :9])
    assert (out["recent"][:, :, 9:] - out["window"][:, :, 9:]).abs().max() > 1e-3


def test_rolling_forcing_through_the_nodes(env, monkeypatch) -> None:
    """variant rolling-4step on the loader: chunks split over nodes give the same video, editing the last prompt
    reruns only the last node (from the window its snapshot carries), and one progress step per window."""
    def rolling(prompt: dict) -> dict:
        prompt["1"]["inputs"]["variant"] = "rolling-4step"
        return prompt

    one = rolling(chain(prompts=PROMPTS[:1], chunks=(5,)))
    split = rolling(chain(prompts=PROMPTS[:1], chunks=(2, 3)))
    split["5"]["inputs"].pop("positive")
    assert torch.equal(fresh(env, one), fresh(env, split))
    comfy = MiniComfy(env.nodes)
    prompt = rolling(chain())
    before = video(comfy, prompt)
    edited = copy.deepcopy(prompt)
    edited["12"]["inputs"]["text"] = "a cat jumps at night"
    after = video(comfy, edited)
    assert comfy.executed == ["12", "6"] and torch.equal(after[:, :, :9], before[:, :, :9])
    assert torch.equal(after, fresh(env, edited)) and not torch.equal(after, before)
    bars = []

    class Bar:
        def __init__(self, total, node_id=None):
            self.total, self.values = total, []
            bars.append(self)

        def update_absolute(self, value, total=None, preview=None):
            self.values.append(value)

    monkeypatch.setattr(env.rt, "ProgressBar", Bar)
    fresh(env, one)
    (bar,) = bars
    assert bar.total == 4 + 4 and bar.values[-1] == bar.total  # chunk 0 fills the window (4 steps), then 1 each
