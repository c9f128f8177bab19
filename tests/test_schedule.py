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
