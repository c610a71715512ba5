"""Each (identity, key)'s first and latest setting, kept by the parser and staged after the lines
(rec n), against an oracle written here over the parsed lines: what the server's fast insert
writes (per identity, second and key the last line's value), then per identity and key the
greatest (second, line) and the least second with, of its lines, the last."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from km2pg import staging
from km2pg.export import Line, parse_lines
from km2pg.staging import StageStats, copy_export
from tests.helpers import numbered
from tests.unit.test_export_properties import decode_copy

LATEST = 1_900_000_000
T0 = 1_700_000_000

Setting = tuple[int, int, str]
"""(second, line, value)"""


def oracle(lines: list[str]) -> dict[tuple[str, str], tuple[Setting, Setting]]:
    """Per (identity, key): (first, latest) of the settings the server writes from the lines."""
    written: dict[tuple[str, int, str], tuple[int, str]] = {}
    for line in parse_lines(lines, LATEST):
        if not isinstance(line, Line) or line.alias is not None:
            continue
        for key, value in line.properties:
            # One row per event (identity and second) and key: the last line's.
            written[line.person, line.t, key] = (line.lineno, value)
    settings: dict[tuple[str, str], list[Setting]] = {}
    for (person, t, key), (lineno, value) in written.items():
        settings.setdefault((person, key), []).append((t, lineno, value))
    return {
        pair: (min(found, key=lambda s: s[0]), max(found, key=lambda s: s[:2]))
        for pair, found in settings.items()
    }


def staged_ends(text: str) -> dict[tuple[str, str], tuple[Setting, Setting]]:
    """The ends rows of staged COPY text, decoded: (first, latest) per (identity, key), the
    latest setting's identity and second read from its line's row."""
    rows = decode_copy(text)
    lines = {row[1]: (str(row[2]), int(str(row[4]))) for row in rows if row[0] in ("e", "p")}
    ends: dict[tuple[str, str], tuple[Setting, Setting]] = {}
    for rec, lineno, p, first_value, first_t, key, value, first_line in rows:
        if rec != "n":
            continue
        assert p is None
        person, t = lines[lineno]
        latest = (t, int(str(lineno)), str(value))
        first = latest
        if first_line is not None:
            first = (int(str(first_t)), int(first_line), str(first_value))
            assert first != latest, "a first setting that is the latest is staged as nulls"
        else:
            assert first_t is None
            assert first_value is None
        assert (person, str(key)) not in ends, "one row per pair"
        ends[person, str(key)] = (first, latest)
    return ends


def stage(lines: list[str]) -> tuple[str, StageStats]:
    stats = StageStats()
    return "".join(copy_export(numbered(lines), LATEST, stats)), stats


def line(person: str, t: int, **properties: Any) -> str:
    return json.dumps({"_p": person, "_t": t, **properties})


def test_several_settings_of_one_key_at_one_second_and_across_seconds() -> None:
    lines = [
        line("ann", T0, _n="Visit", plan="b"),
        line("ann", T0 - 5, plan="a1"),
        line("ann", T0 - 5, plan="a2"),  # the same event: its row replaces a1's
        line("ann", T0 + 5, _n="Buy", plan="c1", city="Oslo"),
        line("ann", T0 + 5, plan="c2"),  # the last line of the last second
        line("ann", T0 - 1, plan="z"),  # a later line, an earlier second
        line("bob", T0 - 5, plan="bob"),
    ]
    expected = {
        ("ann", "plan"): ((T0 - 5, 3, "a2"), (T0 + 5, 5, "c2")),
        ("ann", "city"): ((T0 + 5, 4, "Oslo"), (T0 + 5, 4, "Oslo")),
        ("bob", "plan"): ((T0 - 5, 7, "bob"), (T0 - 5, 7, "bob")),
    }
    text, stats = stage(lines)
    assert oracle(lines) == expected
    assert staged_ends(text) == expected
    assert stats.ends is not None
    assert len(stats.ends) == 3


def test_aliases_rejects_and_lines_without_properties_have_no_ends() -> None:
    lines = [
        json.dumps({"_p": "ann", "_p2": "ann@x", "_t": T0, "plan": "alias"}),
        '{"_p": "ann", "_t": 1, "plan": "before 2000"}',
        "not json",
        line("ann", T0, _n="Visit"),
        line("ann", T0, plan=None),  # null: no property
    ]
    text, stats = stage(lines)
    assert staged_ends(text) == oracle(lines) == {}
    assert stats.ends == {}
    assert not [row for row in text.split("\n") if row.startswith("n\t")]


def test_escaped_names_and_values_stage_as_the_property_rows_do() -> None:
    lines = [
        line("a\tb", T0, **{"k\\": "v\r\n\t\\", "plain": "x"}),
        line("a\tb", T0 + 1, **{"k\\": "second\nline"}),
    ]
    text, _ = stage(lines)
    assert staged_ends(text) == oracle(lines)
    assert ("a\tb", "k\\") in staged_ends(text)
    rows = [row for row in text.split("\n") if row.startswith("n\t")]
    assert len(rows) == 2
    assert all(row.count("\t") == 7 for row in rows)


def test_the_ends_rows_come_after_every_line_row() -> None:
    lines = [line(f"p{i % 50}", T0 + i % 7, **{f"k{i % 3}": f"v{i}"}) for i in range(5_000)]
    chunks = list(copy_export(numbered(lines), LATEST, StageStats()))
    kinds = [row[0] for chunk in chunks for row in chunk.split("\n")[:-1]]
    first_end = kinds.index("n")
    assert set(kinds[first_end:]) == {"n"}
    assert kinds.count("n") == 150
    assert all(chunk.endswith("\n") for chunk in chunks)


people = st.sampled_from(["ann", "bob", "c\\d", "e\tf"])
keys = st.sampled_from(["plan", "city", "Plan ", "k\\"])
values = st.one_of(st.sampled_from(["a", "b", "x\ny", "\\N", ""]), st.text(max_size=5))


@st.composite
def export_lines(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["event", "set", "set", "alias", "reject"]))
    if kind == "reject":
        return draw(st.sampled_from(["not json", '{"_p": "ann"}', ""]))
    obj: dict[str, Any] = {"_p": draw(people), "_t": T0 + draw(st.integers(0, 3))}
    obj.update(draw(st.dictionaries(keys, st.one_of(values, st.integers(1, 9)), max_size=3)))
    if kind == "event":
        obj["_n"] = "Visit"
    elif kind == "alias":
        obj["_p2"] = draw(people)
    return json.dumps(obj, ensure_ascii=draw(st.booleans()))


@settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(lines=st.lists(export_lines(), max_size=40))
def test_staged_ends_match_the_oracle(lines: list[str]) -> None:
    text, _ = stage(lines)
    assert staged_ends(text) == oracle(lines)


def merged(lines: list[str], parts: list[tuple[int, int]]) -> StageStats:
    """The lines parsed in parts (first index, end), taken in the given order, as the parse
    workers' parent takes them."""
    stats = StageStats()
    numbered_lines = numbered(lines)
    for start, end in parts:
        part = StageStats()
        list(copy_export(iter(numbered_lines[start:end]), LATEST, part, with_ends=False))
        stats.add(part)
    return stats


def test_parts_merged_in_any_order_give_the_ends_of_the_whole() -> None:
    pick = random.Random(7)
    lines = [
        line(f"p{pick.randrange(20)}", T0 + pick.randrange(5), **{f"k{pick.randrange(4)}": str(i)})
        for i in range(3_000)
    ]
    _, whole = stage(lines)
    parts = [(start, start + 250) for start in range(0, 3_000, 250)]
    for _ in range(5):
        pick.shuffle(parts)
        assert merged(lines, parts).ends == whole.ends


def test_past_max_ends_the_parser_gives_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(staging, "MAX_ENDS", 3)
    lines = [line("ann", T0, **{f"k{i}": "v"}) for i in range(3)]
    text, stats = stage(lines)
    assert stats.ends is not None
    assert len(staged_ends(text)) == 3

    text, stats = stage([*lines, line("bob", T0, k0="v")])
    assert stats.ends is None
    assert not [row for row in text.split("\n") if row.startswith("n\t")]
    assert stats.properties == 4  # the property rows themselves are all staged


def test_parts_that_pass_max_ends_together_give_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(staging, "MAX_ENDS", 3)
    lines = [line(f"p{i}", T0, k="v") for i in range(4)]
    assert merged(lines, [(0, 2), (2, 4)]).ends is None
    assert merged(lines, [(0, 2), (0, 2)]).ends is not None


def test_past_a_quarter_of_the_settings_the_pairs_are_not_worth_their_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(staging, "ENDS_JUDGED_AFTER", 100)
    # People who come back to the same key: 10 pairs for 400 settings.
    returning = [line(f"p{i % 10}", T0 + i, **{f"k{i % 2}": str(i)}) for i in range(400)]
    _, stats = stage(returning)
    assert stats.ends is not None
    assert len(stats.ends) == 10
    # New visitors: a pair per setting.
    _, stats = stage([line(f"p{i}", T0, k="v") for i in range(400)])
    assert stats.ends is None
    # Under the judging threshold they are kept.
    _, stats = stage([line(f"p{i}", T0, k="v") for i in range(100)])
    assert stats.ends is not None
    # Parts merged are judged on the whole.
    new_visitors = [line(f"p{i}", T0, k="v") for i in range(150)]
    assert merged(new_visitors, [(0, 75), (75, 150)]).ends is None
