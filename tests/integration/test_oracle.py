"""The oracle (tests/oracle.py) catches parser bugs: a load by a deliberately broken parser no
longer matches it, while a load by the real parser does, on a file holding every repair and
reject rule README names."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from km2pg import export, load
from km2pg.sources import local_file
from tests.helpers import assert_matches_oracle
from tests.oracle import oracle_rejects

NOW = int(time.time())
T0 = NOW - 3 * 86400
BEFORE_2000 = 946_684_799


def at(line: str, t: int = T0) -> str:
    return line.replace("$T", str(t))


def tricky_export(folder: Path) -> Path:
    """One file: a BOM, CRLF ends, octal escapes, a blank line, typed and nested values, each
    reject rule once, and enough good lines that the rejects stay under 10%; no final newline."""
    good = [
        json.dumps({"_p": f"user{i}", "_t": T0 + i, "_n": "Visited Site", "page": f"/p{i}"})
        for i in range(80)
    ]
    lines = [
        at('{"_p":"bom person","_t":$T,"_n":"first line"}'),  # after the BOM
        at('{"_p":"crlf person","_t":$T,"_n":"crlf line"}\r'),
        at('{"_p":"Paran\\303\\241","_t":$T,"_n":"Viu \\303\\251","city":"S\\303\\243o"}'),
        at('{"_p":"path person","_t":$T,"dir":"C:\\\\303"}'),  # an escaped backslash: no octal
        "",
        at('{"_p":"typed","_t":"$T","n":49.90,"ok":true,"gone":null,"ctx":{"a":[1,2.50]}}'),
        at('{"_p":"float t","_t":$T.75,"_n":"  Checkout Successful "}'),
        at('{"_p":"alias a","_t":$T,"_p2":"alias b","_n":"ignored"}'),
        "{not json",  # rejects from here
        "[1,2]",
        at('{"_t":$T,"_n":"no person"}'),
        at('{"_p":"  ","_t":$T}'),
        '{"_p":"no time"}',
        at('{"_p":"millis","_t":$T,"_n":"x"}', T0 * 1000),
        at('{"_p":"too old","_t":$T,"_n":"x"}', BEFORE_2000),
        at('{"_p":"two days ahead","_t":$T,"_n":"x"}', NOW + 2 * 86400),
        *good,
    ]
    path = folder / "revisions" / "7.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode())  # a UTF-8 BOM first
    return path


def test_a_load_by_the_real_parser_matches_the_oracle_line_for_line(con, tmp_path):
    path = tricky_export(tmp_path)
    (result,) = [load.load_file(con, local_file(path))]
    assert result.status == "loaded"
    assert oracle_rejects(path.read_bytes()) == list(range(9, 17))
    assert result.rejects == 8
    assert_matches_oracle(con, [path])


def _no_bom_handling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export, "_BOM", b"no BOM is ever seen")


def _no_octal_repair(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export, "repair_octal_escapes", lambda text: text)


def _a_week_of_clock_skew_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(load, "FUTURE_SLACK_SECONDS", 7 * 86400)


def _times_before_2000_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export, "MIN_TIMESTAMP", 0)


# Each breakage and a row of the oracle's that the broken load must lack, or have in excess.
BROKEN_PARSERS: dict[str, tuple[Callable[[pytest.MonkeyPatch], None], str]] = {
    "no BOM handling": (_no_bom_handling, "events: 1 missing, e.g. [('bom person'"),
    "no octal repair": (_no_octal_repair, "events: 1 missing, e.g. [('Paraná'"),
    "a week of clock skew accepted": (
        _a_week_of_clock_skew_accepted,
        "events: 1 extra, e.g. [('two days ahead'",
    ),
    "times before 2000 accepted": (
        _times_before_2000_accepted,
        "events: 1 extra, e.g. [('too old'",
    ),
}


@pytest.mark.parametrize("breakage", list(BROKEN_PARSERS))
def test_a_load_by_a_broken_parser_fails_the_oracle_comparison(
    con, tmp_path, monkeypatch, breakage
):
    path = tricky_export(tmp_path)
    break_parser, difference = BROKEN_PARSERS[breakage]
    break_parser(monkeypatch)
    assert load.load_file(con, local_file(path)).status == "loaded"
    with pytest.raises(AssertionError) as failure:
        assert_matches_oracle(con, [path])
    assert difference in str(failure.value)
