"""The insight views and functions against plain Python over the export's lines, and the same
answers whatever order the files were loaded in."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from km2pg import db, load
from km2pg.dsn import ConnectionSettings
from km2pg.sources import local_file
from tests.conftest import create_database, drop_database
from tests.helpers import check_invariants
from tests.integration import insights_oracle as oracle

SINCE = datetime(2026, 1, 19, tzinfo=UTC)  # a boundary some events fall on exactly
UNTIL = datetime(2026, 2, 2, tzinfo=UTC)
WITHIN = timedelta(days=3)
FUNNELS = [
    ["visited site", "viewed product", "purchased"],
    ["visited site", "signed up", "purchased", "refunded"],
    ["viewed product", "logged in"],  # done at one second, by one event line each
    ["visited site", "visited site"],  # one event may complete two steps
    ["purchased", "no such action", "purchased"],
]
RANGES = [
    (SINCE, UNTIL),
    (oracle.START, oracle.START + timedelta(days=70)),
    (datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)),
]


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return oracle.generate(tmp_path_factory.mktemp("insights"), seed=5)


@pytest.fixture(scope="module")
def facts(export: list[Path]) -> oracle.Facts:
    return oracle.read_facts(export)


def load_in_order(settings: ConnectionSettings, files: list[Path]) -> None:
    with db.connection(settings) as con:
        load.prepare_connection(con)
        for path in files:
            assert load.load_file(con, local_file(path)).status == "loaded"


@pytest.fixture(scope="module")
def loaded(pg_admin, template_database, export) -> Iterator[db.Connection]:
    """The export loaded, its files in a shuffled order."""
    settings = create_database(pg_admin, template_database)
    files = list(export)
    random.Random(1).shuffle(files)
    load_in_order(settings, files)
    con = db.connect(settings)
    con.run("SET TIME ZONE 'UTC'")
    try:
        yield con
    finally:
        db.close_quietly(con)
        drop_database(pg_admin, settings)


def person_names(con: db.Connection) -> dict[int, str]:
    sql = 'select personid, min(name collate "C") from km2pg.users group by personid'
    return {int(pid): str(name) for pid, name in db.rows(con, sql)}


def rows(con: db.Connection, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in db.rows(con, sql, **params)]


# ---------------------------------------------------------------------------------------------
# Against the oracle


def test_loads_keep_person_properties_equal_to_a_full_recomputation(loaded):
    check_invariants(loaded)


def test_person_properties_are_each_persons_latest_and_first_setting(loaded, facts):
    names = person_names(loaded)
    got = {
        (names[pid], key, value, t, first_value, first_t)
        for pid, key, value, t, first_value, first_t in rows(
            loaded, "select * from km2pg.person_properties"
        )
    }
    assert got == oracle.person_properties(facts)


def test_property_at_is_the_latest_setting_at_or_before_the_time(loaded, facts):
    names = person_names(loaded)
    people = sorted(names.items())[::7]
    times = [oracle.START + timedelta(days=d) for d in (0, 14, 27.5, 40, 80)]
    times += oracle.BOUNDARIES
    checked = 0
    for pid, name in people:
        for key in ("plan", oracle.EXPERIMENT, "city"):
            for at in times:
                got = db.scalar(
                    loaded,
                    "select km2pg.property_at(CAST(:p AS bigint), :k, :at)",
                    p=pid,
                    k=f" {key.upper()} ",
                    at=at,
                )
                assert got == oracle.property_at(facts, name, key, at), (name, key, at)
                checked += got is not None
    assert checked > 50


@pytest.mark.parametrize("steps", FUNNELS, ids="->".join)
@pytest.mark.parametrize(("since", "until"), RANGES, ids=["2w", "all", "feb"])
def test_funnel_counts_people_through_each_step(loaded, facts, steps, since, until):
    got = rows(
        loaded,
        "select * from km2pg.funnel(CAST(:s AS text[]), :a, :b, CAST(:w AS interval))",
        s=[s.title() for s in steps],
        a=since,
        b=until,
        w="3 days",
    )
    assert got == oracle.funnel(facts, steps, since, until, WITHIN)
    assert got[0][2] > 0


def test_funnel_within_defaults_to_30_days(loaded, facts):
    steps = ["visited site", "signed up", "purchased"]
    got = rows(
        loaded, "select * from km2pg.funnel(CAST(:s AS text[]), :a, :b)", s=steps, a=SINCE, b=UNTIL
    )
    assert got == oracle.funnel(facts, steps, SINCE, UNTIL, timedelta(days=30))


@pytest.mark.parametrize(("unit", "periods"), [("day", 10), ("week", 8), ("month", 3)])
@pytest.mark.parametrize(
    ("first", "back"), [("visited site", "visited site"), ("signed up", "purchased")]
)
def test_retention_counts_cohorts_coming_back_per_period(loaded, facts, unit, periods, first, back):
    since, until = oracle.START, datetime(2026, 3, 1, tzinfo=UTC)
    got = rows(
        loaded,
        "select * from km2pg.retention(:f, :r, :a, :b, :u, :n)",
        f=first,
        r=back,
        a=since,
        b=until,
        u=unit,
        n=periods,
    )
    expected = oracle.retention(facts, first, back, since, until, unit, periods)
    assert got == expected
    assert sum(r[3] for r in got if r[2] > 0) > 0, "someone came back"


def test_retention_defaults_to_8_weekly_periods(loaded, facts):
    got = rows(
        loaded,
        "select * from km2pg.retention('visited site', 'purchased', :a, :b)",
        a=SINCE,
        b=UNTIL,
    )
    assert got == oracle.retention(facts, "visited site", "purchased", SINCE, UNTIL, "week", 8)


@pytest.mark.parametrize("unit", ["day", "week", "month"])
def test_retention_over_open_ends_covers_all_data(loaded, facts, unit):
    sql = "select * from km2pg.retention(:f, :r, '-infinity', 'infinity', :u, 5)"
    got = rows(loaded, sql, f="visited site", r="purchased", u=unit)
    everything = (datetime(1970, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
    assert got == oracle.retention(facts, "visited site", "purchased", *everything, unit, 5)
    assert len({r[0] for r in got}) > 1, "several cohorts"


@pytest.mark.parametrize(("since", "until"), RANGES, ids=["2w", "all", "feb"])
@pytest.mark.parametrize("conversion", ["purchased", "signed up"])
def test_ab_test_compares_each_variant_with_the_control(loaded, facts, since, until, conversion):
    got = rows(
        loaded,
        "select * from km2pg.ab_test('Homepage Test', :c, :a, :b)",
        c=conversion,
        a=since,
        b=until,
    )
    expected = oracle.ab_test(facts, oracle.EXPERIMENT, conversion, since, until)
    assert [(r[0], r[1], r[2], r[3]) for r in got] == [
        (a.variant, a.people, a.converted, a.rate) for a in expected
    ]
    assert len(got) >= 2
    for row, arm in zip(got, expected, strict=True):
        if arm.z is None:
            assert row[4] is None
            assert row[5] is None
        else:
            assert abs(float(row[4]) - arm.z) <= 0.00006
            assert math.isclose(float(row[5]), arm.p_value or 0.0, rel_tol=1e-9, abs_tol=1e-15)


def test_people_who_saw_two_variants_count_in_their_first(loaded, facts):
    settings = facts.person_settings(oracle.EXPERIMENT)
    both = [p for p, s in settings.items() if len({v for *_, v in s}) > 1]
    assert len(both) >= 5, "the generated data has people who saw both variants"


@pytest.mark.parametrize("unit", ["day", "week", "month"])
@pytest.mark.parametrize(("since", "until"), RANGES, ids=["2w", "all", "feb"])
def test_revenue_sums_numeric_values_refunds_included(loaded, facts, unit, since, until):
    got = rows(
        loaded,
        "select * from km2pg.revenue('Billing Amount', :a, :b, :u)",
        a=since,
        b=until,
        u=unit,
    )
    assert got == oracle.revenue(facts, oracle.REVENUE, since, until, unit)
    assert got


def test_revenue_defaults_to_billing_amount_monthly_over_everything(loaded, facts):
    got = rows(loaded, "select * from km2pg.revenue()")
    everything = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
    assert got == oracle.revenue(facts, oracle.REVENUE, *everything, "month")
    daily = rows(loaded, "select * from km2pg.revenue(unit => 'day')")
    assert any(r[1] < 0 for r in daily), "a day whose refunds outweigh its sales"


def test_merged_identities_give_every_identity_its_person(loaded):
    sql = """select u.userid, u.personid, coalesce(m.personid, u.userid)
               from km2pg.users u left join km2pg.merged_identities m using (userid)"""
    got = rows(loaded, sql)
    assert all(person == found for _, person, found in got)
    merged = rows(loaded, "select userid, personid from km2pg.merged_identities")
    assert merged, "aliases joined some identities"
    assert all(userid != person for userid, person in merged)


def test_people_lists_identities_and_event_span(loaded, facts):
    names = person_names(loaded)
    got = {
        names[pid]: (list(ids), first, last, events)
        for pid, ids, first, last, events in rows(loaded, "select * from km2pg.people")
    }
    expected = {}
    for person in set(facts.person_of.values()):
        identities = sorted(i for i, p in facts.person_of.items() if p == person)
        times = [t for _, t in facts.events.get(person, set())]
        expected[person] = (
            identities,
            oracle.utc(min(times)) if times else None,
            oracle.utc(max(times)) if times else None,
            len(times),
        )
    assert got == expected
    assert any(len(v[0]) > 2 for v in got.values()), "alias chains of three identities or more"


def test_timeline_of_a_person_is_every_event_with_actions_and_properties(loaded, facts):
    names = person_names(loaded)
    by_name = {name: pid for pid, name in names.items()}
    for person in sorted(facts.events)[::10]:
        got = {
            (t, identity, tuple(actions), tuple(sorted(properties.items())))
            for t, identity, actions, properties in rows(
                loaded,
                "select t, identity, actions, properties from km2pg.timeline where personid = :p",
                p=by_name[person],
            )
        }
        expected = set()
        for identity, t in facts.events[person]:
            actions = sorted(facts.identity_actions[(identity, t)])
            props = {
                k: v for (i, tt, k), (_, _, v) in facts.settings.items() if (i, tt) == (identity, t)
            }
            expected.add((oracle.utc(t), identity, tuple(actions), tuple(sorted(props.items()))))
        assert got == expected, person


# ---------------------------------------------------------------------------------------------
# Load order


ALL_FUNCTIONS = [
    "select * from km2pg.funnel(ARRAY['visited site', 'viewed product', 'purchased'], :a, :b)",
    "select * from km2pg.retention('visited site', 'visited site', :a, :b, 'day', 5)",
    "select * from km2pg.ab_test('homepage test', 'purchased', :a, :b)",
    "select * from km2pg.revenue('billing amount', :a, :b, 'week')",
]


def answers(settings: ConnectionSettings) -> dict[str, Any]:
    with db.connection(settings) as con:
        con.run("SET TIME ZONE 'UTC'")
        names = person_names(con)
        out: dict[str, Any] = {
            sql: rows(con, sql, a=since, b=until)
            for sql in ALL_FUNCTIONS
            for since, until in RANGES
        }
        out["person_properties"] = sorted(
            (names[r[0]], *r[1:]) for r in rows(con, "select * from km2pg.person_properties")
        )
        out["people"] = sorted(
            (names[r[0]], *r[1:]) for r in rows(con, "select * from km2pg.people")
        )
        out["property_at"] = sorted(
            (names[pid], value)
            for pid, value in rows(
                con,
                "select personid, km2pg.property_at(personid, 'plan', :at) from km2pg.people",
                at=UNTIL,
            )
        )
        return out


def test_two_databases_loaded_in_different_orders_answer_alike(pg_admin, template_database, export):
    results = []
    for seed in (2, 3):
        files = list(export)
        random.Random(seed).shuffle(files)
        settings = create_database(pg_admin, template_database)
        try:
            load_in_order(settings, files)
            results.append(answers(settings))
        finally:
            drop_database(pg_admin, settings)
    assert results[0] == results[1]
    assert results[0]["person_properties"]
