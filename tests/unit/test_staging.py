"""COPY text for the staging table: counts, chunking, progress, name sets, the guarded stream."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from km2pg import staging
from km2pg.staging import (
    CHUNK_CHARS,
    NULL,
    GuardedStream,
    StagedNames,
    StageStats,
    copy_export,
    copy_text,
)
from tests.helpers import numbered

LATEST = 1_900_000_000
JAN = int(datetime(2024, 1, 31, 23, 59, 59, tzinfo=UTC).timestamp())
FEB = int(datetime(2024, 2, 1, 0, 0, 0, tzinfo=UTC).timestamp())
MAR = int(datetime(2024, 3, 15, 12, 0, 0, tzinfo=UTC).timestamp())


def line(**fields: Any) -> str:
    return json.dumps({"_p": "john", "_t": FEB, **fields})


def stage(lines: list[str], on_progress: Any = None) -> tuple[list[str], StageStats]:
    """The lines' rows, without the ends rows that follow them (tests/unit/test_staging_ends.py)."""
    stats = StageStats()
    chunks = list(copy_export(numbered(lines), LATEST, stats, on_progress, with_ends=False))
    return chunks, stats


def rows_of(chunks: list[str]) -> list[list[str]]:
    text = "".join(chunks)
    assert text.endswith("\n") or not text
    return [row.split("\t") for row in text.split("\n")[:-1]]


# ---------------------------------------------------------------------------------------------
# Counts


def test_copy_export_counts_every_kind_of_line() -> None:
    lines = [
        line(_n="Signed Up", plan="Pro", seats="3", _t=JAN),  # event, 2 properties
        line(_n="Visited"),  # event, no property
        line(email="j@x.com"),  # property set, 1 property
        "",  # blank: counted as a line number only
        line(_p2="j@x.com", _t=MAR),  # alias
        "not json",  # reject
        '{"_p":"a","_t":1}',  # reject (before 2000)
        line(a="1", b="2", c=None),  # property set, 2 properties
    ]
    chunks, stats = stage(lines)
    assert stats.lines == 8
    assert stats.accepted == 5
    assert stats.rejects == 2
    assert stats.parsed == 7
    assert stats.reject_share() == pytest.approx(2 / 7)
    assert stats.events == 2
    assert stats.property_sets == 2
    assert stats.aliases == 1
    assert stats.properties == 5
    assert stats.min_t == JAN
    assert stats.max_t == MAR
    assert stats.min_time() == datetime.fromtimestamp(JAN, UTC)
    assert stats.max_time() == datetime.fromtimestamp(MAR, UTC)
    assert stats.months == {(2024, 1), (2024, 2), (2024, 3)}
    assert stats.names.actions == {"signed up", "visited"}
    assert stats.names.keys == {"plan", "seats", "email", "a", "b"}

    rows = rows_of(chunks)
    assert [r[0] for r in rows] == ["e", "k", "k", "e", "p", "k", "a", "r", "r", "p", "k", "k"]
    assert [r[1] for r in rows] == ["1", "1", "1", "2", "3", "3", "5", "6", "7", "8", "8", "8"]
    assert all(len(r) == 8 for r in rows)


def test_copy_export_row_layout_per_kind() -> None:
    chunks, _ = stage([line(_n="Ev", k="v", _t=JAN), line(_p2="bob"), line(k2="v2"), '{"_p":"a"}'])
    n = NULL
    assert rows_of(chunks) == [
        ["e", "1", "john", n, str(JAN), "ev", n, n],
        ["k", "1", n, n, n, "k", "v", n],
        ["a", "2", "john", "bob", str(FEB), n, n, n],
        ["p", "3", "john", n, str(FEB), n, n, n],
        ["k", "3", n, n, n, "k2", "v2", n],
        ["r", "4", n, n, n, "missing _t", '{"_p":"a"}', n],
    ]


def test_copy_export_escapes_special_characters_of_non_plain_lines() -> None:
    chunks, _ = stage([line(_p="a\tb", _n="x\ny", **{"k\\": "v\r\n\t\\"})])
    text = "".join(chunks)
    assert text.count("\n") == 2  # two rows, nothing else breaks a row
    rows = rows_of(chunks)
    assert rows[0][2] == "a\\tb"
    assert rows[0][5] == "x\\ny"
    assert rows[1][5:7] == ["k\\\\", "v\\r\\n\\t\\\\"]


def test_copy_export_escapes_rejects() -> None:
    chunks, _ = stage(['{"_p":"a\\tb", broken'])
    (row,) = rows_of(chunks)
    assert row[0] == "r"
    assert row[6] == '{"_p":"a\\\\tb", broken'


def test_copy_text_escapes_only_what_copy_gives_a_meaning_to() -> None:
    assert copy_text("plain é \x01") == "plain é \x01"
    assert copy_text("a\\b\tc\nd\re") == "a\\\\b\\tc\\nd\\re"
    assert copy_text("\\N") == "\\\\N"


def test_copy_export_with_nothing_yields_nothing() -> None:
    progress: list[int] = []
    chunks, stats = stage([], progress.append)
    assert chunks == []
    assert progress == []
    assert (stats.lines, stats.accepted, stats.rejects) == (0, 0, 0)
    assert stats.min_t is None
    assert stats.max_t is None
    assert stats.min_time() is None
    assert stats.max_time() is None
    assert stats.months == set()
    assert stats.reject_share() == 0.0


def test_copy_export_counts_only_blank_lines_as_nothing() -> None:
    chunks, stats = stage(["", "  ", ""])
    assert chunks == []
    assert stats.parsed == 0


def test_lines_is_the_last_line_number_seen_blank_lines_in_between_included() -> None:
    _, stats = stage([line(), "", "", line()])
    assert stats.lines == 4
    assert stats.accepted == 2


def test_months_come_from_utc_days() -> None:
    _, stats = stage([line(_t=JAN), line(_t=JAN + 1)])  # 23:59:59 then 00:00:00 next month
    assert stats.months == {(2024, 1), (2024, 2)}


def test_months_accumulate_into_the_given_stats() -> None:
    stats = StageStats()
    stats.months.add((2020, 5))
    list(copy_export(numbered([line()]), LATEST, stats))
    assert stats.months == {(2020, 5), (2024, 2)}


# ---------------------------------------------------------------------------------------------
# Chunking and progress


def many_lines(count: int) -> list[str]:
    return [line(_p=f"person-{i}", _n=f"event {i % 7}", value="x" * 40) for i in range(count)]


def test_many_lines_make_several_chunks_each_ending_with_a_newline() -> None:
    lines = many_lines(20_000)
    chunks, stats = stage(lines)
    assert len(chunks) > 3
    for chunk in chunks:
        assert chunk.endswith("\n")
        assert not chunk.startswith("\n")
    for chunk in chunks[:-1]:
        assert len(chunk) >= CHUNK_CHARS
        assert len(chunk) < CHUNK_CHARS + 1000  # one row past the mark at most
    rows = rows_of(chunks)
    assert len(rows) == 40_000
    assert stats.accepted == stats.events == stats.lines == 20_000
    assert stats.properties == 20_000


def test_chunks_split_on_row_boundaries() -> None:
    chunks, _ = stage(many_lines(10_000))
    for chunk in chunks:
        for row in chunk.split("\n")[:-1]:
            assert row.count("\t") == 7


def test_progress_reports_add_up_to_the_line_count() -> None:
    progress: list[int] = []
    lines = many_lines(12_000)
    lines[5000] = ""
    lines.append("")  # a trailing blank line is not a parsed line
    lines.append("garbage")
    chunks, stats = stage(lines, progress.append)
    assert len(progress) == len(chunks) > 1
    assert all(step > 0 for step in progress)
    assert sum(progress) == stats.lines == len(lines)


def test_progress_is_reported_once_for_a_small_file() -> None:
    progress: list[int] = []
    stage([line(), line()], progress.append)
    assert progress == [2]


def test_stats_are_saved_as_each_chunk_is_yielded() -> None:
    stats = StageStats()
    chunks = copy_export(numbered(many_lines(10_000)), LATEST, stats)
    next(chunks)
    assert 0 < stats.accepted < 10_000
    assert stats.lines == stats.accepted
    list(chunks)
    assert stats.accepted == 10_000


# ---------------------------------------------------------------------------------------------
# Name sets


def test_staged_names_are_kept_while_small() -> None:
    names = StagedNames()
    names.actions = {"a"}
    names.keys = {"k"}
    assert names.bound() == ({"a"}, {"k"})


def test_staged_names_fall_back_to_none_past_max_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(staging, "MAX_NAMES", 3)
    lines = [line(_n=f"event {i}", **{f"key {i}": "v"}) for i in range(3)]
    _, stats = stage(lines)
    assert stats.names.actions == {"event 0", "event 1", "event 2"}
    assert stats.names.keys == {"key 0", "key 1", "key 2"}

    _, stats = stage([*lines, line(_n="event 3")])
    assert stats.names.actions is None
    assert stats.names.keys == {"key 0", "key 1", "key 2"}

    _, stats = stage([*lines, line(**{"key 3": "v"})])
    assert stats.names.actions == {"event 0", "event 1", "event 2"}
    assert stats.names.keys is None


def test_staged_names_give_up_mid_file_and_stay_given_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(staging, "MAX_NAMES", 50)
    lines = [line(_n=f"event {i}", **{f"key {i}": "x" * 40}) for i in range(20_000)]
    chunks, stats = stage(lines)
    assert len(chunks) > 1
    assert stats.names.actions is None
    assert stats.names.keys is None
    assert stats.events == 20_000  # the rows themselves are all still staged
    assert len(rows_of(chunks)) == 40_000


def test_staged_names_bound_direct(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(staging, "MAX_NAMES", 1)
    names = StagedNames(actions={"a", "b"}, keys={"k"})
    assert names.bound() == (None, {"k"})
    assert names.actions is None
    names.keys = {"k", "l"}
    assert names.bound() == (None, None)


# ---------------------------------------------------------------------------------------------
# GuardedStream


def test_guarded_stream_passes_chunks_through() -> None:
    guarded = GuardedStream(iter(["a\n", "b\n"]))
    assert list(guarded) == ["a\n", "b\n"]
    assert guarded.error is None


def test_guarded_stream_captures_an_exception_and_ends_the_stream() -> None:
    def chunks() -> Iterator[str]:
        yield "a\n"
        raise OSError("connection reset while reading")

    guarded = GuardedStream(chunks())
    assert list(guarded) == ["a\n"]
    assert isinstance(guarded.error, OSError)
    assert str(guarded.error) == "connection reset while reading"


def test_guarded_stream_captures_an_error_from_copy_export_input() -> None:
    def raw_lines() -> Iterator[tuple[int, bytes]]:
        yield 1, line().encode()
        raise ValueError("boom")

    stats = StageStats()
    guarded = GuardedStream(copy_export(raw_lines(), LATEST, stats))
    assert list(guarded) == []  # the first chunk was not full yet
    assert isinstance(guarded.error, ValueError)
    assert stats.accepted == 0  # nothing was saved: the COPY will be rolled back


def test_guarded_stream_lets_keyboard_interrupt_through() -> None:
    def chunks() -> Iterator[str]:
        yield "a\n"
        raise KeyboardInterrupt

    guarded = GuardedStream(chunks())
    with pytest.raises(KeyboardInterrupt):
        list(guarded)
    assert guarded.error is None
