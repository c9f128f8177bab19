"""``CausalForcingLive``: generate chunk after chunk until stopped, steered from the node while it runs.

The node runs a :class:`causal_forcing_core.live.LiveLoop` on ComfyUI's worker thread. The browser steers it
through the control route (:data:`.protocol.CONTROL_PATH`, see :mod:`.live_routes`) with the run's secret token,
which only the client that queued the prompt receives (:data:`.protocol.LIVE_EVENT` events are sent to that client
alone). A prompt queued without a client id (from the API) runs without steering: its token is never sent, and it
ends at its maximum length or with ComfyUI's interrupt. Frames go to the node's player as
:data:`.protocol.CHUNK_EVENT` events.

A steering prompt is checked and encoded when it arrives (the route waits for the loop to encode it between two
denoising steps), so an unknown word or a prompt that is too long is refused with the encoder's message and the take
goes on. Every end keeps the take: Stop, the maximum length, a cancel from the queue, the client disconnecting, and
an error inside the loop (the encoder, the generator or the decoder out of memory). The node then returns the
stream, the frames and the prompt events as a schedule that Causal Forcing Prompt Schedule reads, all of the same
length: the chunks fully made and shown. After an error the last live event carries ``ended_by: "error"`` and the
message, the node shows it, and the server log has the traceback; downstream nodes still run on what was made. A
run that fails before its first chunk has nothing to keep and fails the node with the error.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch
from comfy_api.latest import io

from ..causal_forcing_core.errors import CausalForcingError, TakeWriteError
from ..causal_forcing_core.geometry import WAN21
from ..causal_forcing_core.live import LiveControl, LiveEnd, LiveLoop, LiveResult, LiveState, PromptEvent
from ..causal_forcing_core.preview_fallback import LatentRGBPreview
from ..causal_forcing_core.prompt import Prompt, check_prompt_text
from ..causal_forcing_core.stream import cache_frames_for
from ..causal_forcing_core.take_writer import TakeWriter, new_take
from ..causal_forcing_core.vae import WanVAE
from . import comfy_runtime as rt
from .common import CATEGORY, prompt_from_conditioning, resolve_text_encoder, resolve_vae
from .live_preview import ChunkReporter
from .payloads import CFTextEncoder, CFVae, StreamHandle, StreamSocket, TextEncoderSocket, VAESocket
from .protocol import LIVE_EVENT, RunEnd

logger = logging.getLogger(__name__)

DECODER_PREVIEW, DECODER_VAE = "preview", "vae"
DECODERS = (DECODER_PREVIEW, DECODER_VAE)
#: the longest live run a node accepts, in seconds of video
MAX_LIVE_SECONDS = 3600
#: seconds without the queuing client's websocket before a run stops by itself
DISCONNECT_GRACE_S = 5.0
#: control requests a run accepts per second
MAX_REQUESTS_PER_S = 10
#: ended runs remembered (so a late request is told the run ended rather than that it never existed)
_ENDED_KEPT = 64
#: live takes are saved as output/TAKE_SUBFOLDER/TAKE_PREFIX_00001.mp4, ...
TAKE_SUBFOLDER, TAKE_PREFIX = "causal_forcing", "live"
#: the images output holds the newest this many seconds of a take by default (the saved take has all of it)
DEFAULT_IMAGE_SECONDS = 60


@dataclass(eq=False)
class LiveSession:
    """One running live node: its token, the client that may steer it, its control, and request accounting."""

    token: str
    node_id: str | None
    client_id: str | None
    control: LiveControl
    max_chunks: int
    events: list[dict[str, Any]] = field(default_factory=list)
    ended_by: RunEnd | None = None
    error: str | None = None
    _requests: list[float] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def allow_request(self, now: float) -> float:
        """0 when a request may go through now, else the seconds until one may (a sliding one-second window)."""
        with self._lock:
            self._requests[:] = [t for t in self._requests if now - t < 1.0]
            if len(self._requests) >= MAX_REQUESTS_PER_S:
                return 1.0 - (now - self._requests[0])
            self._requests.append(now)
            return 0.0

    def status(self) -> dict[str, Any]:
        """The fields of a :data:`.protocol.LIVE_EVENT` event (and of the status route's answer)."""
        data = {"node": self.node_id, "run": self.token, "max_chunks": self.max_chunks, "events": self.events,
                **self.control.status()}
        if self.ended_by is not None:
            data["ended_by"] = self.ended_by.value
        if self.error is not None:
            data["error"] = self.error
        return data

    def announce(self, *_: Any) -> None:
        """Send the state to the client that queued the run, and to nobody else (the event carries the token). The
        end is sent once, with why the run ended: the loop reports "finished" before the node has closed the take
        and knows whether it ended cleanly, so that report waits for the node's own."""
        if self.client_id is None:
            return
        status = self.status()
        if status["state"] == LiveState.FINISHED.value and self.ended_by is None:
            return
        rt.send_sync(LIVE_EVENT, status, self.client_id)


class LiveRegistry:
    """Running live sessions by token (and the tokens of recently ended ones)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, LiveSession] = {}
        self._ended: OrderedDict[str, RunEnd] = OrderedDict()

    def open(self, session: LiveSession) -> None:
        with self._lock:
            self._running[session.token] = session

    def close(self, session: LiveSession) -> None:
        with self._lock:
            self._running.pop(session.token, None)
            self._ended[session.token] = session.ended_by or RunEnd.ERROR
            while len(self._ended) > _ENDED_KEPT:
                self._ended.popitem(last=False)

    def find(self, token: str) -> tuple[LiveSession | None, RunEnd | None]:
        """The running session of ``token``, or (None, how it ended) / (None, None) when unknown."""
        with self._lock:
            return self._running.get(token), self._ended.get(token)

    def __len__(self) -> int:
        return len(self._running)


REGISTRY = LiveRegistry()


class _VAEFrames:
    """The core VAE as a frame decoder for the live loop: ``stream().decode(latents) -> [B, t, 3, H, W]`` in [0, 1]."""

    def __init__(self, vae: WanVAE) -> None:
        self.vae = vae

    def stream(self) -> "_VAEFrames._Stream":
        return _VAEFrames._Stream(self.vae)

    class _Stream:
        def __init__(self, vae: WanVAE) -> None:
            self.vae, self.decoder = vae, vae.stream_decoder()

        def decode(self, latents: torch.Tensor) -> torch.Tensor:
            pixels = self.decoder.decode(latents.to(self.vae.device, self.vae.dtype))
            return ((pixels.float() + 1.0) / 2.0).clamp(0, 1)


class CausalForcingLive(io.ComfyNode):
    """Stream a video live: chunk after chunk until stopped, steered from the node (prompt, pause, resume, stop)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CausalForcingLive", display_name="Causal Forcing Live", category=CATEGORY,
            description=(
                "Generates a stream live: chunk after chunk, played on the node as it comes, until you press Stop, "
                "the maximum length is reached, or the queue is interrupted (all keep what was made). Type a new "
                "prompt on the node to steer the video; it applies from the next chunk. Outputs the stream, the "
                "frames and the prompt events as a schedule for Causal Forcing Prompt Schedule. Long runs need a "
                "window on Causal Forcing Start."
            ),
            inputs=[
                StreamSocket.Input("stream"),
                io.String.Input("prompt", multiline=True, default="a red fox trots through fresh snow",
                                tooltip="The first prompt; steer from the node while it runs."),
                io.Int.Input("max_seconds", default=60, min=1, max=MAX_LIVE_SECONDS,
                             tooltip="The run stops by itself after this much video."),
                io.Boolean.Input("realtime", default=True, tooltip=(
                    "Stay at most one chunk ahead of playback, so prompt changes show up quickly (off: generate as "
                    "fast as possible).")),
                io.Boolean.Input("recache", default=True,
                                 tooltip="Re-encode the cached frames under each new prompt (LongLive)."),
                io.Combo.Input("decoder", options=list(DECODERS), default=DECODER_PREVIEW, tooltip=(
                    "preview: the model's preview decoder (fast); vae: the Wan VAE (full quality, needs vae or "
                    "cf_vae).")),
                io.Clip.Input("clip", optional=True,
                              tooltip="Load CLIP with type wan: encodes the prompts typed while it runs."),
                TextEncoderSocket.Input("text_encoder", optional=True, tooltip="Or a Causal Forcing text encoder."),
                io.Vae.Input("vae", optional=True, tooltip="For decoder vae: the native Wan 2.1 VAE."),
                VAESocket.Input("cf_vae", optional=True, tooltip="Or a Causal Forcing VAE."),
                io.Boolean.Input("save_take", default=True, optional=True, tooltip=(
                    f"Write the frames to output/{TAKE_SUBFOLDER}/{TAKE_PREFIX}_NNNNN.mp4 as they are made (H.264, "
                    "plays in browsers). A crash or a full disk still leaves a playable file of what was made.")),
                io.Int.Input("image_seconds", default=DEFAULT_IMAGE_SECONDS, min=1, max=MAX_LIVE_SECONDS,
                             optional=True, tooltip=(
                    "The images output holds the newest this many seconds of the take (memory stays bounded on long "
                    "takes; the saved take has all of it).")),
            ],
            outputs=[
                StreamSocket.Output(display_name="stream", tooltip="The stream as it was when the run ended."),
                io.Image.Output(display_name="images", tooltip=(
                    "The frames shown during the run (decoded with the chosen decoder): the newest image_seconds of "
                    "them.")),
                io.String.Output(display_name="schedule", tooltip=(
                    "The prompt events as 'chunk: prompt' lines (re-render them with Causal Forcing Prompt "
                    "Schedule).")),
                io.String.Output(display_name="take", tooltip=(
                    "The path of the saved take (an mp4 in the output folder; empty when save_take is off).")),
            ],
            hidden=[io.Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    def fingerprint_inputs(cls, **_: Any) -> float:
        return float("nan")  # a live take is never the same twice: run on every queue

    @classmethod
    def execute(
        cls, stream: StreamHandle, prompt: str, max_seconds: int, realtime: bool, recache: bool, decoder: str,
        clip: Any = None, text_encoder: CFTextEncoder | None = None, vae: Any = None, cf_vae: CFVae | None = None,
        save_take: bool = True, image_seconds: int = DEFAULT_IMAGE_SECONDS,
    ) -> io.NodeOutput:
        unique_id = cls.hidden.unique_id
        first = check_prompt_text(prompt)
        encode_text = resolve_text_encoder(
            clip, text_encoder, purpose=" (the live node encodes the prompts you type while it runs)")
        fpb = stream.frames_per_block
        max_chunks = WAN21.seconds_to_chunks(max_seconds, fpb)
        stream.check_length(max_chunks)
        if decoder == DECODER_VAE:
            frames: Any = _VAEFrames(resolve_vae(vae, cf_vae, purpose=" for decoder vae"))
        else:
            frames = stream.model.previewer or LatentRGBPreview()
        cfg = stream.model.config

        def encode(text: str) -> Prompt:
            return prompt_from_conditioning(encode_text(text), cfg.text_dim, cfg.text_len, label=text[:40])

        encoded = {first: encode(first)}  # a first prompt the encoder refuses fails the node before any work
        client = rt.current_client_id()
        if client is None:
            logger.info("Live node %s was queued without a client id (the API): it runs without steering and ends "
                        "after %d s of video or with the queue's interrupt", unique_id, max_seconds)
        session = LiveSession(secrets.token_hex(16), unique_id, client, LiveControl(), max_chunks)
        session.control.on_change = session.announce
        settings = stream.stream.settings
        stream.model.prepare(stream.model.cache_bytes(settings.latent_height, settings.latent_width, cache_frames_for(
            settings.sampler, settings.window_frames, stream.model.max_frames)))
        # the take's file exists before anything is generated: an output folder that cannot be written fails now
        take = new_take(rt.output_directory() / TAKE_SUBFOLDER, TAKE_PREFIX, WAN21.fps) if save_take else None
        try:
            reporter = ChunkReporter(
                stream.model, stream.stream, max_chunks, unique_id, previewer=frames, sid=client,
                keep_frames=image_seconds * WAN21.fps,
                frame_sink=take.write if take is not None else None, check_interrupt=False, open_ended=True,
            )  # the loop checks for interrupts
        except BaseException:
            _close_take(take)  # nothing was written: the empty file goes
            raise
        watch = _DisconnectWatch(client, session)

        def on_chunk(snapshot: Any, index: int) -> None:
            reporter.on_chunk(snapshot)
            session.events = _event_dicts(loop.events)
            session.announce()

        loop = LiveLoop(
            stream.stream, encode, session.control, first, max_chunks,
            chunk_seconds=WAN21.chunk_seconds(fpb), realtime=realtime, recache_first=recache,
            check=watch.check, on_chunk=on_chunk, on_step=reporter.on_step,
            interruptions=rt.interruption_types() + (_Disconnected,), encoded=encoded,
        )
        if client is not None:  # steerable only by the client that queued it
            REGISTRY.open(session)
        session.announce()
        result: LiveResult | None = None
        try:
            result = loop.run()
        finally:
            saved, take_error = _close_take(take)  # whatever happened, the file keeps what was written
            if result is not None:
                session.ended_by = RunEnd.DISCONNECTED if watch.gone else _RUN_ENDS[result.ended_by]
                if take_error is not None and result.error is None:  # the file failed after the last chunk
                    session.ended_by = RunEnd.ERROR
                session.error = result.error or take_error
            session.ended_by = session.ended_by or RunEnd.ERROR
            REGISTRY.close(session)
            session.events = _event_dicts(loop.events)
            session.announce()
        logger.info("Live run of node %s ended (%s) after %d chunks", unique_id, session.ended_by, result.chunks)
        if result.chunks == 0:
            if result.error is not None:
                raise CausalForcingError(f"The live run failed before its first chunk: {result.error}")
            raise CausalForcingError("The live run ended before its first chunk was made; nothing to output.")
        saved_note = ""
        if saved and take_error is None:
            saved_note = f"Saved the take: {saved} ({take.frames_on_disk} frames, {take.frames_on_disk / WAN21.fps:.1f} s)."
        if session.error is not None:
            rt.send_progress_text(f"Live run ended by an error after {result.chunks} chunks: "
                                  f"{session.error.rstrip('.')}. The outputs hold the {result.chunks} chunks made."
                                  + (f" {saved_note}" if saved_note else ""), unique_id)
        elif saved_note:
            rt.send_progress_text(saved_note, unique_id)
        handle = stream.with_stream(result.stream)
        return io.NodeOutput(handle, reporter.images(), result.schedule(), saved, ui=reporter.ui())


def _close_take(take: TakeWriter | None) -> tuple[str, str | None]:
    """Finish the take's file (idempotent): its path ("" when no frame reached it), and the writer's error message
    if it failed (the file then keeps the frames written before the failure and plays)."""
    if take is None:
        return "", None
    try:
        return (str(take.path) if take.close().frames else ""), None
    except TakeWriteError as err:
        logger.warning("%s", err)
        return (str(take.path) if take.frames_on_disk else ""), str(err)


def _event_dicts(events: list[PromptEvent]) -> list[dict[str, Any]]:
    """A run's prompt events as the ``events`` field of its live events."""
    return [{"chunk": e.chunk, "text": e.text} for e in events]


#: how a loop's end reads on the node (each keeps what was made)
_RUN_ENDS = {LiveEnd.STOP: RunEnd.STOP, LiveEnd.MAX_CHUNKS: RunEnd.MAX_CHUNKS, LiveEnd.INTERRUPTED: RunEnd.INTERRUPTED,
             LiveEnd.ERROR: RunEnd.ERROR}


class _Disconnected(Exception):
    """The client that queued a live run went away."""


class _DisconnectWatch:
    """Interruption checks for the live loop: ComfyUI's queue interrupt, and the queuing client's websocket."""

    def __init__(self, client: str | None, session: LiveSession) -> None:
        self.client, self.session = client, session
        self.gone = False
        self._missing_since: float | None = None
        self._next_look = 0.0

    def check(self) -> None:
        rt.throw_if_interrupted()
        if self.client is None:
            return
        now = time.monotonic()
        if now < self._next_look:
            return
        self._next_look = now + 0.5
        if rt.client_connected(self.client):
            self._missing_since = None
            return
        self._missing_since = self._missing_since or now
        if now - self._missing_since > DISCONNECT_GRACE_S:
            self.gone = True
            raise _Disconnected()


#: the nodes of this module, registered by :mod:`nodes`
NODES: tuple[type[io.ComfyNode], ...] = (CausalForcingLive,)
