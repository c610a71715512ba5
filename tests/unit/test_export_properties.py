"""Property-based tests of the parser and of the COPY text staged from what it parses."""

from __future__ import annotations

import io
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from km2pg.export import (
    MAX_RAW_CHARS,
    MIN_TIMESTAMP,
    RESERVED_KEYS,
    Line,
    LineKind,
    Reject,
    parse_lines,
    parse_stream,
    parse_usual,
    repair_octal_escapes,
)
from km2pg.staging import StageStats, copy_export
from tests.helpers import numbered

LATEST = 1_900_000_000
SETTINGS = settings(
    max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)

# Text without surrogates (hypothesis' default): a lone surrogate is not a character.
texts = st.text(max_size=30)
special_texts = st.text(
    alphabet=st.one_of(
        st.sampled_from("\t\n\r\\\x00 \"'\x01\x7f{}[]:,N"), st.characters(exclude_categories=["Cs"])
    ),
    max_size=20,
)
identities = st.one_of(texts, special_texts).filter(lambda s: s.replace("\x00", "").strip())
timestamps = st.integers(min_value=MIN_TIMESTAMP, max_value=LATEST)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**25), max_value=10**25),
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
    special_texts,
)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3)
)
property_dicts = st.dictionaries(st.one_of(texts, special_texts), json_values, max_size=6)


def norm(name: str) -> str:
    return name.replace("\x00", "").strip().lower()


def expected_value(value: Any) -> str | None:
    """The value rules: strings as they are (NUL removed), null: none, the rest as JSON text."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.replace("\x00", "")
    return json.dumps(value, ensure_ascii=False)


def same_value(got: str, value: Any) -> bool:
    if isinstance(value, dict | list):
        # Nested values: compact JSON text (one line) holding the same value.
        return "\n" not in got and "\x00" not in got and json.loads(got) == value
    return got == expected_value(value)


def expected_properties(obj: dict[str, Any]) -> dict[str, Any]:
    """Normalized name -> original value; later keys win; reserved keys and nulls are left out."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if key in RESERVED_KEYS or value is None:
            continue
        out[norm(key)] = value
    return out


# ---------------------------------------------------------------------------------------------
# (a) round trip


@SETTINGS
@given(
    person=identities,
    t=timestamps,
    kind=st.sampled_from(list(LineKind)),
    name=identities.filter(norm),
    alias=identities,
    properties=property_dicts,
    ensure_ascii=st.booleans(),
    crlf=st.booleans(),
)
def test_any_valid_object_round_trips(
    person: str,
    t: int,
    kind: LineKind,
    name: str,
    alias: str,
    properties: dict[str, Any],
    ensure_ascii: bool,
    crlf: bool,
) -> None:
    obj: dict[str, Any] = {k: v for k, v in properties.items() if k not in RESERVED_KEYS}
    obj["_p"] = person
    obj["_t"] = t
    if kind is LineKind.EVENT:
        obj["_n"] = name
    elif kind is LineKind.ALIAS:
        obj["_p2"] = alias
    text = json.dumps(obj, ensure_ascii=ensure_ascii) + ("\r\n" if crlf else "\n")

    items = list(parse_stream(io.BytesIO(text.encode()), LATEST))
    assert len(items) == 1
    line = items[0]
    assert isinstance(line, Line), line
    assert line.lineno == 1
    assert line.kind is kind
    assert line.person == person.replace("\x00", "")
    assert line.t == t
    if kind is LineKind.ALIAS:
        assert line.alias == alias.replace("\x00", "")
        assert line.name is None
        return
    assert line.alias is None
    assert line.name == (norm(name) if kind is LineKind.EVENT else None)
    expected = expected_properties(obj)
    got = dict(line.properties)
    assert len(got) == len(line.properties), "a name appears once"
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert same_value(got[key], value), (key, got[key], value)
    if "\\" in text:
        assert not line.plain


# ---------------------------------------------------------------------------------------------
# (b) never raises


def check_items(items: list[Line | Reject], physical_lines: int) -> None:
    numbers = [item.lineno for item in items]
    assert numbers == sorted(set(numbers))
    for item in items:
        assert 1 <= item.lineno <= max(physical_lines, 1)
        if isinstance(item, Reject):
            assert item.reason
            assert "\n" not in item.reason
            assert "\r" not in item.reason
            assert len(item.raw) <= MAX_RAW_CHARS
            assert "\x00" not in item.raw
        else:
            assert item.person.strip()
            assert MIN_TIMESTAMP <= item.t <= LATEST


@SETTINGS
@given(data=st.binary(max_size=300))
def test_parse_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    items = list(parse_stream(io.BytesIO(data), LATEST))
    check_items(items, data.count(b"\n") + 1)


@SETTINGS
@given(lines=st.lists(st.one_of(st.text(max_size=60), st.binary(max_size=60)), max_size=5))
def test_parse_never_raises_on_arbitrary_lines(lines: list[str | bytes]) -> None:
    items = list(parse_lines(lines, LATEST))
    check_items(items, len(lines))


fragments = st.sampled_from(
    [
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        '"_p"',
        '"_t"',
        '"_n"',
        '"_p2"',
        '"x"',
        '"a\\303\\241"',
        '"\\\\303"',
        '"\\u0000"',
        "1400000000",
        "1.4e9",
        '"1400000000"',
        "true",
        "null",
        "-0",
        "1e400",
        "\\",
        "\\377",
        " ",
        "\t",
    ]
)


@SETTINGS
@given(parts=st.lists(fragments, max_size=25))
def test_parse_never_raises_on_json_like_noise(parts: list[str]) -> None:
    line = "".join(parts)
    check_items(list(parse_lines([line], LATEST)), 1)
    wrapped = '{"_p":"a","_t":1400000000,"v":' + line + "}"
    check_items(list(parse_lines([wrapped], LATEST)), 1)


# ---------------------------------------------------------------------------------------------
# (c) octal escapes


def octal_escaped(text: str, escape_ascii: bool) -> str:
    """``text`` as the inside of a JSON string, its non-ASCII bytes written as C octal escapes."""
    out = []
    for char in text:
        if char.isascii() and not escape_ascii:
            out.append(json.dumps(char)[1:-1])
        else:
            out.append("".join(f"\\{byte:03o}" for byte in char.encode()))
    return "".join(out)


@SETTINGS
@given(text=st.text(max_size=40), escape_ascii=st.booleans())
def test_octal_escaped_utf8_parses_back_to_the_original(text: str, escape_ascii: bool) -> None:
    inside = octal_escaped(text, escape_ascii)
    assert json.loads(repair_octal_escapes(f'"{inside}"')) == text
    line = '{"_p":"a","_t":1400000000,"v":"' + inside + '"}'
    items = list(parse_lines([line], LATEST))
    assert len(items) == 1
    parsed = items[0]
    assert isinstance(parsed, Line), parsed
    assert dict(parsed.properties) == {"v": text.replace("\x00", "")}


@SETTINGS
@given(text=st.text(alphabet=st.sampled_from("\\0123a7\"'"), max_size=20))
def test_text_with_backslash_digits_survives_json_encoding(text: str) -> None:
    inside = json.dumps(text)[1:-1]
    assert json.loads(repair_octal_escapes(f'"{inside}"')) == text


# ---------------------------------------------------------------------------------------------
# (d) COPY text round trip


_UNESCAPE = {"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}


def decode_copy(text: str) -> list[list[str | None]]:
    """PostgreSQL COPY text format, the subset the stager writes: rows end with an unescaped
    newline, fields are split on unescaped tabs, ``\\N`` alone is NULL."""
    rows: list[list[str | None]] = []
    row: list[str | None] = []
    field: list[str] = []
    null = False
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            code = text[i + 1]
            if code == "N":
                assert not field, "\\N must be a whole field"
                null = True
            else:
                assert code in _UNESCAPE, f"unexpected escape \\{code}"
                assert not null
                field.append(_UNESCAPE[code])
            i += 2
            continue
        if char in "\t\n":
            row.append(None if null else "".join(field))
            field, null = [], False
            if char == "\n":
                rows.append(row)
                row = []
        else:
            assert char != "\r", "a raw CR would end the row for PostgreSQL"
            assert not null
            field.append(char)
        i += 1
    assert not row, "the COPY text must end with a newline"
    assert not field, "the COPY text must end with a newline"
    return rows


def test_decode_copy_reads_escapes() -> None:
    assert decode_copy("a\\tb\t\\N\t\\\\N\\r\\n\n\t\n") == [["a\tb", None, "\\N\r\n"], ["", ""]]


@SETTINGS
@given(
    person=identities,
    name=identities.filter(norm),
    kind=st.sampled_from(list(LineKind)),
    alias=identities,
    values=st.dictionaries(st.one_of(texts, special_texts), special_texts, max_size=5),
    reject_text=special_texts,
)
def test_copy_export_decode_back_to_the_parsed_values(
    person: str,
    name: str,
    kind: LineKind,
    alias: str,
    values: dict[str, str],
    reject_text: str,
) -> None:
    obj: dict[str, Any] = {k: v for k, v in values.items() if k not in RESERVED_KEYS}
    obj.update({"_p": person, "_t": 1_400_000_000})
    if kind is LineKind.EVENT:
        obj["_n"] = name
    elif kind is LineKind.ALIAS:
        obj["_p2"] = alias
    lines = [json.dumps(obj, ensure_ascii=False), "", "{" + reject_text]
    parsed = list(parse_lines(lines, LATEST))
    assert len(parsed) == 2
    line, reject = parsed
    assert isinstance(line, Line)
    assert isinstance(reject, Reject)

    stats = StageStats()
    text = "".join(copy_export(numbered(lines), LATEST, stats))
    rows = decode_copy(text)
    assert all(len(row) == 8 for row in rows)
    # The ends rows (n) come last: here one per property, its first and latest setting alike.
    ends_rows = [row for row in rows if row[0] == "n"]
    rows = rows[: len(rows) - len(ends_rows)]
    assert ends_rows == [
        ["n", "1", None, None, None, key, value, None]
        for key, value in (line.properties if kind is not LineKind.ALIAS else [])
    ]

    head, *prop_rows, reject_row = rows
    t = "1400000000"
    if kind is LineKind.ALIAS:
        assert head == ["a", "1", line.person, line.alias, t, None, None, None]
    elif kind is LineKind.EVENT:
        assert head == ["e", "1", line.person, None, t, line.name, None, None]
    else:
        assert head == ["p", "1", line.person, None, t, None, None, None]
    # A property row names its line; the line's row holds the identity, time and action.
    assert prop_rows == [
        ["k", "1", None, None, None, key, value, None] for key, value in line.properties
    ]
    assert reject_row == ["r", "3", None, None, None, reject.reason, reject.raw, None]

    # And the parsed values are the original ones, by the value rules.
    assert line.person == person.replace("\x00", "")
    if kind is not LineKind.ALIAS:
        expected = {
            norm(k): v.replace("\x00", "") for k, v in obj.items() if k not in RESERVED_KEYS
        }
        assert dict(line.properties) == expected
    assert stats.accepted == 1
    assert stats.rejects == 1
    assert stats.lines == 3


# ---------------------------------------------------------------------------------------------
# The fast path for usual lines


usual_values = st.one_of(st.none(), st.booleans(), st.integers(), texts, special_texts)
anything = st.one_of(json_values, st.just({}), st.just(""), st.just(" "))


@SETTINGS
@given(
    person=st.one_of(identities, anything),
    t=st.one_of(timestamps, st.integers(), anything),
    name=st.one_of(identities, anything),
    kind=st.sampled_from(["event", "properties", "alias", "null name"]),
    properties=st.one_of(
        st.dictionaries(st.one_of(texts, special_texts), usual_values, max_size=6), property_dicts
    ),
    ensure_ascii=st.booleans(),
)
def test_parse_usual_gives_parse_lines_answer_for_every_line_it_takes(
    person: Any,
    t: Any,
    name: Any,
    kind: str,
    properties: dict[str, Any],
    ensure_ascii: bool,
) -> None:
    obj: dict[str, Any] = {**properties, "_p": person, "_t": t}
    if kind == "event":
        obj["_n"] = name
    elif kind == "alias":
        obj["_p2"] = person
    elif kind == "null name":
        obj["_n"] = None
    raw = json.dumps(obj, ensure_ascii=ensure_ascii).encode()

    usual = parse_usual(raw, LATEST)
    if usual is None:
        return
    (line,) = parse_lines([raw], LATEST)
    assert isinstance(line, Line)
    assert line.plain
    assert usual == (line.person, line.t, line.name, dict(line.properties))
    assert line.kind is (LineKind.EVENT if line.name is not None else LineKind.PROPERTIES)
