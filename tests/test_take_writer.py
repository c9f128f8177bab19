"""The take writer: an mp4 written chunk by chunk in a background thread, that plays after a kill or a full disk."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

av = pytest.importorskip("av")

from causal_forcing_core.errors import InvalidInputError, TakeWriteError  # noqa: E402
from causal_forcing_core.take_writer import TakeWriter, new_take, next_take_path  # noqa: E402
from causal_forcing_core.video_io import read_video_frames  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
H, W, FPS = 32, 48, 16
# Flat frames come back within this of their colour (mean over the frame, per channel). Measured with av 18.1.0
# (libx264, crf 18, veryfast): 3.0 for the 33-frame round trip, 2.0 for the others. Neighbouring frames' colours
# differ by 7 or more in some channel, so a frame lost, doubled or moved goes over it.
COLOUR_ERROR_MAX = 5.0


def _colour(i: int) -> np.ndarray:
    """A distinct flat RGB colour for frame ``i`` (0 <= i < 34)."""
    return np.array([10 + 7 * i, 240 - 6 * i, 60 + 15 * (i % 10)], np.uint8)


def _flat(first: int, count: int, h: int = H, w: int = W) -> np.ndarray:
    """``[count, h, w, 3]`` uint8, frame k flat in ``_colour(first + k)``."""
    return np.stack([np.broadcast_to(_colour(first + k), (h, w, 3)) for k in range(count)])


def _colour_error(frames: np.ndarray, colours: np.ndarray) -> float:
    """Largest per-frame, per-channel gap between the frames' mean colours ``[t, 3]`` and ``colours``."""
    return float(np.abs(frames.reshape(len(frames), -1, 3).mean(axis=1) - colours).max())


def _run_child(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


# --------------------------------------------------------------------------------------------------- round trip
def test_round_trip_three_chunks(tmp_path: Path) -> None:
    path = tmp_path / "take.mp4"
    with TakeWriter(path, FPS) as writer:
        writer.write(torch.from_numpy(_flat(0, 9)).permute(0, 3, 1, 2).float() / 255)  # torch [t, 3, H, W] in [0, 1]
        writer.write(_flat(9, 12))  # uint8 numpy [t, H, W, 3]
        writer.write(_flat(21, 12).transpose(0, 3, 1, 2).astype(np.float32) / 255)  # float numpy [t, 3, H, W]
    result = writer.close()  # idempotent: the with-block closed it already
    assert (result.path, result.frames, result.size, result.fps, result.codec) == (path, 33, (W, H), 16.0, "h264")
    assert result.nbytes == path.stat().st_size > 0 and writer.frames_written == writer.frames_on_disk == 33
    back = read_video_frames(path)
    assert back.shape == (33, H, W, 3)
    colours = np.stack([_colour(i) for i in range(33)]).astype(float)
    assert _colour_error(back, colours) <= COLOUR_ERROR_MAX  # measured 3.0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        assert (ctx.name, ctx.pix_fmt, ctx.colorspace, ctx.color_range) == ("h264", "yuv420p", 6, 1)
        assert stream.average_rate == 16
        keyframes = [i for i, packet in enumerate(container.demux(stream)) if packet.is_keyframe]
    gaps = np.diff([*keyframes, 33])
    assert keyframes[0] == 0 and gaps.max() <= FPS  # a keyframe at least every second (more where the picture jumps)
    data = path.read_bytes()
    assert data.count(b"moof") >= 3 and b"mfra" in data  # fragmented; closed properly, so the index is at the end


def test_odd_sizes_are_padded_even(tmp_path: Path) -> None:
    with TakeWriter(tmp_path / "odd.mp4", 12.5) as writer:
        writer.write(_flat(0, 3, 33, 47))
        writer.write(_flat(3, 3, 33, 47))
    result = writer.close()
    assert (result.frames, result.size, result.fps) == (6, (48, 34), 12.5)
    back = read_video_frames(result.path)
    assert back.shape == (6, 34, 48, 3)
    assert _colour_error(back, np.stack([_colour(i) for i in range(6)]).astype(float)) <= COLOUR_ERROR_MAX


def test_take_without_frames_leaves_no_file(tmp_path: Path) -> None:
    writer = TakeWriter(tmp_path / "empty.mp4", FPS)
    assert (tmp_path / "empty.mp4").exists()  # created at once, so no other run takes the name
    writer.write(np.zeros((0, H, W, 3), np.uint8))  # an empty chunk writes nothing
    result = writer.close()
    assert (result.frames, result.size, result.nbytes) == (0, (0, 0), 0)
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------------------------------- crash safety
KILLED_CHILD = """
import os, signal, sys, time
import numpy as np
from causal_forcing_core.take_writer import TakeWriter
writer = TakeWriter(sys.argv[1] if len(sys.argv) > 1 else {path!r}, 16)
for second in range(5):  # 5 s at 16 fps, 4 chunks a second, a colour a second
    for _ in range(4):
        writer.write(np.full((4, 32, 48, 3), (40 * second, 200 - 40 * second, 90), np.uint8))
last, still = -1, 0
while still < 30:  # until the thread has encoded all it can (x264 keeps its lookahead until the end)
    time.sleep(0.01)
    still, last = (still + 1, last) if writer.frames_written == last else (0, writer.frames_written)
print(writer.frames_written, writer.frames_on_disk, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_killed_take_plays_up_to_its_last_second(tmp_path: Path) -> None:
    path = tmp_path / "killed.mp4"
    child = _run_child(KILLED_CHILD.format(path=str(path)))
    assert child.returncode == -9, child.stderr
    muxed, on_disk = map(int, child.stdout.split())
    # Keyframes (and so fragments) start at 0, 16, 32, 48, 64. The encoder holds back its lookahead (measured: 69
    # of the 80 frames reached the muxer), so the last fragment (64..) is open and lost: 64 frames are on disk.
    assert muxed >= 65 and on_disk >= 64
    back = read_video_frames(path)  # a killed file opens and decodes without errors
    assert len(back) == on_disk and len(back) >= 4 * FPS  # measured 64 frames
    colours = np.array([(40 * (i // 16), 200 - 40 * (i // 16), 90) for i in range(len(back))], float)
    assert _colour_error(back, colours) <= COLOUR_ERROR_MAX  # measured 2.0


# --------------------------------------------------------------------------------------------------- full disk
FULL_DISK_CHILD = """
import json, resource, signal
import numpy as np
from causal_forcing_core.errors import TakeWriteError
from causal_forcing_core.take_writer import TakeWriter
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writing past the limit fails with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
writer = TakeWriter({path!r}, 16)
rng = np.random.default_rng(0)
report = {{"message": None}}
try:
    for _ in range(1000):  # noise does not compress: ~1 kB a frame
        writer.write(rng.integers(0, 256, (4, 32, 48, 3), dtype=np.uint8))
    writer.close()
except TakeWriteError as err:
    report = {{"message": str(err), "cause": type(writer.error).__name__, "written": writer.frames_written,
              "on_disk": writer.frames_on_disk}}
    try:
        writer.close()
    except TakeWriteError as again:
        report["close"] = str(again)
print(json.dumps(report))
"""


def test_full_disk_raises_and_keeps_a_playable_file(tmp_path: Path) -> None:
    path, limit = tmp_path / "live_00003.mp4", 200_000
    child = _run_child(FULL_DISK_CHILD.format(limit=limit, path=str(path)))
    assert child.returncode == 0, child.stderr
    report = json.loads(child.stdout)
    message = report["message"]
    assert message is not None, "the take never hit the file size limit"
    # measured: "Writing the take to .../live_00003.mp4 failed after 180 frames (File too large). The file keeps
    # the first 165 frames (the complete fragments) and plays."
    assert message.startswith(f"Writing the take to {path} failed after {report['written']} frames (File too large)")
    assert f"keeps the first {report['on_disk']} frames" in message and message.endswith("and plays.")
    assert report["close"] == message  # close() says it again, it does not pretend the take is fine
    assert report["on_disk"] >= 5 * FPS  # 200 kB hold ~10 s of noise frames 48x32: measured 165 frames
    assert path.stat().st_size <= limit  # the fragment cut off by the limit was removed: the file ends cleanly
    back = read_video_frames(path)
    assert back.shape == (report["on_disk"], H, W, 3)  # exactly the frames the error message promises


class _DiskFillsAt20(TakeWriter):
    """A writer whose muxer fails with ENOSPC once 20 frames are in."""

    def _mux(self, packets: list) -> None:
        if packets and self.frames_written >= 20:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        super()._mux(packets)


def test_thread_failure_reaches_the_caller_without_blocking(tmp_path: Path) -> None:
    path = tmp_path / "live_00003.mp4"
    writer = _DiskFillsAt20(path, FPS, max_queued_chunks=1)
    with pytest.raises(TakeWriteError) as raised:
        for _ in range(100):  # a full queue would block for ever if the failed thread stopped taking chunks
            writer.write(np.full((8, H, W, 3), 100, np.uint8))  # a still picture: keyframes every 16 frames
    message = str(raised.value)
    assert message == (f"Writing the take to {path} failed after 20 frames (No space left on device). The file keeps "
                       f"the first 16 frames (the complete fragments) and plays.")  # keyframes at 0 and 16
    assert isinstance(writer.error, OSError) and writer.error.errno == errno.ENOSPC
    with pytest.raises(TakeWriteError, match="failed after 20 frames"):
        writer.close()
    assert len(read_video_frames(path)) == 16


# --------------------------------------------------------------------------------------------------- bad input
def test_bad_chunks_are_refused_and_the_take_goes_on(tmp_path: Path) -> None:
    writer = TakeWriter(tmp_path / "bad.mp4", FPS)
    with pytest.raises(InvalidInputError, match=r"\[t, H, W, 3\]"):
        writer.write(np.zeros((2, H, W), np.uint8))
    with pytest.raises(InvalidInputError, match=r"\[T, 3, H, W\]"):
        writer.write(torch.zeros(2, H, W, 3))  # a float tensor channel-last
    with pytest.raises(InvalidInputError, match="float frames"):
        writer.write(np.zeros((2, 3, H, W), np.int32))
    writer.write(_flat(0, 4))
    with pytest.raises(InvalidInputError, match=rf"holds {W}x{H} frames; a chunk of 64x{H} frames cannot join"):
        writer.write(_flat(4, 4, H, 64))
    writer.write(_flat(4, 4))
    result = writer.close()
    assert result.frames == 8
    assert _colour_error(read_video_frames(result.path), np.stack([_colour(i) for i in range(8)]).astype(float)) <= (
        COLOUR_ERROR_MAX
    )
    with pytest.raises(InvalidInputError, match="is closed"):
        writer.write(_flat(0, 1))


def test_existing_file_and_bad_fps_are_refused(tmp_path: Path) -> None:
    old = tmp_path / "old.mp4"
    old.write_bytes(b"an earlier take")
    with pytest.raises(InvalidInputError, match="exists.*never overwrite"):
        TakeWriter(old, FPS)
    assert old.read_bytes() == b"an earlier take"
    for fps in (0, -1, float("nan"), 5000, "fast"):
        with pytest.raises(InvalidInputError, match="fps must be a positive number"):
            TakeWriter(tmp_path / "new.mp4", fps)  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.mp4"]


# --------------------------------------------------------------------------------------------------- numbering
def test_next_take_path_numbers_takes(tmp_path: Path) -> None:
    folder = tmp_path / "takes" / "live"
    assert next_take_path(folder, "live") == folder / "live_00001.mp4" and folder.is_dir()
    for name in ("live_00001.mp4", "live_00004.mp4", "live_7.mp4", "other_00009.mp4", "live_00005.webp"):
        (folder / name).write_bytes(b"")
    assert next_take_path(folder, "live") == folder / "live_00005.mp4"  # after the highest, so names sort by time
    with pytest.raises(InvalidInputError, match="prefix"):
        next_take_path(folder, "../live")


def test_new_take_skips_a_name_taken_meanwhile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import causal_forcing_core.take_writer as take_writer

    real = take_writer.next_take_path
    calls: list[Path] = []

    def racing(folder: Path, prefix: str) -> Path:
        path = real(folder, prefix)
        if not calls:
            path.write_bytes(b"another run")  # another run claims the name between the scan and the create
        calls.append(path)
        return path

    monkeypatch.setattr(take_writer, "next_take_path", racing)
    with new_take(tmp_path, "live", FPS) as writer:
        writer.write(_flat(0, 2))
    assert [p.name for p in calls] == ["live_00001.mp4", "live_00002.mp4"]
    assert writer.close().path == tmp_path / "live_00002.mp4"
    assert (tmp_path / "live_00001.mp4").read_bytes() == b"another run"
