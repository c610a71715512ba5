"""Month partitions made on demand, by loaders that race each other for the same months."""

from __future__ import annotations

import threading
import time

from km2pg import db, store
from km2pg.dsn import ConnectionSettings


def _wait_until_waiting_for_a_lock(con: db.Connection, pid: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    sql = "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = :pid"
    while time.monotonic() < deadline:
        if db.scalar(con, sql, pid=pid):
            return
        time.sleep(0.005)
    raise AssertionError("the second loader never waited for the partition lock")


def _race_for(month: tuple[int, int], first: db.Connection, second: db.Connection) -> object:
    """``first`` creates the month under the partition lock while ``second`` asks for it too."""
    # The second loader has looked the month up just before (its catalog cache says missing).
    assert store.missing_partitions(second, [month]) == [month]
    db.scalar(second, f"SELECT to_regclass('km2pg.events_{month[0]}_{month[1]:02d}')")
    first.run("BEGIN")
    first.run(
        "SELECT pg_advisory_xact_lock(:ns, :key)", ns=db.LOCK_NAMESPACE, key=db.LOCK_PARTITIONS
    )
    first.run(
        "SELECT km2pg.ensure_month_partitions(make_timestamptz(:y, :m, 1, 0, 0, 0, 'UTC'))",
        y=month[0],
        m=month[1],
    )
    outcome: list[object] = []

    def create() -> None:
        try:
            outcome.append(store.create_partitions(second, [month]))
        except Exception as error:
            outcome.append(error)

    second_pid = db.scalar(second, "SELECT pg_backend_pid()")
    worker = threading.Thread(target=create)
    worker.start()
    _wait_until_waiting_for_a_lock(first, second_pid)
    first.run("COMMIT")
    worker.join(timeout=60)
    return outcome[0] if outcome else "still waiting"


def test_a_loader_that_waited_for_another_to_create_a_partition_uses_it(
    database: ConnectionSettings,
) -> None:
    first, second = db.connect(database), db.connect(database)
    try:
        store.create_partitions(second, [(2031, 12)])  # the second has made partitions before
        # A stale catalog cache shows only now and then: race for a few months.
        for month in [(2031, m) for m in range(1, 9)]:
            assert _race_for(month, first, second) == 0, f"{month}: nothing left to create"
            assert store.missing_partitions(second, [month]) == []
    finally:
        db.close_quietly(first)
        db.close_quietly(second)
