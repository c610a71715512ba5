"""The schema: migrations, the founding query's shape, and the helpers it ships."""

from __future__ import annotations

import multiprocessing
import re
import time
from datetime import UTC, datetime, timedelta

import pytest
from pg8000.exceptions import DatabaseError

from km2pg import db, load
from km2pg.cli.demo import FOUNDING_QUERY
from km2pg.dsn import ConnectionSettings
from km2pg.sources import local_file
from tests import citus_cluster
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


@citus_cluster.single_node(
    "reads partition scans in the coordinator's plan; on Citus they are in the workers' tasks"
    " (tests/citus: test_the_founding_query_is_pushed_down_to_the_workers)"
)
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
    # A month is read exactly when it ends after the week's start; the others are pruned.
    months = {_month(t) for t in (now - 3600, now - 8 * 86400, old)}
    week_start = datetime.fromtimestamp(now - 7 * 86400, UTC)
    recent = {name for name, end in months if end > week_start}
    assert "events_2021_03" not in recent
    assert set(re.findall(r" on (events_\d{4}_\d{2}) ", plan)) == recent
    assert f"Subplans Removed: {len(months) - len(recent)}" in plan


def _month(t: int) -> tuple[str, datetime]:
    """A month's events partition and the moment it ends."""
    start = datetime.fromtimestamp(t, UTC).replace(day=1, hour=0, minute=0, second=0)
    end = start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    return f"events_{start:%Y_%m}", end


def _eventid(con: db.Connection, userid: int, t: datetime) -> int:
    return int(db.scalar(con, "select km2pg.make_eventid(:u, :t)", u=userid, t=t))


def test_eventid_is_the_seconds_since_2000_shifted_32_bits_left_or_the_userid(con):
    # The values are worked out by hand from README's ((seconds since 2000-01-01) << 32) | userid.
    assert _eventid(con, 7, datetime(2000, 1, 1, 0, 0, 10, tzinfo=UTC)) == 42949672967
    assert _eventid(con, 1, datetime(2000, 1, 2, tzinfo=UTC)) == 371085174374401  # 86400 << 32
    assert _eventid(con, 4294967295, datetime(2000, 1, 1, tzinfo=UTC)) == 4294967295
    assert db.scalar(con, "select km2pg.eventid_time(42949672967)") == datetime(
        2000, 1, 1, 0, 0, 10, tzinfo=UTC
    )
    assert db.scalar(con, "select km2pg.eventid_floor('2000-01-01T00:00:10Z')") == 42949672960


def test_a_loaded_event_has_the_eventid_of_its_userid_and_second(con, tmp_path):
    # 2026-11-01T00:00:00Z is 846806400 s after 2000-01-01; the first identity gets userid 1.
    write_export(tmp_path, 1, [{"_p": "ann", "_t": 1793491200, "_n": "visited site"}])
    load.load_file(con, local_file(tmp_path / "revisions" / "1.json"))
    assert db.rows(con, "select eventid, userid from km2pg.events") == [[3637005794043494401, 1]]
    assert db.rows(con, "select eventid from km2pg.event_actions") == [[3637005794043494401]]


def test_the_last_second_an_eventid_encodes_is_2068_01_19_03_14_07(con):
    """The high half is a signed bigint's 31 bits: (2**31 - 1) seconds after 2000-01-01 is the
    last second it holds. The next one wraps to a negative number that encodes nothing."""
    last = datetime(2068, 1, 19, 3, 14, 7, tzinfo=UTC)
    assert _eventid(con, 7, last) == 9223372032559808519  # ((2**31 - 1) << 32) | 7
    assert db.scalar(con, "select km2pg.eventid_time(9223372032559808519)") == last
    beyond = _eventid(con, 7, last + timedelta(seconds=1))
    assert beyond == -9223372036854775801  # (2**31 << 32) | 7, wrapped to a negative bigint
    assert db.scalar(con, "select km2pg.eventid_time(:e)", e=beyond) != last + timedelta(seconds=1)


def test_events_are_stored_until_the_end_of_2067_and_january_2068_has_no_partition(con):
    """January 2068's eventid range ends past the encoding's last second, so its partitions
    cannot be made: the last second an event can be stored at is 2067-12-31T23:59:59Z."""
    assert db.scalar(con, "select km2pg.ensure_month_partitions('2067-12-01T00:00:00Z')") is True
    con.run("insert into km2pg.users values (7, 'u7', 7)")
    last = datetime(2067, 12, 31, 23, 59, 59, tzinfo=UTC)
    stored = db.scalar(
        con,
        "insert into km2pg.events values (km2pg.make_eventid(7, :t), 7, :t) returning eventid",
        t=last,
    )
    assert stored == 9216642471642005511  # (2145916799 << 32) | 7
    with pytest.raises(DatabaseError, match="empty range bound"):
        con.run("select km2pg.ensure_month_partitions('2068-01-01T00:00:00Z')")


def test_the_database_refuses_an_eventid_that_does_not_encode_its_event(con):
    con.run("select km2pg.ensure_month_partitions('2026-01-15')")
    with pytest.raises(DatabaseError, match="events_eventid_encodes_userid_and_t"):
        con.run(
            "insert into km2pg.events values (km2pg.make_eventid(1, '2026-01-15'), 2, '2026-01-15')"
        )
