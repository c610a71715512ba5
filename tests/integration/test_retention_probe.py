"""retention matches events to the candidates' identities (migration 8): the first_action
events before ``since`` and the returns are joined to each identity of each candidate person, not
to the person. Persons whose identities were numbered far apart (some before, some after a jump of
the userid sequence), merged by aliases, must still be counted once, as the independent
computation counts them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from km2pg import db, load
from km2pg.sources import local_file
from tests.conftest import create_database, drop_database
from tests.integration import insights_oracle as oracle

FAR_FROM = 2**24 + 1
"""Userids of the identities first met after the first files: far beyond the others."""

RANGES = [
    (oracle.START + timedelta(days=14), oracle.START + timedelta(days=42)),
    (datetime(2026, 1, 19, tzinfo=UTC), datetime(2026, 2, 2, tzinfo=UTC)),  # a boundary
    (oracle.START + timedelta(days=1), oracle.START + timedelta(days=70)),
]
PAIRS = [
    ("visited site", "visited site"),
    ("signed up", "purchased"),
    ("logged in", "visited site"),
]


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return oracle.generate(tmp_path_factory.mktemp("probe"), seed=11, people=220, files=4)


@pytest.fixture(scope="module")
def facts(export: list[Path]) -> oracle.Facts:
    return oracle.read_facts(export)


@pytest.fixture(scope="module")
def far_apart(pg_admin, template_database, export) -> Iterator[db.Connection]:
    """The export loaded with the userids of its last files' new identities beyond 2**24."""
    settings = create_database(pg_admin, template_database)
    con = db.connect(settings)
    try:
        load.prepare_connection(con)
        for k, path in enumerate(export):
            if k == 2:
                # setval, not ALTER SEQUENCE: Citus refuses to alter a distributed sequence.
                con.run("SELECT setval('km2pg.users_userid_seq', :v, false)", v=FAR_FROM)
            assert load.load_file(con, local_file(path)).status == "loaded"
        con.run("SET TIME ZONE 'UTC'")
        yield con
    finally:
        db.close_quietly(con)
        drop_database(pg_admin, settings)


def rows(con: db.Connection, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in db.rows(con, sql, **params)]


def test_some_people_have_identities_numbered_far_apart(far_apart):
    """The premise of the tests below: people whose identities were given userids on both sides
    of the jump."""
    low, high = rows(
        far_apart,
        "select count(*) filter (where userid < :f), count(*) filter (where userid >= :f)"
        " from km2pg.users",
        f=FAR_FROM,
    )[0]
    assert low > 0
    assert high > 0
    mixed = rows(
        far_apart,
        "select count(*) from (select personid from km2pg.users group by personid"
        " having min(userid) < :f and max(userid) >= :f) p",
        f=FAR_FROM,
    )[0][0]
    assert mixed > 0, "some person has identities on both sides"


@pytest.mark.parametrize(("first", "back"), PAIRS)
@pytest.mark.parametrize(("since", "until"), RANGES)
@pytest.mark.parametrize(("unit", "periods"), [("day", 9), ("week", 4)])
def test_retention_of_identities_numbered_far_apart_equals_the_independent_count(
    far_apart, facts, first, back, since, until, unit, periods
):
    got = rows(
        far_apart,
        "select * from km2pg.retention(:f, :r, :a, :b, :u, :n)",
        f=first,
        r=back,
        a=since,
        b=until,
        u=unit,
        n=periods,
    )
    assert got == oracle.retention(facts, first, back, since, until, unit, periods)


def test_people_who_started_before_since_are_left_out_of_every_cohort(far_apart, facts):
    """The probe's whole job: with since in the middle of the data, people whose first
    first_action came earlier are no cohort's, though they did it again inside the range."""
    since, until = oracle.START + timedelta(days=28), oracle.START + timedelta(days=56)
    got = rows(
        far_apart,
        "select * from km2pg.retention('visited site', 'visited site', :a, :b, 'week', 2)",
        a=since,
        b=until,
    )
    in_range = {
        person
        for person, seconds in facts.actions.items()
        if any(
            "visited site" in acts and since.timestamp() <= t < until.timestamp()
            for t, acts in seconds.items()
        )
    }
    started = sum(r[1] for r in got if r[2] == 0)
    assert 0 < started < len(in_range), "some people in the range started before it"
    assert got == oracle.retention(facts, "visited site", "visited site", since, until, "week", 2)
