"""The insight functions' arguments: bad ones give one clear error each, unknown names give empty
or zero answers, names match as the loader stores them; num() and erfc() on their own."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from pg8000.exceptions import DatabaseError

from km2pg import db, load
from km2pg.sources import local_file
from tests.helpers import write_export

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
SECONDS = int(T0.timestamp())


@pytest.fixture
def loaded(con, tmp_path):
    lines = [
        {"_p": "ann", "_n": " Visited Site ", "_t": SECONDS, "Homepage Test": "a"},
        {"_p": "ann", "_n": "Purchased", "_t": SECONDS + 60, " Billing Amount": "10"},
        {"_p": "bob", "_n": "visited site", "_t": SECONDS, "homepage test": "b"},
    ]
    path = write_export(tmp_path, 1, lines)
    assert load.load_file(con, local_file(path)).status == "loaded"
    con.run("SET TIME ZONE 'UTC'")
    return con


def error_of(con: db.Connection, sql: str, **params: object) -> str:
    with pytest.raises(DatabaseError) as caught:
        db.rows(con, sql, **params)
    assert db.sqlstate(caught.value) == "22023", caught.value
    message = db.server_message(caught.value)
    assert "\n" not in message
    return message


RANGE_CALLS = [
    "select * from km2pg.funnel(array['visited site'], :a, :b)",
    "select * from km2pg.retention('visited site', 'visited site', :a, :b)",
    "select * from km2pg.ab_test('homepage test', 'purchased', :a, :b)",
    "select * from km2pg.revenue('billing amount', :a, :b)",
]


@pytest.mark.parametrize("sql", RANGE_CALLS, ids=["funnel", "retention", "ab_test", "revenue"])
@pytest.mark.parametrize(("since", "until"), [(T0, T0), (T0.replace(day=3), T0)])
def test_since_not_before_until_is_an_error_naming_the_range(loaded, sql, since, until):
    message = error_of(loaded, sql, a=since, b=until)
    assert message.startswith("since (2026-03-0"), message
    assert "must be before until (2026-03-02 12:00:00+00): the range is [since, until)" in message


@pytest.mark.parametrize("sql", RANGE_CALLS, ids=["funnel", "retention", "ab_test", "revenue"])
def test_a_null_end_is_an_error_pointing_to_infinity(loaded, sql):
    message = error_of(loaded, sql, a=None, b=T0)
    assert "since and until must not be null" in message
    assert "'-infinity' or 'infinity'" in message


@pytest.mark.parametrize(
    "sql",
    [
        "select * from km2pg.retention('visited site', 'visited site', :a, :b, :u)",
        "select * from km2pg.revenue('billing amount', :a, :b, :u)",
    ],
    ids=["retention", "revenue"],
)
@pytest.mark.parametrize("unit", ["year", "Week", "", None])
def test_an_unknown_unit_is_an_error_listing_the_units(loaded, sql, unit):
    message = error_of(loaded, sql, a=T0.replace(month=1), b=T0, u=unit)
    assert message.startswith("unit must be 'day', 'week' or 'month', not "), message


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        ([], "steps must name one action or more, none of them null (got {})"),
        (None, "steps must name one action or more, none of them null (got null)"),
        (["a", None], "steps must name one action or more, none of them null (got {a,NULL})"),
    ],
)
def test_funnel_without_steps_is_an_error(loaded, steps, expected):
    sql = "select * from km2pg.funnel(CAST(:s AS text[]), :a, :b)"
    assert error_of(loaded, sql, s=steps, a=T0.replace(month=1), b=T0) == expected


@pytest.mark.parametrize("within", ["-1 day", None])
def test_funnel_within_must_be_zero_or_more(loaded, within):
    sql = "select * from km2pg.funnel(array['a'], :a, :b, CAST(:w AS interval))"
    message = error_of(loaded, sql, a=T0.replace(month=1), b=T0, w=within)
    assert message.startswith("within must be an interval of zero or more (got "), message


@pytest.mark.parametrize("periods", [0, -3, 1001, None])
def test_retention_periods_must_be_1_to_1000(loaded, periods):
    sql = "select * from km2pg.retention('a', 'b', :a, :b, 'week', CAST(:n AS int))"
    message = error_of(loaded, sql, a=T0.replace(month=1), b=T0, n=periods)
    assert message.startswith("periods must be from 1 to 1000 (got "), message


def test_null_names_are_errors(loaded):
    a, b = T0.replace(month=1), T0.replace(month=4)
    assert "must not be null" in error_of(
        loaded, "select * from km2pg.retention(null, 'b', :a, :b)", a=a, b=b
    )
    assert "must not be null" in error_of(
        loaded, "select * from km2pg.ab_test(null, 'b', :a, :b)", a=a, b=b
    )
    assert "must not be null" in error_of(
        loaded, "select * from km2pg.revenue(null, :a, :b)", a=a, b=b
    )


def test_unknown_actions_and_keys_give_empty_or_zero_answers(loaded):
    a, b = T0.replace(month=1), T0.replace(month=4)
    funnel = db.rows(loaded, "select * from km2pg.funnel(array['nope', 'nada'], :a, :b)", a=a, b=b)
    assert funnel == [[1, "nope", 0, 0, 0], [2, "nada", 0, 0, 0]]
    for sql in (
        "select * from km2pg.retention('nope', 'visited site', :a, :b)",
        "select * from km2pg.ab_test('nope', 'purchased', :a, :b)",
        "select * from km2pg.revenue('nope', :a, :b)",
    ):
        assert db.rows(loaded, sql, a=a, b=b) == [], sql
    assert db.scalar(loaded, "select km2pg.property_at(1, 'nope', 'infinity')") is None
    # A known experiment with an unknown conversion: everyone exposed, nobody converted.
    arms = db.rows(loaded, "select * from km2pg.ab_test('homepage test', 'nope', :a, :b)", a=a, b=b)
    assert [(r[0], r[1], r[2]) for r in arms] == [("a", 1, 0), ("b", 1, 0)]
    assert arms[1][4:] == [Decimal(0), Decimal(1)]  # no difference: z 0, p 1


def test_names_match_however_they_are_spelled(loaded):
    a, b = T0.replace(month=1), T0.replace(month=4)
    funnel = db.rows(
        loaded,
        "select step, action, people"
        " from km2pg.funnel(array['  VISITED site\t', 'PURCHASED'], :a, :b)",
        a=a,
        b=b,
    )
    assert funnel == [[1, "visited site", 2], [2, "purchased", 1]]
    revenue = db.rows(
        loaded, "select revenue from km2pg.revenue(' Billing AMOUNT ', :a, :b)", a=a, b=b
    )
    assert revenue == [[Decimal(10)]]


NUMBERS = {
    "12": Decimal(12),
    "-49.00": Decimal("-49.00"),
    "+3.5": Decimal("3.5"),
    ".5": Decimal("0.5"),
    "7.": Decimal(7),
    " 42 ": Decimal(42),
    "1e3": Decimal(1000),
    "2.5E-2": Decimal("0.025"),
    "9" * 1000: Decimal("9" * 1000),
}
NOT_NUMBERS = [
    "",
    " ",
    "abc",
    "NaN",
    "nan",
    "Infinity",
    "-inf",
    "1,000",
    "$5",
    "5 USD",
    "1e",
    "e5",
    ".",
    "-",
    "1.2.3",
    "0x10",
    "1e99999",
    "9" * 1001,
    "١٢",  # Arabic-Indic digits
    "\u00a012",
    "12\n",
    "true",
    '{"a": 1}',
    None,
]


def test_num_reads_plain_decimal_numbers(con):
    for text, number in NUMBERS.items():
        assert db.scalar(con, "select km2pg.num(:v)", v=text) == number, text


def test_num_is_null_for_anything_else_and_never_an_error(con):
    got = db.rows(con, "select km2pg.num(v) from unnest(CAST(:v AS text[])) as v", v=NOT_NUMBERS)
    assert got == [[None]] * len(NOT_NUMBERS)


def test_erfc_agrees_with_python_to_1e_12_relative(con):
    points = [x / 100 for x in range(-600, 3001)] + [
        1e-9,
        0.49999,
        1.9999,
        2.0,
        2.4999,
        2.5,
        26.4,
        26.6,
        40,
    ]
    got = db.rows(con, "select km2pg.erfc(x) from unnest(CAST(:x AS float8[])) as x", x=points)
    worst = 0.0
    for x, (value,) in zip(points, got, strict=True):
        expected = math.erfc(x)
        if expected < 1e-300:
            assert value < 1e-300
            continue
        worst = max(worst, abs(value - expected) / expected)
    print(f"worst relative error {worst:.2e}")
    assert worst < 1e-12, worst
