"""The oracle itself, against answers worked out by hand from README's rules."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.oracle import oracle_dump, oracle_rejects, physical_lines, repair_octal, revision_of

NOW = 1_800_000_000  # 2027-01-15T08:00:00Z
T = 1_790_000_000
AT_T = datetime(2026, 9, 21, 14, 13, 20, tzinfo=UTC)


def test_physical_lines_drop_the_bom_crlf_and_nothing_after_the_last_newline() -> None:
    content = b'\xef\xbb\xbf{"a":1}\r\n\n{"b":2}\r'
    assert physical_lines(content) == [(1, b'{"a":1}'), (2, b""), (3, b'{"b":2}')]
    assert physical_lines(b"x\ny\n") == [(1, b"x"), (2, b"y")]


def test_octal_runs_become_utf8_text_and_escaped_backslashes_stay() -> None:
    assert repair_octal(r'"Paran\303\241"') == '"Paraná"'
    assert repair_octal(r'"C:\\303"') == r'"C:\\303"'
    assert repair_octal(r'"\\\303\241"') == '"\\\\á"'
    assert repair_octal(r'"\377"') == '"\ufffd"'
    assert repair_octal(r'"\042"') == r'"\""'  # a quote, escaped again for JSON


def test_revision_comes_from_the_revisions_folder_name() -> None:
    assert revision_of("/x/revisions/22770.json") == 22770
    assert revision_of("revisions/7.json.gz") == 7
    assert revision_of("/x/other/7.json") == 0


def test_rejects_follow_the_rules_and_blank_lines_are_not_lines() -> None:
    lines = [
        f'{{"_p":"ok","_t":{T}}}',
        "",
        "{bad",
        "[1]",
        f'{{"_p":"","_t":{T}}}',
        f'{{"_p":7,"_t":{T}}}',  # a number is an identity
        f'{{"_p":true,"_t":{T}}}',
        f'{{"_p":"a","_t":{NOW + 86_400}}}',  # exactly a day ahead: accepted
        f'{{"_p":"a","_t":{NOW + 86_401}}}',
        '{"_p":"a","_t":946684799}',
        '{"_p":"a","_t":"946684800.9"}',
        f'{{"_p":"a","_t":{T},"_n":""}}',
        f'{{"_p":"a","_t":{T},"_n":5}}',
        f'{{"_p":"a","_t":{T},"_p2":null}}',
        f'{{"_p":"a","_t":{T},"v":NaN}}',
    ]
    content = "\n".join(lines).encode()
    assert oracle_rejects(content, now=NOW) == [3, 4, 5, 7, 9, 10, 12, 13, 14, 15]


def test_a_dump_worked_out_by_hand() -> None:
    first = [
        f'{{"_p":"Ann","_t":{T},"_n":" Signed Up ","Plan":"Pro","n":1.50,"x":null}}',
        f'{{"_p":"Ann","_t":{T}.9,"plan":"Team","ok":true,"o":{{"k":[1,"\\u00e9"]}}}}',
        f'{{"_p":"Ann","_t":{T},"_p2":"ann@x"}}',
        f'{{"_p":"ann@x","_t":{T + 5},"_p2":"Bob"}}',
    ]
    second = [f'{{"_p":"Bob","_t":{T},"plan":"Old"}}']
    dump = oracle_dump([(10, first), (9, second)], now=NOW)
    assert dump == {
        "users": [("Ann", "Ann"), ("Bob", "Ann"), ("ann@x", "Ann")],
        "aliases": [("Ann", "ann@x", AT_T), ("ann@x", "Bob", AT_T.replace(second=25))],
        "events": [("Ann", AT_T), ("Bob", AT_T)],
        "event_actions": [("Ann", AT_T, "signed up")],
        "event_properties": sorted(
            [
                ("Ann", AT_T, "plan", "Team", None, 10, 2),
                ("Ann", AT_T, "n", "1.50", "signed up", 10, 1),
                ("Ann", AT_T, "ok", "true", None, 10, 2),
                ("Ann", AT_T, "o", '{"k":[1,"é"]}', None, 10, 2),
                ("Bob", AT_T, "plan", "Old", None, 9, 1),
            ],
            key=repr,
        ),
        "actions": [("signed up",)],
        "keys": [("n",), ("o",), ("ok",), ("plan",)],
        # One person (aliases join all three): Bob's older revision sets plan first.
        "person_properties": sorted(
            [
                ("Ann", "plan", "Team", AT_T, "Old", AT_T),
                ("Ann", "n", "1.50", AT_T, "1.50", AT_T),
                ("Ann", "ok", "true", AT_T, "true", AT_T),
                ("Ann", "o", '{"k":[1,"é"]}', AT_T, '{"k":[1,"é"]}', AT_T),
            ],
            key=repr,
        ),
    }


@pytest.mark.parametrize(("share", "loads"), [(0.5, True), (0.49, False)])
def test_a_file_over_the_reject_share_adds_nothing(share: float, loads: bool) -> None:
    lines = [f'{{"_p":"a","_t":{T},"_n":"x"}}', "garbage"]
    dump = oracle_dump([(1, lines)], now=NOW, max_reject_share=share)
    assert dump["events"] == ([("a", AT_T)] if loads else [])
