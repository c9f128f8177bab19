"""Progress and live preview of a generating node.

One progress bar over every denoising step of the node's run (each update is also an interruption point), and after
each chunk: the chunk decoded with the model's preview decoder, its last frame shown on the node (ComfyUI's preview
image), and its frames written as JPEGs to ComfyUI's temp folder and announced with a
:data:`.protocol.CHUNK_EVENT` websocket event, which the player in ``js/causal_forcing_player.js`` plays at the
video's frame rate.

The event's data: ``node`` (the node id), ``run`` (an id per node run), ``chunk`` (index of the chunk in the
stream), ``chunk_in_run``, ``chunks_in_run`` (null for a live run, whose length is known only when it ends), ``fps``,
``width``, ``height`` and ``frames``: a list of ``{"filename", "subfolder", "type": "temp"}`` for ``/view``.
"""

from __future__ import annotations

import logging
import re
import shutil
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..causal_forcing_core.geometry import WAN21
from ..causal_forcing_core.stream import Stream
from . import comfy_runtime as rt
from .payloads import CFModel
from .protocol import CHUNK_EVENT, UI_FPS_KEY, UI_FRAMES_KEY

logger = logging.getLogger(__name__)

#: temp subfolder holding the preview frames of each run
TEMP_SUBFOLDER = "causal_forcing"
#: runs of one node whose preview frames are kept in the temp folder (its older runs are deleted; a cached node's
#: frames stay, since it did not run again)
KEPT_RUNS_PER_NODE = 2
#: JPEG quality of streamed preview frames
JPEG_QUALITY = 85
#: frames of a run the player can replay after it (two minutes of video): older preview JPEGs are deleted as the run
#: goes, so the temp folder stays bounded on long runs
REPLAY_FRAMES = 120 * WAN21.fps


def _to_pil(frame: torch.Tensor) -> Image.Image:
    """[3, H, W] in [0, 1] -> PIL RGB."""
    arr = (frame.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0).round().astype(np.uint8)
    return Image.fromarray(arr, mode="RGB")


def _prune_runs(root: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` run folders of one node."""
    runs = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    for old in runs[:-keep] if keep else runs:
        shutil.rmtree(old, ignore_errors=True)


class ChunkReporter:
    """Progress bar and player frames for one node run generating ``num_chunks`` chunks (ComfyUI's own node preview
    image of a chunk only when its player frames could not be written).

    Use ``on_step`` and ``on_chunk`` as :meth:`Stream.generate` callbacks.
    """

    def __init__(
        self, model: CFModel, stream: Stream, num_chunks: int, node_id: str | None, *, previewer: Any = None,
        sid: str | None = None, keep_frames: int | None = None, replay_frames: int | None = None,
        frame_sink: Callable[[torch.Tensor], None] | None = None, check_interrupt: bool = True,
        open_ended: bool = False,
    ) -> None:
        """``previewer``: the decoder for the frames (default: the model's preview decoder; anything with
        ``stream().decode(latents) -> [B, t, 3, H, W] in [0, 1]``). ``sid``: the client the events go to (default: the one
        that queued the running prompt, like ComfyUI's own progress events; everyone when unknown).
        ``keep_frames``: also keep the newest ``keep_frames`` decoded frames (:meth:`images`; older ones are
        dropped as the run goes), and ``frame_sink``: give each chunk's frames [t, 3, H, W] in [0, 1] to it (a take
        written to disk) before the chunk counts as shown. With either the frames are an output: a decoder or sink
        failure raises (the caller keeps what was made before it) instead of turning previews off.
        ``replay_frames``: keep the player's JPEGs of the newest ``replay_frames`` frames only (older files are
        deleted as the run goes; default :data:`REPLAY_FRAMES`). ``check_interrupt``: check for a queue interrupt
        at every step (off when the caller's loop checks itself). ``open_ended``: ``num_chunks`` is a maximum, not
        the run's length (a live run): the events then say ``chunks_in_run: null``, so the player shows no total
        until the run ends."""
        sampler = stream.settings.sampler
        first = stream.num_chunks
        self.total_steps = sum(sampler.progress_steps(first + i) for i in range(num_chunks))
        self.bar = rt.ProgressBar(self.total_steps, node_id)
        self.node_id = node_id
        self.num_chunks = num_chunks
        self.open_ended = open_ended
        self.fps = WAN21.fps
        self.run_id = uuid.uuid4().hex[:12]
        self.done_steps = 0
        self.chunks_done = 0
        self.frames_written: deque[dict[str, str]] = deque()
        self.replay_frames = REPLAY_FRAMES if replay_frames is None else replay_frames
        chosen = model.previewer if previewer is None else previewer
        self._preview = chosen.stream() if chosen is not None else None
        self.sid = sid if sid is not None else rt.current_client_id()
        self.check_interrupt = check_interrupt
        self.keep_frames = keep_frames
        self.frame_sink = frame_sink
        self.frames_are_output = keep_frames is not None or frame_sink is not None
        self._kept: deque[torch.Tensor] = deque()
        self._kept_count = 0
        self._folder: Path | None = None
        newest = stream.newest_latents
        if self._preview is not None and newest is not None:
            # prime the preview decoder's memory with the newest committed frames, so the first chunk joins on
            self._decode(newest)

    # ----------------------------------------------------------------------------------------------- callbacks
    def on_step(self, step: int, steps: int, x0: torch.Tensor) -> None:
        """After each denoising step: advance the bar (ComfyUI's progress hook raises on interruption)."""
        self.done_steps += 1
        self.bar.update_absolute(self.done_steps, self.total_steps)
        if self.check_interrupt:
            rt.throw_if_interrupted()

    def on_chunk(self, stream: Stream) -> None:
        """After each chunk: preview its frames on the node and send them to the player."""
        self.chunks_done += 1
        if self._preview is None:
            return
        frames = self._decode(stream.newest_latents)
        if frames is None or frames.shape[0] == 0:
            return
        if self.frame_sink is not None:  # first: a chunk the take could not get is not shown either
            self.frame_sink(frames)
        try:
            files = self._write_frames(frames, stream.num_chunks - 1)
        except OSError as err:  # a full disk must not fail the generation
            logger.warning("Could not write preview frames: %s", err)
            files = []
        if not files:  # the player gets no frames: ComfyUI's own node preview shows the chunk's last one instead
            self.bar.update_absolute(self.done_steps, self.total_steps, ("JPEG", _to_pil(frames[-1]), None))
        else:  # the player shows them; a progress preview too would duplicate them beside it on the node
            rt.send_sync(CHUNK_EVENT, {
                "node": self.node_id, "run": self.run_id, "chunk": stream.num_chunks - 1,
                "chunk_in_run": self.chunks_done - 1, "chunks_in_run": None if self.open_ended else self.num_chunks,
                "fps": self.fps,
                "width": int(frames.shape[-1]), "height": int(frames.shape[-2]), "frames": files,
            }, self.sid)
        # last: a chunk whose showing failed is in neither the outputs nor the replay (the live loop drops it)
        self._replay(files)
        if self.keep_frames is not None:
            self._keep(frames.to(torch.float16))  # half the memory of a long take; fp16 keeps more than 8 bits in [0, 1]

    # ----------------------------------------------------------------------------------------------- helpers
    def _decode(self, latents: torch.Tensor) -> torch.Tensor | None:
        """Latents [1, n, C, h, w] -> frames [t, 3, H, W] in [0, 1] on the CPU."""
        try:
            with torch.no_grad():
                return self._preview.decode(latents)[0].float().cpu()
        except Exception as err:  # noqa: BLE001 - a broken preview must not cost the user the video
            if self.frames_are_output:  # the caller ends the run and keeps what it has
                raise
            logger.warning("Preview decoding failed, previews are off for this run: %s", err)
            self._preview = None
            return None

    def _write_frames(self, frames: torch.Tensor, chunk: int) -> list[dict[str, str]]:
        if self._folder is None:
            node = re.sub(r"[^A-Za-z0-9_-]", "_", self.node_id or "node")
            root = rt.temp_directory() / TEMP_SUBFOLDER / node
            root.mkdir(parents=True, exist_ok=True)
            _prune_runs(root, KEPT_RUNS_PER_NODE - 1)
            self._folder = root / self.run_id
            self._folder.mkdir()
        subfolder = self._folder.relative_to(rt.temp_directory()).as_posix()
        files = []
        for j, frame in enumerate(frames):
            name = f"chunk{chunk:05d}_{j:03d}.jpg"
            _to_pil(frame).save(self._folder / name, quality=JPEG_QUALITY)
            files.append({"filename": name, "subfolder": subfolder, "type": "temp"})
        return files

    def _keep(self, frames: torch.Tensor) -> None:
        """Keep ``frames`` [t, 3, H, W] for :meth:`images`, dropping the oldest beyond ``keep_frames``."""
        self._kept.append(frames)
        self._kept_count += frames.shape[0]
        while self._kept_count > self.keep_frames:
            extra = self._kept_count - self.keep_frames
            oldest = self._kept[0]
            if oldest.shape[0] <= extra:
                self._kept.popleft()
                self._kept_count -= oldest.shape[0]
            else:
                self._kept[0] = oldest[extra:].clone()  # a slice would keep the whole chunk alive
                self._kept_count -= extra

    def _replay(self, files: list[dict[str, str]]) -> None:
        """Add a chunk's JPEGs to the replay, deleting the oldest beyond ``replay_frames``."""
        self.frames_written.extend(files)
        while len(self.frames_written) > self.replay_frames:
            old = self.frames_written.popleft()
            (rt.temp_directory() / old["subfolder"] / old["filename"]).unlink(missing_ok=True)

    @property
    def kept_frames(self) -> int:
        """Frames :meth:`images` holds."""
        return self._kept_count

    def images(self) -> torch.Tensor | None:
        """The kept frames as a ComfyUI ``IMAGE`` [N, H, W, 3] float32 in [0, 1] (None when none were kept)."""
        if not self._kept:
            return None
        return torch.cat(list(self._kept)).float().permute(0, 2, 3, 1).contiguous()

    def ui(self) -> dict[str, Any]:
        """The node's ``ui`` output: the frames of this run, so the player can replay them after the run."""
        return {UI_FRAMES_KEY: list(self.frames_written), UI_FPS_KEY: [self.fps]} if self.frames_written else {}
