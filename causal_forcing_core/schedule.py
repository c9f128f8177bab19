"""Prompt schedules: which prompt drives which chunk.

Two text forms, the same for the command line and the nodes:

- lines ``index: prompt`` (``0: a cat walks`` / ``5: the cat jumps``), index = the chunk where the prompt starts;
- ``a | b | c``: equal segments over the video.

Indices may also be seconds (:func:`parse_schedule` with ``chunk_seconds``): ``2.5: the cat jumps`` starts at the
chunk holding second 2.5. Either way a schedule starts at 0, and every bad line is reported at once.

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

    With ``chunk_seconds`` (the length of one chunk in seconds, :meth:`.geometry.VideoGeometry.chunk_seconds`) line
    indices are seconds (``2.5: ...`` or ``2.5s: ...``) and map to the chunk that holds that second; otherwise they
    are chunk indices. Every bad line is reported: one :class:`InvalidInputError` with one line per problem, in the
    unit the lines use.
    """
    if num_chunks < 1:
        raise InvalidInputError(f"A schedule needs at least one chunk, got {num_chunks}.")
    return _parse(text, num_chunks, chunk_seconds, syntax_only=False)


def _parse(text: str, num_chunks: int, chunk_seconds: float | None, syntax_only: bool) -> list[ScheduleEntry]:
    if chunk_seconds is not None and not chunk_seconds > 0:
        raise InvalidInputError(f"chunk_seconds must be positive, got {chunk_seconds}.")
    lines = [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise InvalidInputError("The prompt schedule is empty; give a prompt or lines like '0: a cat walks'.")
    pattern = _LINE if chunk_seconds is None else _TIMED_LINE
    if any(pattern.match(line) for _, line in lines):
        return _parse_indexed(lines, num_chunks, chunk_seconds, syntax_only)
    joined = " ".join(line for _, line in lines)
    parts = [p.strip() for p in joined.split("|")] if "|" in joined else [joined]
    return equal_segments(parts, num_chunks)


def _s(seconds: float) -> str:
    """Seconds as written in messages: 0.75, 3, 2.5."""
    return f"{round(seconds, 3):g}"


def _parse_indexed(
    lines: list[tuple[int, str]], num_chunks: int, chunk_seconds: float | None, syntax_only: bool
) -> list[ScheduleEntry]:
    """``index: prompt`` lines (chunks, or seconds with ``chunk_seconds``) -> entries; every problem is collected.

    ``syntax_only`` (the lengths of the video and of a chunk are not known yet) checks the form of each line and the
    order of the indices, not where the lines fall in the video; its entries' starts are then only line ranks.
    """
    seconds = chunk_seconds is not None
    pattern, unit = (_TIMED_LINE, "second") if seconds else (_LINE, "chunk")
    problems: list[tuple[int, str]] = []  # (line number, what is wrong), reported in line order
    parsed: list[tuple[int, float, str]] = []  # (line number, index in the lines' unit, prompt)
    for number, line in lines:
        match = pattern.match(line)
        if not match:
            problems.append((number, f"Schedule line {number} ({line!r}) is not of the form '{unit}: prompt'."))
            continue
        value, prompt = float(match.group(1)), match.group(2)
        if not prompt:
            problems.append((number, f"Schedule line {number} has no prompt after '{match.group(1)}:'."))
        if parsed and value == parsed[-1][1]:
            problems.append((number, f"Schedule line {number}: {unit} {_s(value)} appears twice (also on line "
                                     f"{parsed[-1][0]})."))
        elif parsed and value < parsed[-1][1]:
            problems.append((number, f"Schedule line {number}: {unit} {_s(value)} comes after {unit} "
                                     f"{_s(parsed[-1][1])} (line {parsed[-1][0]}); sort the lines by {unit}."))
        parsed.append((number, value, prompt))
    if parsed and parsed[0][1] != 0:
        number, first = parsed[0][:2]
        # before the run (syntax_only) a seconds-mode check also stands for chunks: the unit is not known yet
        zero = "chunk 0 (or second 0)" if seconds and syntax_only else f"{unit} 0"
        problems.append((number, f"The schedule must start at {zero}; its first line starts at {unit} {_s(first)}."))
    if syntax_only:
        _raise(problems)
        return [ScheduleEntry(rank, prompt) for rank, (_, _, prompt) in enumerate(parsed)]
    entries: list[ScheduleEntry] = []
    for number, value, prompt in parsed:
        start = int(value / chunk_seconds + 1e-9) if seconds else int(value)
        if start >= num_chunks:
            problems.append((number, _past_the_end(number, value, num_chunks, chunk_seconds)))
        elif seconds and entries and start == entries[-1].start:
            problems.append((number, (
                f"Schedule line {number}: second {_s(value)} falls in chunk {start} ({_s(start * chunk_seconds)} to "
                f"{_s((start + 1) * chunk_seconds)} s) like the line before it; one chunk lasts {_s(chunk_seconds)} s, "
                f"so start prompts at least {_s(chunk_seconds)} s apart."
            )))
        if not entries or start > entries[-1].start:
            entries.append(ScheduleEntry(start, prompt))
    _raise(problems)
    return entries


def _raise(problems: list[tuple[int, str]]) -> None:
    """One InvalidInputError listing every problem, one line each, in the order of the schedule's lines."""
    if problems:
        raise InvalidInputError("\n".join(text for _, text in sorted(problems, key=lambda p: p[0])))


def _past_the_end(number: int, value: float, num_chunks: int, chunk_seconds: float | None) -> str:
    if chunk_seconds is None:
        return (f"Schedule line {number} starts at chunk {int(value)}, but the video has {num_chunks} chunks "
                f"(0 to {num_chunks - 1}).")
    length = num_chunks * chunk_seconds
    return (f"Schedule line {number} starts at second {_s(value)}, but the video lasts {_s(length)} s ({num_chunks} "
            f"chunks of {_s(chunk_seconds)} s); start it before second {_s(length)}.")


def equal_segments(prompts: list[str], num_chunks: int) -> list[ScheduleEntry]:
    """Spread ``prompts`` over ``num_chunks`` chunks in equal segments (earlier segments get the remainder)."""
    if any(not p for p in prompts):
        raise InvalidInputError("A segment of the 'a | b | c' schedule is empty.")
    if len(prompts) > num_chunks:
        raise InvalidInputError(
            f"{len(prompts)} segments do not fit into {num_chunks} chunks (each segment needs at least one); use at "
            f"most {num_chunks} segments, or a longer video."
        )
    base, extra = divmod(num_chunks, len(prompts))
    entries, start = [], 0
    for i, prompt in enumerate(prompts):
        entries.append(ScheduleEntry(start, prompt))
        start += base + (1 if i < extra else 0)
    return entries


def schedule_prompts(text: str, chunk_seconds: float | None = None) -> list[str]:
    """The distinct prompts of a schedule, in order of appearance, before the video length is known (this also
    checks the syntax and says which line is wrong)."""
    entries = _parse(text, 1 << 30, chunk_seconds, syntax_only=True)
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
