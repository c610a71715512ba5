"""The schema: migrations, the founding query's shape, and the helpers it ships."""

from __future__ import annotations

import multiprocessing
import time
from datetime import UTC, datetime

import pytest
from pg8000.exceptions import DatabaseError

from km2pg import db, load
from km2pg.cli.demo import FOUNDING_QUERY
from km2pg.dsn import ConnectionSettings
from km2pg.sources import local_file
from tests.conftest import create_database, drop_database
from tests.helpers import write_export


def _migrate(settings: ConnectionSettings) -> None:
    with db.connection(settings) as con:
        db.migrate(con)


def test_migrations_apply_once_even_from_concurrent_processes(pg_admin):
    settings = create_database(pg_admin, "template0")
    try:
        context = multiprocessing.get_context("spawn")
        workers = [context.Process(target=_migrate, args=(settings,)) for _ in range(3)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=120)
        assert [w.exitcode for w in workers] == [0, 0, 0]
        with db.connection(settings) as con:
            assert db.schema_version(con) == len(db.migrations())
            assert db.migrate(con) == []
            versions = db.rows(con, "select version from km2pg.schema_migrations order by 1")
            assert [v[0] for v in versions] == [m.version for m in db.migrations()]
    finally:
        drop_database(pg_admin, settings)


def test_founding_query_runs_verbatim_and_reads_only_recent_event_partitions(con, tmp_path):
    now = int(time.time())
    old = int(datetime(2021, 3, 3, tzinfo=UTC).timestamp())
    write_export(
        tmp_path,
        1,
        [
            {"_p": "a", "_t": now - 3600, "_n": "checkout successful"},
            {"_p": "a", "_t": now - 3600, "_n": "visited site"},
            {"_p": "b", "_t": now - 8 * 86400, "_n": "checkout successful"},
            {"_p": "c", "_t": old, "_n": "checkout successful"},
        ],
    )
    load.load_file(con, local_file(tmp_path / "revisions" / "1.json"))
    con.run("SET search_path = km2pg")
    assert db.scalar(con, FOUNDING_QUERY) == 1
    plan = "\n".join(r[0] for r in db.rows(con, "EXPLAIN (ANALYZE, COSTS OFF) " + FOUNDING_QUERY))
    assert "events_2021_03" not in plan or "never executed" in plan.split("events_2021_03")[1][:80]


def test_eventid_helpers_round_trip(con):
    t = datetime(2026, 11, 28, 12, 34, 56, tzinfo=UTC)
    eventid = db.scalar(con, "select km2pg.make_eventid(42, :t)", t=t)
    assert eventid & 0xFFFFFFFF == 42
    assert db.scalar(con, "select km2pg.eventid_time(:e)", e=eventid) == t
    assert db.scalar(con, "select km2pg.eventid_floor(:t)", t=t) == eventid - 42


def test_the_database_refuses_an_eventid_that_does_not_encode_its_event(con):
    con.run("select km2pg.ensure_month_partitions('2026-01-15')")
    with pytest.raises(DatabaseError, match="events_eventid_encodes_userid_and_t"):
        con.run(
            "insert into km2pg.events values (km2pg.make_eventid(1, '2026-01-15'), 2, '2026-01-15')"
        )
