"""Prompt schedules: which prompt drives which chunk.

Two text forms, the same for the command line and the nodes:

- lines ``index: prompt`` (``0: a cat walks`` / ``5: the cat jumps``), index = the chunk where the prompt starts;
- ``a | b | c``: equal segments over the video.

Indices may also be seconds (:func:`parse_schedule` with ``chunk_seconds``): ``2.5: the cat jumps`` starts at the
chunk holding second 2.5.

A plain prompt without either form is one segment starting at chunk 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidInputError

_LINE = re.compile(r"^\s*(\d+)\s*:\s*(.*?)\s*$")
_TIMED_LINE = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*(?:s\b)?\s*:\s*(.*?)\s*$")


@dataclass(frozen=True)
class ScheduleEntry:
    """``prompt`` drives every chunk from ``start`` until the next entry."""

    start: int
    prompt: str


def parse_schedule(text: str, num_chunks: int, chunk_seconds: float | None = None) -> list[ScheduleEntry]:
    """Parse a schedule for a video of ``num_chunks`` chunks; entries come back sorted and validated.

    With ``chunk_seconds`` (the length of one chunk in seconds) line indices are seconds (``2.5: ...`` or
    ``2.5s: ...``) and map to the chunk that holds that second; otherwise they are chunk indices.
    """
    if num_chunks < 1:
        raise InvalidInputError(f"A schedule needs at least one chunk, got {num_chunks}.")
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        raise InvalidInputError("The prompt schedule is empty; give a prompt or lines like '0: a cat walks'.")
    pattern = _LINE if chunk_seconds is None else _TIMED_LINE
    if any(pattern.match(line) for line in lines):
        if chunk_seconds is None:
            return _parse_indexed(lines, num_chunks)
        lines = [_seconds_to_chunk_line(number, line, chunk_seconds) for number, line in enumerate(lines, 1)]
        try:
            return _parse_indexed(lines, num_chunks)
        except InvalidInputError as err:
            raise InvalidInputError(
                f"{err} (The lines give seconds; one chunk lasts {chunk_seconds:g} s, so second s falls in chunk "
                f"floor(s / {chunk_seconds:g}).)"
            ) from None
    joined = " ".join(line.strip() for line in lines)
    parts = [p.strip() for p in joined.split("|")] if "|" in joined else [joined]
    return equal_segments(parts, num_chunks)


def _seconds_to_chunk_line(number: int, line: str, chunk_seconds: float) -> str:
    match = _TIMED_LINE.match(line)
    if not match:
        raise InvalidInputError(f"Schedule line {number} ({line.strip()!r}) is not of the form 'second: prompt'.")
    if chunk_seconds <= 0:
        raise InvalidInputError(f"chunk_seconds must be positive, got {chunk_seconds}.")
    chunk = int(float(match.group(1)) / chunk_seconds + 1e-9)
    return f"{chunk}: {match.group(2)}"


def _parse_indexed(lines: list[str], num_chunks: int) -> list[ScheduleEntry]:
    entries = []
    for number, line in enumerate(lines, 1):
        match = _LINE.match(line)
        if not match:
            raise InvalidInputError(f"Schedule line {number} ({line.strip()!r}) is not of the form 'chunk: prompt'.")
        start, prompt = int(match.group(1)), match.group(2)
        if not prompt:
            raise InvalidInputError(f"Schedule line {number} has no prompt after '{start}:'.")
        if start >= num_chunks:
            raise InvalidInputError(
                f"Schedule line {number} starts at chunk {start}, but the video has {num_chunks} chunks "
                f"(0 to {num_chunks - 1})."
            )
        if entries and start == entries[-1].start:
            raise InvalidInputError(f"Schedule line {number}: chunk {start} appears twice.")
        if entries and start < entries[-1].start:
            raise InvalidInputError(
                f"Schedule line {number}: chunk {start} comes after chunk {entries[-1].start}; sort the lines by chunk."
            )
        entries.append(ScheduleEntry(start, prompt))
    if entries[0].start != 0:
        raise InvalidInputError(f"The schedule must start at chunk 0 (its first line starts at {entries[0].start}).")
    return entries


def equal_segments(prompts: list[str], num_chunks: int) -> list[ScheduleEntry]:
    """Spread ``prompts`` over ``num_chunks`` chunks in equal segments (earlier segments get the remainder)."""
    if any(not p for p in prompts):
        raise InvalidInputError("A segment of the 'a | b | c' schedule is empty.")
    if len(prompts) > num_chunks:
        raise InvalidInputError(f"{len(prompts)} segments do not fit into {num_chunks} chunks.")
    base, extra = divmod(num_chunks, len(prompts))
    entries, start = [], 0
    for i, prompt in enumerate(prompts):
        entries.append(ScheduleEntry(start, prompt))
        start += base + (1 if i < extra else 0)
    return entries


def schedule_prompts(text: str, chunk_seconds: float | None = None) -> list[str]:
    """The distinct prompts of a schedule, in order of appearance, before the video length is known (this also
    checks the syntax and says which line is wrong)."""
    entries = parse_schedule(text, num_chunks=1 << 30, chunk_seconds=chunk_seconds)
    return list(dict.fromkeys(e.prompt for e in entries))


def prompt_at(entries: list[ScheduleEntry], chunk: int) -> str:
    """The prompt driving ``chunk``."""
    current = entries[0].prompt
    for entry in entries:
        if entry.start > chunk:
            break
        current = entry.prompt
    return current


def format_schedule(entries: list[ScheduleEntry]) -> str:
    """The line form, which :func:`parse_schedule` reads back."""
    return "\n".join(f"{e.start}: {e.prompt}" for e in entries)
