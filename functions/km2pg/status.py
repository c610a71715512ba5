"""What has been loaded: the ledger's totals, freshness, table sizes and the latest errors."""

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
    tables: dict[str, int] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("newest_event", "last_load"):
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


def status(con: Connection, errors: int = 5) -> Status:
    result = Status(schema_version=db.schema_version(con))
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
    """Size over all partitions and estimated rows (exact counts would scan everything).

    The table itself is added to its partition tree: PostgreSQL 15 and older list no tree for
    a table without partitions."""
    if citus.is_citus_table(con, relation):
        return citus.size_and_rows(con, relation)
    size, estimate = db.rows(
        con,
        """
        SELECT coalesce(sum(pg_total_relation_size(relid)), 0),
               coalesce(sum(greatest(c.reltuples, 0)), 0)
          FROM (SELECT relid FROM pg_partition_tree(CAST(:t AS regclass))
                UNION SELECT CAST(:t AS regclass)) AS p
          JOIN pg_class c ON c.oid = p.relid
         WHERE c.relkind <> 'p'  -- a partitioned table may hold its partitions' total rows
        """,
        t=relation,
    )[0]
    return int(size), int(estimate)
