"""What has been loaded: the ledger's totals, freshness, table sizes and the latest errors.

Before the first file arrives, it says so, with the time since the schema was created (when
km2pg was first deployed or run against this database).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from km2pg import citus, db
from km2pg.db import Connection


@dataclass
class Status:
    files: dict[str, int] = field(default_factory=dict)
    lines: int = 0
    rejects: int = 0
    newest_event: datetime | None = None
    lag_seconds: float | None = None
    last_load: datetime | None = None
    schema_version: int = 0
    installed_at: datetime | None = None
    """When the schema was created: its first migration's time."""
    tables: dict[str, int] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def no_file_yet(self) -> bool:
        """Nothing in the ledger: no file from Kissmetrics has arrived (or been loaded) yet."""
        return sum(self.files.values()) == 0

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["no_file_yet"] = self.no_file_yet
        for key in ("newest_event", "last_load", "installed_at"):
            value = data[key]
            data[key] = value.isoformat() if value else None
        for error in data["errors"]:
            error["at"] = error["at"].isoformat()
        return data


_TABLES = (
    "events",
    "event_actions",
    "event_properties",
    "users",
    "aliases",
    "actions",
    "keys",
    "files",
    "rejects",
)


# The table and, for a partitioned one, all its partitions (pg_partition_tree gives nothing for a
# plain table). Row counts are estimates (exact counts would scan everything): the planner's, or
# for a table never analyzed yet, the statistics system's live row count. A partitioned parent's
# own estimate (its partitions' total, once analyzed) is not added to theirs.
_TABLE_SIZE = """
SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0),
       coalesce(sum(CASE WHEN c.relkind = 'p' THEN 0
                         WHEN c.reltuples >= 0 THEN c.reltuples
                         ELSE coalesce(s.n_live_tup, 0) END), 0)
  FROM pg_class c
  LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
 WHERE c.oid = CAST(:t AS regclass)
    OR c.oid IN (SELECT relid FROM pg_partition_tree(CAST(:t AS regclass)))
"""


def status(con: Connection, errors: int = 5) -> Status:
    result = Status(schema_version=db.schema_version(con))
    result.installed_at = db.scalar(con, "SELECT min(applied_at) FROM km2pg.schema_migrations")
    for state, count in db.rows(con, "SELECT status, count(*) FROM km2pg.files GROUP BY 1"):
        result.files[state] = int(count)
    for state in ("loaded", "skipped", "failed"):
        result.files.setdefault(state, 0)
    lines, rejects, newest, last = db.rows(
        con,
        """
        SELECT coalesce(sum(lines), 0), coalesce(sum(rejects), 0), max(max_t), max(finished_at)
          FROM km2pg.files WHERE status = 'loaded'
        """,
    )[0]
    result.lines, result.rejects = int(lines), int(rejects)
    result.newest_event, result.last_load = newest, last
    if newest is not None:
        result.lag_seconds = (datetime.now(UTC) - newest).total_seconds()
    for table in _TABLES:
        result.tables[table], result.rows[table] = _size_and_rows(con, f"km2pg.{table}")
    for path, error, at in db.rows(
        con,
        """
        SELECT path, error, finished_at FROM km2pg.files
         WHERE status = 'failed' ORDER BY finished_at DESC, fileid DESC LIMIT :n
        """,
        n=errors,
    ):
        result.errors.append({"path": path, "error": error, "at": at})
    return result


def _size_and_rows(con: Connection, relation: str) -> tuple[int, int]:
    """Size over all partitions (on Citus: over all shards) and estimated rows."""
    if citus.is_citus_table(con, relation):
        return citus.size_and_rows(con, relation)
    size, estimate = db.rows(con, _TABLE_SIZE, t=relation)[0]
    return int(size), int(estimate)
