"""Prompt schedule parsing (command line and nodes share it)."""

from __future__ import annotations

import pytest

from causal_forcing_core.errors import InvalidInputError
from causal_forcing_core.schedule import (
    ScheduleEntry,
    equal_segments,
    format_schedule,
    parse_schedule,
    prompt_at,
    schedule_prompts,
)


def test_indexed_lines() -> None:
    entries = parse_schedule("0: a cat walks\n\n  5 :  the cat jumps  \n", 7)
    assert entries == [ScheduleEntry(0, "a cat walks"), ScheduleEntry(5, "the cat jumps")]
    assert [prompt_at(entries, k) for k in (0, 4, 5, 6)] == ["a cat walks"] * 2 + ["the cat jumps"] * 2
    assert parse_schedule(format_schedule(entries), 7) == entries


def test_plain_prompt_and_equal_segments() -> None:
    assert parse_schedule("a red square moves left", 3) == [ScheduleEntry(0, "a red square moves left")]
    assert parse_schedule("a | b | c", 7) == [ScheduleEntry(0, "a"), ScheduleEntry(3, "b"), ScheduleEntry(5, "c")]
    assert equal_segments(["a", "b"], 2) == [ScheduleEntry(0, "a"), ScheduleEntry(1, "b")]


def test_prompts_with_colons_inside_are_kept() -> None:
    assert parse_schedule("0: time: noon, a cat", 2)[0].prompt == "time: noon, a cat"
    assert schedule_prompts("0: a\n3: b\n5: a") == ["a", "b"]


@pytest.mark.parametrize(
    "text,message",
    [
        ("0: a\n9: b", "starts at chunk 9, but the video has 7 chunks"),
        ("0: a\n5: b\n3: c", "sort the lines"),
        ("0: a\n3: b\n3: c", "chunk 3 appears twice"),
        ("2: a\n4: b", "must start at chunk 0"),
        ("0: a\njust words", "not of the form 'chunk: prompt'"),
        ("0:   \n", "no prompt"),
        ("   ", "empty"),
        ("a | | c", "segment"),
        ("a | b | c | d | e | f | g | h", "do not fit"),
    ],
)
def test_bad_schedules(text: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse_schedule(text, 7)


def test_seconds_mode_speaks_in_seconds_with_the_real_chunk_length() -> None:
    """Chunk-wise students: 3 latent frames = 12 pixel frames = 0.75 s at 16 fps (the geometry says so)."""
    from causal_forcing_core.geometry import WAN21

    chunk = WAN21.chunk_seconds(3)
    assert chunk == 0.75
    with pytest.raises(InvalidInputError) as err:
        parse_schedule("0: a\n5: b", 4, chunk_seconds=chunk)
    assert str(err.value) == ("Schedule line 2 starts at second 5, but the video lasts 3 s (4 chunks of 0.75 s); "
                              "start it before second 3.")
    with pytest.raises(InvalidInputError, match=r"^The schedule must start at second 0; its first line starts at "
                                                r"second 0\.5\.$"):
        parse_schedule("0.5: a\n2: b", 4, chunk_seconds=chunk)
    with pytest.raises(InvalidInputError, match=r"second 0\.5 falls in chunk 0 \(0 to 0\.75 s\) like the line"):
        parse_schedule("0: a\n0.5: b", 4, chunk_seconds=chunk)
    assert parse_schedule("0: a\n0.8s: b\n2.25: c", 4, chunk_seconds=chunk) == [
        ScheduleEntry(0, "a"), ScheduleEntry(1, "b"), ScheduleEntry(3, "c")]


def test_every_bad_line_is_reported_one_line_each_in_line_order() -> None:
    text = "just words\n0: a\n3: b\n2: c\n\n9: d\n4:"
    with pytest.raises(InvalidInputError) as err:
        parse_schedule(text, 4)
    assert str(err.value).splitlines() == [
        "Schedule line 1 ('just words') is not of the form 'chunk: prompt'.",
        "Schedule line 4: chunk 2 comes after chunk 3 (line 3); sort the lines by chunk.",
        "Schedule line 6 starts at chunk 9, but the video has 4 chunks (0 to 3).",
        "Schedule line 7 has no prompt after '4:'.",
        "Schedule line 7: chunk 4 comes after chunk 9 (line 6); sort the lines by chunk.",
        "Schedule line 7 starts at chunk 4, but the video has 4 chunks (0 to 3).",
    ]
    with pytest.raises(InvalidInputError) as err:
        parse_schedule(text, 4, chunk_seconds=0.75)
    lines = str(err.value).splitlines()
    assert lines[0] == "Schedule line 1 ('just words') is not of the form 'second: prompt'."
    # second 3 is already past a 3 s video (chunk 4 of 0..3)
    assert lines[1] == ("Schedule line 3 starts at second 3, but the video lasts 3 s (4 chunks of 0.75 s); start it "
                        "before second 3.")
    assert lines[3].startswith("Schedule line 6 starts at second 9, but the video lasts 3 s (4 chunks of 0.75 s)")
    assert len(lines) == 7 and all("chunk 9" not in line for line in lines)


def test_the_syntax_check_before_the_length_is_known_does_not_depend_on_a_chunk_length() -> None:
    """schedule_prompts (nodes: before the run, with a placeholder chunk length) checks form and order only."""
    assert schedule_prompts("0: a\n0.5: b\n4: c", chunk_seconds=1.0) == ["a", "b", "c"]
    with pytest.raises(InvalidInputError) as err:
        schedule_prompts("0: a\n3: b\n1.5: c\nnope", chunk_seconds=1.0)
    assert str(err.value).splitlines() == [
        "Schedule line 3: second 1.5 comes after second 3 (line 2); sort the lines by second.",
        "Schedule line 4 ('nope') is not of the form 'second: prompt'.",
    ]
    with pytest.raises(InvalidInputError, match=r"must start at chunk 0 \(or second 0\); its first line starts at "
                                                r"second 3\.$"):
        schedule_prompts("3: a dog", chunk_seconds=1.0)
    assert "lasts" not in str(err.value)
