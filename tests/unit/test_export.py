"""The export line parser: every rule of the parsing contract, and the edge cases around them.

Pure: no database. ``LATEST`` stands for "load time plus one day", which callers pass in.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from km2pg import export
from km2pg.export import (
    FUTURE_SLACK_SECONDS,
    MAX_LINE_BYTES,
    MAX_RAW_CHARS,
    MIN_TIMESTAMP,
    JsonNumber,
    Line,
    LineError,
    LineKind,
    Reject,
    iter_raw_lines,
    parse_line,
    parse_lines,
    parse_object,
    parse_stream,
    parse_timestamp,
    repair_octal_escapes,
    value_text,
)

T = 1_400_000_000  # 2014-05-13
LATEST = 1_900_000_000
BOM = b"\xef\xbb\xbf"


def js(template: str, **values: object) -> str:
    """A line from a template: ``$T`` is the test timestamp, ``$NAME`` the keyword value NAME."""
    text = template.replace("$T", str(T))
    for name, value in values.items():
        text = text.replace(f"${name}", str(value))
    return text


def bjs(template: bytes) -> bytes:
    """A line as bytes from a template: ``$T`` is the test timestamp."""
    return template.replace(b"$T", str(T).encode())


def obj_line(**fields: Any) -> str:
    return json.dumps({"_p": "john", "_t": T, **fields}, ensure_ascii=False)


def parse_all(lines: list[str | bytes]) -> list[Line | Reject]:
    return list(parse_lines(lines, LATEST))


def one(line: str | bytes) -> Line | Reject:
    items = parse_all([line])
    assert len(items) == 1, items
    return items[0]


def accepted(line: str | bytes) -> Line:
    item = one(line)
    assert isinstance(item, Line), item
    return item


def rejected(line: str | bytes) -> Reject:
    item = one(line)
    assert isinstance(item, Reject), item
    return item


def props(line: str | bytes) -> dict[str, str]:
    return dict(accepted(line).properties)


def stream(data: bytes) -> list[Line | Reject]:
    return list(parse_stream(io.BytesIO(data), LATEST))


def summary(items: list[Line | Reject]) -> list[tuple[int, str]]:
    """(line number, person or reject reason) per item: easy to compare.

    The JSON parser's own wording after "not valid JSON" is left out: it is not ours to pin.
    """
    return [(i.lineno, i.person if isinstance(i, Line) else _reason(i)) for i in items]


def _reason(reject: Reject) -> str:
    if reject.reason.startswith("not valid JSON: "):
        return "reject: not valid JSON"
    return f"reject: {reject.reason}"


def padded_line(size: int, person: str = "big") -> bytes:
    """A valid JSON line of exactly ``size`` bytes."""
    head = b'{"_p":"%s","_t":%d,"pad":"' % (person.encode(), T)
    tail = b'"}'
    body = size - len(head) - len(tail)
    assert body >= 0
    line = head + b"y" * body + tail
    assert len(line) == size
    return line


# ---------------------------------------------------------------------------------------------
# One JSON object per line; blank lines, CRLF, final newline, BOM


def test_the_documented_example_lines_parse_into_their_three_kinds() -> None:
    items = parse_all(
        [
            '{"_p":"john", "_t":1234567890, "_n":"Visited Site"}',
            '{"_p":"john", "_t":1234567890, "url":"http://mysite.com"}',
            '{"_p":"john", "_t":1234567890, "_p2":"john@kissmetrics.com"}',
            '{"homepage variation":"Variation B","_n":"visited homepage",'
            '"_p":"customer27@heartr.com","_t":1314316800}',
            '{"_n":"billed","_p":"customer11@kissmetrics.com","billed amount":"9","_t":1314054000}',
        ]
    )
    assert all(isinstance(i, Line) for i in items)
    lines = [i for i in items if isinstance(i, Line)]
    assert [i.kind for i in lines] == [
        LineKind.EVENT,
        LineKind.PROPERTIES,
        LineKind.ALIAS,
        LineKind.EVENT,
        LineKind.EVENT,
    ]
    assert lines[0].name == "visited site"
    assert lines[0].t == 1234567890
    assert lines[1].properties == (("url", "http://mysite.com"),)
    assert lines[2].alias == "john@kissmetrics.com"
    assert lines[3].properties == (("homepage variation", "Variation B"),)
    assert lines[4].person == "customer11@kissmetrics.com"
    assert lines[4].properties == (("billed amount", "9"),)


def test_blank_lines_are_skipped_but_still_counted() -> None:
    items = parse_all([obj_line(), "", "   ", "\t", obj_line(_p="b"), "\r\n"])
    assert summary(items) == [(1, "john"), (5, "b")]


def test_stream_blank_lines_are_skipped_and_numbering_counts_them() -> None:
    data = b"\n" + obj_line().encode() + b"\n\n \n" + obj_line(_p="b").encode() + b"\n\n"
    assert summary(stream(data)) == [(2, "john"), (5, "b")]


def test_stream_handles_crlf_line_ends() -> None:
    data = (obj_line() + "\r\n" + obj_line(_p="b") + "\r\n").encode()
    items = stream(data)
    assert summary(items) == [(1, "john"), (2, "b")]


def test_stream_handles_a_missing_final_newline() -> None:
    data = (obj_line() + "\n" + obj_line(_p="b")).encode()
    assert summary(stream(data)) == [(1, "john"), (2, "b")]


def test_stream_handles_a_missing_final_newline_after_crlf_lines() -> None:
    data = (obj_line() + "\r\n" + obj_line(_p="b") + "\r").encode()
    assert summary(stream(data)) == [(1, "john"), (2, "b")]


def test_stream_strips_a_utf8_bom_at_the_start() -> None:
    data = BOM + (obj_line() + "\n" + obj_line(_p="b") + "\n").encode()
    assert summary(stream(data)) == [(1, "john"), (2, "b")]


def test_parse_lines_strips_a_bom_on_the_first_line_str_or_bytes() -> None:
    assert accepted("\ufeff" + obj_line()).person == "john"
    assert accepted(BOM + obj_line().encode()).person == "john"


def test_a_bom_after_the_first_line_is_not_silently_accepted() -> None:
    items = parse_all([obj_line(), "\ufeff" + obj_line(_p="b")])
    assert isinstance(items[0], Line)
    assert isinstance(items[1], Reject)
    assert items[1].lineno == 2


def test_parse_lines_strips_crlf_from_each_line() -> None:
    items = parse_all([obj_line() + "\r\n", obj_line(_p="b") + "\n"])
    assert summary(items) == [(1, "john"), (2, "b")]


def test_an_empty_stream_yields_nothing() -> None:
    assert stream(b"") == []
    assert stream(BOM) == []
    assert stream(b"\n\n\r\n") == []


def test_iter_raw_lines_yields_every_physical_line_numbered_from_one() -> None:
    data = BOM + b"a\r\nb\n\nc"
    assert list(iter_raw_lines(io.BytesIO(data))) == [(1, b"a"), (2, b"b"), (3, b""), (4, b"c")]


def test_iter_raw_lines_keeps_a_lone_cr_inside_a_line() -> None:
    assert list(iter_raw_lines(io.BytesIO(b"a\rb\n"))) == [(1, b"a\rb")]


def test_a_lone_cr_between_json_tokens_is_whitespace() -> None:
    line = accepted(bjs(b'{"_p":"a",\r"_t":$T}'))
    assert line.person == "a"


# ---------------------------------------------------------------------------------------------
# Octal escapes and invalid UTF-8


def test_octal_escapes_of_utf8_bytes_are_repaired() -> None:
    line = accepted(js('{"_p":"a","_t":$T,"city":"Paran\\303\\241"}'))
    assert line.properties == (("city", "Paraná"),)


def test_octal_escapes_are_repaired_in_identities_names_and_keys() -> None:
    line = accepted(js('{"_p":"Jo\\303\\243o","_t":$T,"_n":"\\303\\201gua","N\\303\\272m":"1"}'))
    assert line.person == "João"
    assert line.name == "água"  # lowercased after repair
    assert line.properties == (("núm", "1"),)


def test_repair_octal_escapes_turns_a_run_into_its_characters() -> None:
    assert repair_octal_escapes('"Paran\\303\\241"') == '"Paraná"'
    assert json.loads(repair_octal_escapes('"\\342\\202\\254 5"')) == "€ 5"


def test_repair_octal_escapes_leaves_text_without_backslash_untouched() -> None:
    text = '{"a":"b"}'
    assert repair_octal_escapes(text) is text


def test_an_escaped_backslash_before_digits_is_not_an_octal_escape() -> None:
    assert repair_octal_escapes('"C:\\\\303"') == '"C:\\\\303"'
    assert props(js('{"_p":"a","_t":$T,"path":"C:\\\\303"}')) == {"path": "C:\\303"}


def test_an_odd_run_of_backslashes_before_digits_holds_an_octal_escape() -> None:
    # \\ (an escaped backslash) then \303\241 (an octal escape).
    assert json.loads(repair_octal_escapes('"\\\\\\303\\241"')) == "\\á"
    assert props(js('{"_p":"a","_t":$T,"v":"\\\\\\303\\241"}')) == {"v": "\\á"}


def test_an_even_run_of_backslashes_before_digits_is_left_alone() -> None:
    text = '"\\\\\\\\303"'  # two escaped backslashes, then 303
    assert repair_octal_escapes(text) == text
    assert json.loads(text) == "\\\\303"


def test_octal_escape_of_a_quote_is_reescaped_for_json() -> None:
    repaired = repair_octal_escapes('"say \\042hi\\042"')
    assert json.loads(repaired) == 'say "hi"'
    assert props(js('{"_p":"a","_t":$T,"v":"say \\042hi\\042"}')) == {"v": 'say "hi"'}


def test_octal_escape_of_a_backslash_is_reescaped_for_json() -> None:
    assert props(js('{"_p":"a","_t":$T,"v":"a\\134b"}')) == {"v": "a\\b"}


def test_octal_escape_of_a_control_character_is_reescaped_for_json() -> None:
    repaired = repair_octal_escapes('"a\\001b\\011c\\012d"')
    assert json.loads(repaired) == "a\x01b\tc\nd"
    assert props(js('{"_p":"a","_t":$T,"v":"a\\001b\\012c"}')) == {"v": "a\x01b\nc"}


def test_octal_escape_of_nul_is_removed_like_any_nul() -> None:
    assert props(js('{"_p":"a","_t":$T,"v":"a\\000b"}')) == {"v": "ab"}


def test_octal_escapes_of_invalid_utf8_become_replacement_characters() -> None:
    assert props(js('{"_p":"a","_t":$T,"v":"x\\377y"}')) == {"v": "x\ufffdy"}
    assert props(js('{"_p":"a","_t":$T,"v":"x\\303"}')) == {"v": "x\ufffd"}


def test_backslash_digits_outside_the_octal_byte_range_are_not_repaired() -> None:
    assert repair_octal_escapes('"\\400"') == '"\\400"'
    assert repair_octal_escapes('"\\38"') == '"\\38"'
    reject = rejected(js('{"_p":"a","_t":$T,"v":"\\400"}'))
    assert reject.reason.startswith("not valid JSON")


def test_octal_escapes_next_to_json_escapes_both_decode() -> None:
    line = js('{"_p":"a","_t":$T,"v":"\\u00e9\\303\\241\\n\\"\\t"}')
    assert props(line) == {"v": 'éá\n"\t'}


def test_invalid_utf8_bytes_become_replacement_characters() -> None:
    line = bjs(b'{"_p":"a\xff","_t":$T,"v":"b\xc3(","_n":"x\xfey"}')
    parsed = accepted(line)
    assert parsed.person == "a\ufffd"
    assert parsed.name == "x\ufffdy"
    assert parsed.properties == (("v", "b\ufffd("),)


def test_invalid_utf8_and_octal_escapes_in_one_line_both_load() -> None:
    line = bjs(b'{"_p":"a","_t":$T,"v":"\xff Paran\\303\\241"}')
    assert props(line) == {"v": "\ufffd Paraná"}


def test_invalid_utf8_in_a_broken_line_still_gives_a_reject() -> None:
    reject = rejected(b'{"_p":"a\xff\xfe')
    assert reject.reason.startswith("not valid JSON")
    assert reject.raw == '{"_p":"a\ufffd\ufffd'


def test_a_lone_surrogate_escape_in_a_string_rejects_the_line() -> None:
    """Text that is not UTF-8 could not be stored: the line is refused, never half-loaded."""
    for line in ('{"_p":"a\\ud800","_t":$T}', '{"_p":"a","_t":$T,"v":"x\\udc00"}'):
        reject = rejected(js(line))
        assert reject.reason.startswith("not valid JSON: ")
        assert "surrogate" in reject.reason
        assert reject.raw == js(line)


def test_a_lone_surrogate_escape_inside_a_nested_value_rejects_the_line() -> None:
    reject = rejected(js('{"_p":"a","_t":$T,"v":["\\udc00"]}'))
    assert reject.reason.startswith("not valid JSON: ")
    assert "surrogate" in reject.reason


def test_a_paired_surrogate_escape_is_one_character() -> None:
    assert props(js('{"_p":"a","_t":$T,"v":"\\ud83d\\ude00"}')) == {"v": "\U0001f600"}


# ---------------------------------------------------------------------------------------------
# Classification


def test_p2_makes_an_alias_even_with_n() -> None:
    line = accepted(obj_line(_p2="john@x.com", _n="Signed Up"))
    assert line.kind is LineKind.ALIAS
    assert line.alias == "john@x.com"
    assert line.name is None


def test_n_without_p2_makes_an_event() -> None:
    line = accepted(obj_line(_n="Signed Up", plan="Pro"))
    assert line.kind is LineKind.EVENT
    assert line.name == "signed up"
    assert line.properties == (("plan", "Pro"),)


def test_neither_p2_nor_n_makes_a_property_set() -> None:
    line = accepted(obj_line(plan="Pro"))
    assert line.kind is LineKind.PROPERTIES
    assert line.name is None
    assert line.alias is None


def test_a_line_with_only_p_and_t_is_an_empty_property_set() -> None:
    line = accepted(obj_line())
    assert line.kind is LineKind.PROPERTIES
    assert line.properties == ()


def test_an_empty_p2_is_rejected() -> None:
    assert rejected(obj_line(_p2="")).reason == "empty _p2"
    assert rejected(obj_line(_p2="  ")).reason == "empty _p2"


def test_an_alias_identity_keeps_its_text_and_loses_nul() -> None:
    line = accepted(obj_line(_p2=" Bob\u0000@x.com "))
    assert line.alias == " Bob@x.com "


# ---------------------------------------------------------------------------------------------
# _t


def test_t_as_integer_seconds() -> None:
    assert accepted(obj_line(_t=T)).t == T


def test_t_as_a_numeric_string() -> None:
    assert accepted(obj_line(_t=str(T))).t == T
    assert accepted(obj_line(_t=f" {T} ")).t == T
    assert accepted(obj_line(_t=f"{T}.75")).t == T


def test_t_as_a_float_is_floored() -> None:
    assert accepted(obj_line(_t=T + 0.999)).t == T
    assert accepted(obj_line(_t=float(T))).t == T


def test_t_as_a_float_is_floored_also_when_the_line_is_read_exactly() -> None:
    line = accepted(obj_line(_t=T + 0.5, price=49.90))
    assert line.t == T
    assert line.properties == (("price", "49.9"),)


def test_t_as_a_float_in_exponent_form_is_read() -> None:
    assert accepted('{"_p":"a","_t":1.4e9}').t == 1_400_000_000


@pytest.mark.parametrize("value", [MIN_TIMESTAMP, MIN_TIMESTAMP + 1, LATEST - 1, LATEST])
def test_t_at_the_bounds_is_accepted(value: int) -> None:
    assert accepted(obj_line(_t=value)).t == value


def test_t_before_2000_is_rejected() -> None:
    reject = rejected(obj_line(_t=MIN_TIMESTAMP - 1))
    assert reject.reason == f"_t {MIN_TIMESTAMP - 1} is before 2000-01-01"


def test_t_past_latest_is_rejected() -> None:
    reject = rejected(obj_line(_t=LATEST + 1))
    assert reject.reason == f"_t {LATEST + 1} is in the future"


def test_t_in_milliseconds_is_rejected_with_a_hint() -> None:
    reject = rejected(obj_line(_t=T * 1000))
    assert "future" in reject.reason
    assert "milliseconds" in reject.reason


def test_the_future_slack_is_one_day() -> None:
    assert FUTURE_SLACK_SECONDS == 86_400
    assert MIN_TIMESTAMP == 946_684_800  # 2000-01-01T00:00:00Z


def test_a_missing_t_is_rejected() -> None:
    assert rejected('{"_p":"a"}').reason == "missing _t"


def test_a_null_t_is_rejected() -> None:
    assert rejected('{"_p":"a","_t":null}').lineno == 1


@pytest.mark.parametrize("value", ["true", "false"])
def test_t_as_a_boolean_is_rejected(value: str) -> None:
    assert rejected(js('{"_p":"a","_t":$V}', V=value)).reason == "_t is not a number"


@pytest.mark.parametrize(
    "value", ['"abc"', '""', '"nan"', '"NaN"', '"inf"', '"-inf"', '"Infinity"', "[1]", "{}"]
)
def test_t_that_is_not_a_number_is_rejected(value: str) -> None:
    reject = rejected(js('{"_p":"a","_t":$V}', V=value))
    assert reject.reason.startswith("_t is not a number")


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_t_as_a_non_json_constant_is_rejected(value: str) -> None:
    assert isinstance(one(js('{"_p":"a","_t":$V}', V=value)), Reject)


@pytest.mark.parametrize("value", ['"-5"', "-5", "-1400000000", '"1e3"', "1e3", "0", '"0"'])
def test_t_negative_or_too_small_is_rejected_as_before_2000(value: str) -> None:
    reject = rejected(js('{"_p":"a","_t":$V}', V=value))
    assert "before 2000-01-01" in reject.reason


def test_t_as_a_huge_integer_is_rejected_not_crashing() -> None:
    reject = rejected('{"_p":"a","_t":123456789012345678901234567890}')
    assert "future" in reject.reason


def test_parse_timestamp_direct() -> None:
    assert parse_timestamp(T, LATEST) == T
    assert parse_timestamp(T + 0.9, LATEST) == T
    assert parse_timestamp(str(T), LATEST) == T
    assert parse_timestamp(JsonNumber(str(T)), LATEST) == T
    for bad in (True, False, None, float("nan"), float("inf"), float("-inf"), "abc", [T], {}):
        with pytest.raises(LineError):
            parse_timestamp(bad, LATEST)
    with pytest.raises(LineError, match="before 2000"):
        parse_timestamp(-1.5, LATEST)
    with pytest.raises(LineError, match="future"):
        parse_timestamp(LATEST + 1, LATEST)


def test_parse_timestamp_reason_for_a_long_string_is_one_short_line() -> None:
    with pytest.raises(LineError) as info:
        parse_timestamp("x\n" * 1000, LATEST)
    assert "\n" not in str(info.value)
    assert len(str(info.value)) < 100


# ---------------------------------------------------------------------------------------------
# _p


def test_a_missing_p_is_rejected() -> None:
    assert rejected(js('{"_t":$T}')).reason == "missing _p"


@pytest.mark.parametrize("value", ['""', '" "', '"\\t"', '"\\u0000"', '" \\u0000 "'])
def test_an_empty_p_is_rejected(value: str) -> None:
    assert rejected(js('{"_p":$V,"_t":$T}', V=value)).reason == "empty _p"


def test_a_null_p_is_rejected() -> None:
    assert rejected(js('{"_p":null,"_t":$T}')).reason == "_p is null"


@pytest.mark.parametrize("value", ["true", "[1]", '{"a":1}'])
def test_a_p_that_is_not_a_string_is_rejected(value: str) -> None:
    assert rejected(js('{"_p":$V,"_t":$T}', V=value)).reason == "_p is not a string"


def test_a_p_keeps_case_and_spaces() -> None:
    assert accepted(obj_line(_p=" John@X.com ")).person == " John@X.com "


# ---------------------------------------------------------------------------------------------
# Rejects: line number, one-line reason, the rest of the file goes on


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[1,2]", "not a JSON object (array)"),
        ('"john"', "not a JSON object (string)"),
        ("42", "not a JSON object (number)"),
        ("4.5", "not a JSON object (number)"),
        ("true", "not a JSON object (boolean)"),
        ("null", "not a JSON object (null)"),
    ],
)
def test_json_that_is_not_an_object_is_rejected(text: str, reason: str) -> None:
    assert rejected(text).reason == reason


@pytest.mark.parametrize(
    "text", ["{", "{'_p':'a'}", '{"_p":"a","_t":1} x', "garbage", '{"_p":"a",}', "\x00"]
)
def test_invalid_json_is_rejected(text: str) -> None:
    reject = rejected(text)
    assert reject.reason.startswith("not valid JSON: ")


def test_a_raw_control_character_inside_a_string_is_rejected() -> None:
    assert rejected(js('{"_p":"a","_t":$T,"v":"x\ty"}')).reason.startswith("not valid JSON")


def test_rejects_carry_their_line_number_and_raw_text_and_the_rest_loads() -> None:
    lines = [
        obj_line(_p="a"),
        "not json",
        "",
        js('{"_t":$T}'),
        obj_line(_p="b"),
        '{"_p":"c","_t":"abc"}',
        "[1]",
        obj_line(_p="d"),
    ]
    data = "\n".join(lines).encode()
    for items in (parse_all(list(lines)), stream(data)):
        assert summary(items) == [
            (1, "a"),
            (2, "reject: not valid JSON"),
            (4, "reject: missing _p"),
            (5, "b"),
            (6, "reject: _t is not a number: 'abc'"),
            (7, "reject: not a JSON object (array)"),
            (8, "d"),
        ]
        raws = {i.lineno: i.raw for i in items if isinstance(i, Reject)}
        assert raws == {2: "not json", 4: js('{"_t":$T}'), 6: lines[5], 7: "[1]"}


@pytest.mark.parametrize(
    "text",
    [
        "{\n",
        '{"_p":"a",\n"_t":}',
        "[1,\n2]",
        '{"_p":"a","_t":"x\\ny"}',
        '{"_p":"a","_t":"' + "\\n" * 50 + '"}',
        '{"_p":"a","_t":' + str(10**30) + "}",
        '{"_p":null}',
        js('{"_p":"a","_t":$T,"_n":1}'),
        js('{"_p":"a","_t":$T,"_p2":[]}'),
        "{" * 5000,
        js('{"_p":"a","_t":$T,"v":$V}', V="[" * 2000 + "]" * 2000),
    ],
)
def test_a_reject_reason_is_one_line(text: str) -> None:
    for item in parse_all([text]):
        assert isinstance(item, Reject)
        assert "\n" not in item.reason
        assert "\r" not in item.reason
        assert item.reason


def test_a_reject_raw_has_no_nul() -> None:
    reject = rejected(b'{"_p":"a\x00b')
    assert reject.raw == '{"_p":"ab'


# ---------------------------------------------------------------------------------------------
# Line length


def test_a_line_exactly_at_the_limit_is_parsed() -> None:
    line = padded_line(MAX_LINE_BYTES)
    assert accepted(line).person == "big"
    items = stream(line + b"\n" + obj_line(_p="next").encode() + b"\n")
    assert summary(items) == [(1, "big"), (2, "next")]


def test_a_line_exactly_at_the_limit_with_crlf_is_parsed() -> None:
    items = stream(padded_line(MAX_LINE_BYTES) + b"\r\n" + obj_line(_p="next").encode() + b"\r\n")
    assert summary(items) == [(1, "big"), (2, "next")]


def test_a_line_one_byte_over_the_limit_is_rejected() -> None:
    reject = rejected(padded_line(MAX_LINE_BYTES + 1))
    assert reject.reason == "line longer than 1 MiB"
    assert len(reject.raw) == MAX_RAW_CHARS


@pytest.mark.parametrize("extra", [1, 2, 3, 4, 1000, MAX_LINE_BYTES + 17])
@pytest.mark.parametrize("eol", [b"\n", b"\r\n"])
def test_an_over_long_line_mid_stream_is_rejected_and_following_lines_keep_their_numbers(
    extra: int, eol: bytes
) -> None:
    data = (
        obj_line(_p="first").encode()
        + eol
        + padded_line(MAX_LINE_BYTES + extra)
        + eol
        + eol
        + obj_line(_p="after").encode()
        + eol
        + b"oops"
        + eol
        + obj_line(_p="last").encode()
    )
    items = stream(data)
    assert summary(items) == [
        (1, "first"),
        (2, "reject: line longer than 1 MiB"),
        (4, "after"),
        (5, "reject: not valid JSON"),
        (6, "last"),
    ]
    reject = items[1]
    assert isinstance(reject, Reject)
    assert len(reject.raw) <= MAX_RAW_CHARS
    assert reject.raw.startswith('{"_p":"big"')


def test_an_over_long_line_at_the_end_without_newline_is_rejected() -> None:
    items = stream(obj_line().encode() + b"\n" + padded_line(MAX_LINE_BYTES + 100))
    assert summary(items) == [(1, "john"), (2, "reject: line longer than 1 MiB")]


def test_an_over_long_multibyte_line_keeps_at_most_64_kib_of_text() -> None:
    line = b'{"_p":"a","_t":1,"v":"' + "é".encode() * MAX_LINE_BYTES + b'"}'
    reject = rejected(line)
    assert reject.reason == "line longer than 1 MiB"
    assert len(reject.raw) == MAX_RAW_CHARS


class EndlessLine:
    """A stream whose first line never ends (it would be gigabytes), then one short line."""

    def __init__(self, total: int) -> None:
        self.left = total
        self.largest_read = 0
        self.tail = b"\n" + obj_line(_p="after").encode() + b"\n"

    def readline(self, size: int = -1) -> bytes:
        assert size > 0, "an unbounded readline would hold the whole line in memory"
        self.largest_read = max(self.largest_read, size)
        if self.left > 0:
            n = min(size, self.left)
            self.left -= n
            return b"x" * n
        chunk, self.tail = self.tail[:size], self.tail[size:]
        if b"\n" in chunk:
            cut = chunk.index(b"\n") + 1
            self.tail = chunk[cut:] + self.tail
            chunk = chunk[:cut]
        return chunk


def test_a_line_that_never_ends_is_read_with_bounded_memory() -> None:
    source = EndlessLine(total=64 * MAX_LINE_BYTES)
    raw = list(iter_raw_lines(source))  # type: ignore[arg-type]
    assert [n for n, _ in raw] == [1, 2]
    assert len(raw[0][1]) == MAX_LINE_BYTES + 1
    assert source.largest_read <= 2 * MAX_LINE_BYTES
    items = list(parse_stream(EndlessLine(total=8 * MAX_LINE_BYTES), LATEST))  # type: ignore[arg-type]
    assert summary(items) == [(1, "reject: line longer than 1 MiB"), (2, "after")]
    assert isinstance(items[0], Reject)
    assert len(items[0].raw) == MAX_RAW_CHARS


def test_iter_raw_lines_with_a_small_limit_yields_the_head_of_a_long_line() -> None:
    data = b"0123456789abcdef\nok\n"
    assert list(iter_raw_lines(io.BytesIO(data), max_bytes=4)) == [(1, b"01234"), (2, b"ok")]


def test_an_over_long_first_line_after_a_bom_keeps_the_following_line_numbers() -> None:
    data = BOM + padded_line(MAX_LINE_BYTES + 1000) + b"\n" + obj_line(_p="after").encode()
    assert summary(stream(data)) == [(1, "reject: line longer than 1 MiB"), (2, "after")]


def test_a_first_line_exactly_at_the_limit_after_a_bom_keeps_the_following_line_numbers() -> None:
    data = BOM + padded_line(MAX_LINE_BYTES) + b"\n" + obj_line(_p="after").encode()
    assert summary(stream(data)) == [(1, "big"), (2, "after")]


# ---------------------------------------------------------------------------------------------
# Values


def test_string_values_are_kept_as_they_are() -> None:
    values = {"a": " Mixed Case ", "b": "", "c": "9", "d": "line\nbreak\ttab\\back", "e": "é€😀"}
    assert props(obj_line(**values)) == values


def test_numbers_and_booleans_become_their_json_text() -> None:
    line = js('{"_p":"a","_t":$T,"i":12,"f":12.5,"t":true,"n":false,"neg":-3,"big":$B}', B=10**30)
    assert props(line) == {
        "i": "12",
        "f": "12.5",
        "t": "true",
        "n": "false",
        "neg": "-3",
        "big": str(10**30),
    }


@pytest.mark.parametrize(
    "number",
    ["49.90", "1.10", "1e2", "1E+2", "-0.0", "1.5e-7", "1e400", "18446744073709551616", "-1e-400"],
)
def test_numbers_keep_the_text_they_were_written_with(number: str) -> None:
    assert props(js('{"_p":"a","_t":$T,"v":$V}', V=number)) == {"v": number}


def test_negative_zero_integer_keeps_its_text() -> None:
    assert props(js('{"_p":"a","_t":$T,"v":-0}')) == {"v": "-0"}


def test_null_means_no_property() -> None:
    assert props(obj_line(a=None, b="x")) == {"b": "x"}


def test_nested_values_become_compact_json_text() -> None:
    values = props(js('{"_p":"a","_t":$T,"o":{"k": [1, 2.50, "s", null, true]},"l":[ ]}'))
    assert values == {"o": '{"k":[1,2.50,"s",null,true]}', "l": "[]"}


def test_nested_values_escape_their_strings_as_json() -> None:
    values = props(obj_line(o={"q": 'say "hi"\n', "é": "\u0001"}))
    assert json.loads(values["o"]) == {"q": 'say "hi"\n', "é": "\u0001"}
    assert "\n" not in values["o"]


def test_nul_is_removed_from_values() -> None:
    assert props(obj_line(v="a\u0000b\u0000")) == {"v": "ab"}


def test_nul_inside_a_nested_value_never_reaches_the_text() -> None:
    values = props(obj_line(o=["a\u0000b"]))
    assert "\x00" not in values["o"]
    assert json.loads(values["o"]) == ["a\u0000b"]


def test_nul_is_removed_from_identities_and_names() -> None:
    line = accepted(obj_line(_p="jo\u0000hn", _n="Sign\u0000 Up", **{"Pl\u0000an": "x"}))
    assert line.person == "john"
    assert line.name == "sign up"
    assert line.properties == (("plan", "x"),)
    alias = accepted(obj_line(_p2="b\u0000ob"))
    assert alias.alias == "bob"


def test_a_value_nested_a_hundred_deep_loads_as_its_compact_json() -> None:
    depth = 100
    nested = "[" * depth + "1.50" + "]" * depth
    assert props(js('{"_p":"a","_t":$T,"v":$V}', V=nested.replace("[", "[ "))) == {"v": nested}


def test_nesting_too_deep_for_the_parser_is_rejected() -> None:
    depth = 5000
    reject = rejected(js('{"_p":"a","_t":$T,"v":$V}', V="[" * depth + "]" * depth))
    assert reject.reason == "value nested too deeply"


def test_value_text_rules() -> None:
    assert value_text("As Is ") == "As Is "
    assert value_text("a\x00b") == "ab"
    assert value_text(None) is None
    assert value_text(True) == "true"
    assert value_text(False) == "false"
    assert value_text(12) == "12"
    assert value_text(12.5) == "12.5"
    assert value_text(JsonNumber("49.90")) == "49.90"
    assert value_text({"a": [1, None, "x"]}) == '{"a":[1,null,"x"]}'
    assert value_text([JsonNumber("1.10"), {"b": JsonNumber("2e3")}]) == '[1.10,{"b":2e3}]'
    assert value_text([]) == "[]"
    assert value_text({}) == "{}"


def test_value_text_returns_plain_str_for_json_numbers() -> None:
    assert type(value_text(JsonNumber("1.0"))) is str


# ---------------------------------------------------------------------------------------------
# Names


def test_event_names_are_lowercased_and_trimmed() -> None:
    assert accepted(obj_line(_n="  Visited SITE \t")).name == "visited site"


def test_property_keys_are_lowercased_and_trimmed_values_untouched() -> None:
    assert props(obj_line(**{" Billed Amount ": " 9 USD "})) == {"billed amount": " 9 USD "}


def test_non_ascii_names_are_lowercased() -> None:
    assert accepted(obj_line(_n="ÉTÉ Ünïcode")).name == "été ünïcode"


def test_an_event_name_that_is_empty_after_trimming_is_rejected() -> None:
    assert rejected(obj_line(_n="   ")).reason == "empty _n"


def test_an_event_name_that_is_not_a_string_is_rejected() -> None:
    assert rejected(obj_line(_n=5)).reason == "_n is not a string"


def test_keys_differing_only_by_case_or_spaces_last_wins() -> None:
    line = js('{"_p":"a","_t":$T,"Plan":"first","PLAN ":"second"," plan":"third"}')
    assert props(line) == {"plan": "third"}


def test_keys_differing_only_by_case_last_wins_when_read_exactly() -> None:
    line = js('{"_p":"a","_t":$T,"Price":1.10,"price":2.50}')
    assert props(line) == {"price": "2.50"}


def test_a_repeated_identical_key_keeps_the_last_value() -> None:
    assert props(js('{"_p":"a","_t":$T,"k":"1","k":"2"}')) == {"k": "2"}


def test_name_normalization_is_not_polluted_by_its_cache() -> None:
    for _ in range(3):
        assert accepted(obj_line(_n="Cached Name")).name == "cached name"
        assert props(obj_line(**{"Cached Key": "v"})) == {"cached key": "v"}


# ---------------------------------------------------------------------------------------------
# Reserved keys and properties


def test_reserved_keys_never_become_properties() -> None:
    event = accepted(obj_line(_n="e", x="1"))
    assert dict(event.properties) == {"x": "1"}
    props_line = accepted(obj_line(x="1"))
    assert {k for k, _ in props_line.properties} == {"x"}
    alias = accepted(obj_line(_p2="b", x="1"))
    assert all(k not in export.RESERVED_KEYS for k, _ in alias.properties)


def test_c_and_u_are_ordinary_properties() -> None:
    assert props(obj_line(_c="cohort", _u="http://x", _n="e")) == {"_c": "cohort", "_u": "http://x"}


def test_property_order_follows_the_line() -> None:
    line = accepted(js('{"b":"1","_p":"a","a":"2","_t":$T,"c":"3"}'))
    assert line.properties == (("b", "1"), ("a", "2"), ("c", "3"))


# ---------------------------------------------------------------------------------------------
# The plain flag


def test_plain_is_true_for_a_line_without_backslash() -> None:
    assert accepted(obj_line(v="simple é")).plain is True


@pytest.mark.parametrize(
    "line",
    [
        js('{"_p":"a","_t":$T,"v":"a\\/b"}'),
        js('{"_p":"a","_t":$T,"v":"\\u00e9"}'),
        js('{"_p":"a","_t":$T,"v":"\\t"}'),
        js('{"_p":"a\\\\b","_t":$T}'),
        js('{"_p":"a","_t":$T,"_n":"a\\tb"}'),
        js('{"_p":"a","_t":$T,"_p2":"\\"b"}'),
        js('{"_p":"a","_t":$T,"v":"Paran\\303\\241"}'),
        js('{"_p":"a","_t":$T,"v":1.5,"w":"\\\\"}'),
        js('{"_p":"a","_t":$T,"k\\u0000":"x"}'),
    ],
)
def test_plain_is_false_whenever_the_raw_line_had_a_backslash(line: str) -> None:
    assert accepted(line).plain is False


def test_a_plain_line_holds_no_backslash_or_control_character() -> None:
    line = accepted(obj_line(_n="Ev", v="x y", o={"a": [1]}))
    assert line.plain
    texts = [line.person, line.name or "", *(k + v for k, v in line.properties)]
    for text in texts:
        assert "\\" not in text
        assert not any(ord(c) < 0x20 for c in text)


# ---------------------------------------------------------------------------------------------
# parse_object directly


def test_parse_object_classifies_a_decoded_object() -> None:
    line = parse_object(7, {"_p": "a", "_t": T, "_n": "E", "K": 1}, LATEST)
    assert (line.lineno, line.kind, line.person, line.t, line.name) == (
        7,
        LineKind.EVENT,
        "a",
        T,
        "e",
    )
    assert line.properties == (("k", "1"),)


def test_parse_object_rejects_what_is_not_an_object() -> None:
    for obj in ([1], "x", 1, None, True):
        with pytest.raises(LineError, match="not a JSON object"):
            parse_object(1, obj, LATEST)


def test_parse_object_with_the_plain_promise_still_rejects_a_blank_person() -> None:
    with pytest.raises(LineError, match="empty _p"):
        parse_object(1, {"_p": "   ", "_t": T}, LATEST, plain=True)
    with pytest.raises(LineError, match="missing _p"):
        parse_object(1, {"_t": T}, LATEST, plain=True)


def test_parse_object_without_the_plain_promise_strips_nul() -> None:
    line = parse_object(1, {"_p": "a\x00", "_t": T, "v": "b\x00"}, LATEST)
    assert line.person == "a"
    assert line.properties == (("v", "b"),)


def test_parse_object_marks_float_and_nested_values_inexact() -> None:
    assert parse_object(1, {"_p": "a", "_t": T, "v": 1.5}, LATEST).inexact
    assert parse_object(1, {"_p": "a", "_t": T, "v": [1]}, LATEST).inexact
    assert not parse_object(1, {"_p": "a", "_t": T, "v": 1}, LATEST).inexact


def test_parse_line_never_leaves_a_line_marked_inexact() -> None:
    line = parse_line(1, obj_line(v=1.5, o={"a": 1}).encode(), LATEST)
    assert isinstance(line, Line)
    assert line.inexact is False


def test_parse_line_returns_none_for_a_blank_line() -> None:
    assert parse_line(3, b"  \t ", LATEST) is None
    assert parse_line(3, b"", LATEST) is None


def test_numeric_identities_are_taken_as_their_json_text() -> None:
    assert accepted(js('{"_p":123,"_t":$T}')).person == "123"
    assert accepted(js('{"_p":"a","_p2":456,"_t":$T}')).alias == "456"


# ---------------------------------------------------------------------------------------------
# The fast path: usual lines only, the same answer as parse_line


@pytest.mark.parametrize(
    "line",
    [
        '{"_p":"john","_t":1400000000,"_n":" Signed Up ","Plan":"Pro","seats":3,"trial":true}',
        '{"_p":"john","_t":1400000000,"plan":"Pro","Plan":"Team","gone":null}',
        '{"_p":"Paraná","_t":1400000000,"_n":"visited"}',
    ],
)
def test_parse_usual_takes_usual_lines_with_parse_lines_answer(line: str) -> None:
    parsed = accepted(line)
    usual = export.parse_usual(line.encode(), LATEST)
    assert usual == (parsed.person, parsed.t, parsed.name, dict(parsed.properties))


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ('{"_p":"a\\u00e1","_t":1400000000}', "a backslash: may need repair or escaping"),
        ('{"_p":"a","_t":1400000000,"price":49.90}', "a float keeps its own text"),
        ('{"_p":"a","_t":1400000000,"n":0}', "zero may have been written -0"),
        ('{"_p":"a","_t":1400000000,"tags":["x"]}', "nested"),
        ('{"_p":"a","_t":1400000000,"_p2":"b"}', "an alias"),
        ('{"_p":"a","_t":1400000000,"_n":null}', "a null _n"),
        ('{"_p":"a","_t":1400000000,"_n":7}', "a number _n"),
        ('{"_p":"a","_t":1400000000,"_n":"  "}', "a blank _n"),
        ('{"_p":"a","_t":"1400000000"}', "a string _t"),
        ('{"_p":"a","_t":1400000000.5}', "a float _t"),
        ('{"_p":"a","_t":1900000001}', "in the future"),
        ('{"_p":" ","_t":1400000000}', "a blank _p"),
        ('{"_p":12,"_t":1400000000}', "a number _p"),
        ('["_p","a"]', "not an object"),
        ("", "blank"),
        ("{", "not JSON"),
    ],
)
def test_parse_usual_leaves_every_other_line_to_parse_line(line: str, why: str) -> None:
    assert export.parse_usual(line.encode(), LATEST) is None, why


def test_parse_usual_leaves_over_long_lines_to_parse_line() -> None:
    line = obj_line(big="x" * MAX_LINE_BYTES).encode()
    assert export.parse_usual(line, LATEST) is None
