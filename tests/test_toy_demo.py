"""``python -m causal_forcing_core demo``: the toy model (the shipped bundle, else a random one) makes a video with a
prompt switch, a contact sheet beside it and a JSON line; bad prompts fail before anything loads."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from causal_forcing_core.__main__ import main
from causal_forcing_core.contact_sheet import LABEL_HEIGHT, PAD, contact_sheet, pick_frames
from causal_forcing_core.demo import plan_prompts
from causal_forcing_core.errors import InvalidInputError
from causal_forcing_core.video_io import read_video_frames


def _sheet_size(chunks: int, frames: int = 4, scale: int = 2, size: int = 64) -> tuple[int, int]:
    tile = size * scale
    return PAD + frames * (tile + PAD), PAD + chunks * (LABEL_HEIGHT + tile + PAD)


def test_demo_writes_the_video_the_contact_sheet_and_a_json_line(toy_bundle, tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo" / "toy_demo.mp4"
    assert main(["demo", "--chunks", "4", "--out", str(out),
                 "--schedule", "0: a red square moves right quickly\n2: a blue circle moves down"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    frames = 1 + (4 * 3 - 1) * 4  # 4 chunks of 3 latent frames
    assert report["frames"] == frames and len(report["chunk_ms"]) == 4 and len(report["decode_ms"]) == 4
    assert report["prompts"] == ["0: a red square moves right quickly", "2: a blue circle moves down slowly"]
    assert report["recache"] is True and report["seconds"] > 0
    video = read_video_frames(out)
    assert video.shape == (frames, 64, 64, 3)
    sheet = Path(report["contact_sheet"])
    assert sheet == out.with_suffix(".png")
    assert Image.open(sheet).size == _sheet_size(4)


def test_demo_defaults_switch_at_chunk_three_without_recache(toy_bundle, tmp_path: Path, capsys) -> None:
    out = tmp_path / "toy.gif"
    assert main(["demo", "--no-recache", "--out", str(out), "--bundle", str(toy_bundle.folder)]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["prompts"] == ["0: a red square moves right quickly", "3: a blue circle moves down slowly"]
    assert report["recache"] is False and report["frames"] == 1 + (6 * 3 - 1) * 4
    assert Image.open(out.with_suffix(".png")).size == _sheet_size(6)


@pytest.mark.parametrize("argv, word", [
    (["--prompt", "a purple square moves left"], "purple"),
    (["--schedule", "0: a red square moves left\n2: a red dog moves up"], "dog"),
])
def test_an_unknown_word_exits_2_with_the_vocabulary_before_loading(argv: list[str], word: str, tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "bad.mp4"
    with caplog.at_level(logging.ERROR):  # a bundle that does not exist: validation must come first
        code = main(["demo", *argv, "--out", str(out), "--bundle", str(tmp_path / "no_bundle")])
    assert code == 2
    message = caplog.text
    assert word in message and "vocabulary" in message
    for known in ("red", "square", "circle", "left", "quickly"):
        assert known in message
    assert "bundle" not in message and not out.exists()


def test_a_missing_bundle_is_a_clear_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        assert main(["demo", "--out", str(tmp_path / "x.mp4"), "--bundle", str(tmp_path / "none")]) == 2
    assert "incomplete" in caplog.text and "CAUSAL_FORCING_TOY_BUNDLE" in caplog.text


def test_plan_prompts_canonicalises_and_checks_the_schedule() -> None:
    entries, canonical = plan_prompts("0: A red square moves left.\n4: quickly, a green triangle moves up", 6)
    assert [e.start for e in entries] == [0, 4]
    assert list(canonical.values()) == ["a red square moves left slowly", "a green triangle moves up quickly"]
    with pytest.raises(InvalidInputError, match="chunk"):
        plan_prompts("0: a red square moves left\n9: a red square moves up", 6)
    with pytest.raises(InvalidInputError, match="at least 1"):
        plan_prompts("a red square moves left", 0)


def test_contact_sheet_rows_labels_and_scale() -> None:
    rows = [np.full((9, 8, 8, 3), 200, np.uint8), np.zeros((12, 8, 8, 3), np.uint8)]
    sheet = contact_sheet(rows, ["first", "second"], frames_per_row=3, scale=2)
    assert sheet.size == (PAD + 3 * (16 + PAD), PAD + 2 * (LABEL_HEIGHT + 16 + PAD))
    assert sheet.getpixel((PAD, PAD + LABEL_HEIGHT)) == (200, 200, 200)
    assert pick_frames(9, 4) == [0, 3, 5, 8] and pick_frames(2, 4) == [0, 1]
    with pytest.raises(InvalidInputError):
        contact_sheet(rows, ["only one"])


@pytest.mark.parametrize("chunks, switch", [(1, None), (2, 1)])
def test_short_demos_fit_the_default_switch_to_their_length(chunks: int, switch: int | None, toy_bundle,
                                                            tmp_path: Path, capsys) -> None:
    out = tmp_path / "short.webp"
    assert main(["demo", "--chunks", str(chunks), "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    expected = ["0: a red square moves right quickly"]
    if switch is not None:
        expected.append(f"{switch}: a blue circle moves down slowly")
    assert report["prompts"] == expected and report["frames"] == 1 + (chunks * 3 - 1) * 4


def test_default_schedule_switches_half_way() -> None:
    from causal_forcing_core.demo import default_schedule

    assert [e.start for e in plan_prompts(default_schedule(3), 3)[0]] == [0, 1]
    assert [e.start for e in plan_prompts(default_schedule(6), 6)[0]] == [0, 3]
    assert [e.start for e in plan_prompts(default_schedule(9), 9)[0]] == [0, 4]
    assert default_schedule(1) == "0: a red square moves right quickly"


@pytest.mark.parametrize("option", ["--prompt", "--schedule"])
def test_an_empty_prompt_or_schedule_is_refused(option: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        code = main(["demo", option, "  ", "--out", str(tmp_path / "x.mp4"), "--bundle", str(tmp_path / "none")])
    assert code == 2
    assert f"{option} is empty; give a toy caption such as 'a red square moves right quickly'" in caplog.text
    assert "bundle" not in caplog.text
