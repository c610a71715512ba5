"""Retention: drop whole month partitions older than the cutoff, delete the rest of the boundary
month. Dictionaries (users, aliases, actions, keys), the ledger and rejects stay.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

from km2pg import db
from km2pg.db import Connection
from km2pg.errors import ConfigError

FACT_TABLES: Final = ("event_properties", "event_actions", "events")
_PARTITION: Final = re.compile(r"^events_(\d{4})_(\d{2})$")


@dataclass
class PruneResult:
    cutoff: datetime
    dry_run: bool
    partitions: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


def month_partitions(con: Connection) -> list[tuple[datetime, str]]:
    """(month start, suffix) of every month that has partitions, oldest first."""
    names = db.rows(
        con,
        """
        SELECT c.relname FROM pg_inherits i
          JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'km2pg.events'::regclass
        """,
    )
    months = []
    for (name,) in names:
        match = _PARTITION.match(name)
        if match:
            start = datetime(int(match.group(1)), int(match.group(2)), 1, tzinfo=UTC)
            months.append((start, f"{match.group(1)}_{match.group(2)}"))
    return sorted(months)


def _next_month(start: datetime) -> datetime:
    return (start + timedelta(days=32)).replace(day=1)


def prune(
    con: Connection,
    older_than_days: float,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
) -> PruneResult:
    """Remove events older than ``older_than_days`` (and their actions and properties).

    Waits for loads in flight (they hold the partition lock shared) and holds new ones off.
    """
    if older_than_days < 0:
        raise ConfigError("--older-than must be zero or more days")
    # Whole seconds, like event times, so events and their actions are cut at the same place.
    cutoff = ((now or datetime.now(UTC)) - timedelta(days=older_than_days)).replace(microsecond=0)
    result = PruneResult(cutoff=cutoff, dry_run=dry_run)
    con.run("BEGIN")
    try:
        con.run(
            "SELECT pg_advisory_xact_lock(:ns, :key)", ns=db.LOCK_NAMESPACE, key=db.LOCK_PARTITIONS
        )
        for start, suffix in month_partitions(con):
            if _next_month(start) <= cutoff:
                _drop_month(con, suffix, result)
            elif start < cutoff:
                _delete_before(con, suffix, cutoff, result)
    except BaseException:
        db.rollback_quietly(con)
        raise
    # A dry run does all the work, counts it, and takes none of it.
    con.run("ROLLBACK" if dry_run else "COMMIT")
    return result


def _count(con: Connection, sql: str, **params: object) -> int:
    return int(db.scalar(con, sql, **params) or 0)


def _drop_month(con: Connection, suffix: str, result: PruneResult) -> None:
    for table in FACT_TABLES:
        partition = f"km2pg.{table}_{suffix}"
        # Partition names come from pg_catalog and match our own pattern; no data reaches here.
        result.rows[table] = result.rows.get(table, 0) + _count(
            con, f"SELECT count(*) FROM {partition}"
        )
        con.run(f"DROP TABLE {partition}")
        result.partitions.append(partition)


def _delete_before(con: Connection, suffix: str, cutoff: datetime, result: PruneResult) -> None:
    for table in ("event_properties", "event_actions"):
        con.run(
            f"DELETE FROM km2pg.{table}_{suffix} WHERE eventid < km2pg.eventid_floor(:cutoff)",
            cutoff=cutoff,
        )
        result.rows[table] = result.rows.get(table, 0) + int(con.row_count or 0)
    con.run(f"DELETE FROM km2pg.events_{suffix} WHERE t < :cutoff", cutoff=cutoff)
    result.rows["events"] = result.rows.get("events", 0) + int(con.row_count or 0)
