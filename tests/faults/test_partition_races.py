"""Month partitions made or dropped by another session while a loader waits for the partition
lock: the loader sees the change once it has the lock, and its load completes."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from km2pg import db, load
from km2pg.dsn import ConnectionSettings
from km2pg.load import LoadResult
from km2pg.sources import local_file
from tests.helpers import write_export

FACT_TABLES = ("events", "event_actions", "event_properties")


def _file(folder: Path, revision: int, month: int, person: str) -> Path:
    t = int(datetime(2026, month, 15, tzinfo=UTC).timestamp())
    lines = [{"_p": person, "_t": t + n, "_n": "visited", "page": str(n)} for n in range(50)]
    return write_export(folder, revision, lines)


def _partitions(month: int) -> list[str]:
    return [f"km2pg.{table}_2026_{month:02d}" for table in FACT_TABLES]


class _Loader(threading.Thread):
    """Loads one file on its own connection, in a thread, so the test can act meanwhile."""

    def __init__(self, con: db.Connection, path: Path) -> None:
        super().__init__(daemon=True)
        self.con, self.path = con, path
        self.result: LoadResult | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = load.load_file(self.con, local_file(self.path))
        except BaseException as error:
            self.error = error


def _wait_until_waiting_for_the_partition_lock(settings: ConnectionSettings, pid: int) -> None:
    deadline = time.monotonic() + 60
    with db.connection(settings) as con:
        while not db.scalar(
            con,
            """
            select count(*) from pg_locks where pid = :pid and locktype = 'advisory'
               and not granted and classid::bigint = :ns and objid::bigint = :key
            """,
            pid=pid,
            ns=db.LOCK_NAMESPACE,
            key=db.LOCK_PARTITIONS,
        ):
            assert time.monotonic() < deadline, "the loader never waited for the partition lock"
            time.sleep(0.01)  # polling the server for the state we wait for


def _load_while_partitions_change(
    settings: ConnectionSettings, first: Path, second: Path, change: str
) -> LoadResult:
    """Load ``first``, then ``second`` on the same connection while another session, holding
    the partition lock (as a loader creating partitions or a prune does), runs ``change``
    and commits once the loader waits for that lock."""
    con = db.connect(settings)
    other = db.connect(settings)
    try:
        load.prepare_connection(con)
        assert load.load_file(con, local_file(first)).status == "loaded"
        pid = int(db.scalar(con, "select pg_backend_pid()"))
        other.run("BEGIN")
        other.run(
            "SELECT pg_advisory_xact_lock(:ns, :key)", ns=db.LOCK_NAMESPACE, key=db.LOCK_PARTITIONS
        )
        other.run(change)
        loader = _Loader(con, second)
        loader.start()
        _wait_until_waiting_for_the_partition_lock(settings, pid)
        other.run("COMMIT")
        loader.join(timeout=120)
        assert not loader.is_alive(), "the load never finished"
    finally:
        db.close_quietly(other)
        db.close_quietly(con)
    assert loader.error is None, repr(loader.error)
    assert loader.result is not None
    return loader.result


def test_a_loader_that_waited_while_another_created_the_months_partitions_uses_them(
    database, tmp_path
):
    """Regression: the waiting loader's catalog cache still said the partitions were missing
    (an advisory lock does not make a session read others' catalog changes), so it created
    them again and failed with 'relation "events_2026_08" already exists'."""
    first = _file(tmp_path / "a", 1, 6, "ann")
    second = _file(tmp_path / "b", 2, 8, "bob")
    change = "SELECT km2pg.ensure_month_partitions(make_timestamptz(2026, 8, 1, 0, 0, 0, 'UTC'))"
    result = _load_while_partitions_change(database, first, second, change)
    assert (result.status, result.events) == ("loaded", 50)


def test_a_loader_that_waited_while_its_months_partitions_were_pruned_makes_them_again(
    database, tmp_path
):
    """Partitions dropped (a prune) while the loader waited: it makes them again and loads."""
    first = _file(tmp_path / "a", 1, 6, "ann")
    second = _file(tmp_path / "b", 2, 6, "bob")
    change = f"DROP TABLE {', '.join(_partitions(6))}"
    result = _load_while_partitions_change(database, first, second, change)
    assert (result.status, result.events) == ("loaded", 50)
    with db.connection(database) as con:
        assert db.scalar(con, "select count(*) from km2pg.events") == 50
