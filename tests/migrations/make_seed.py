"""Write the seed of the current schema version: ``python -m tests.migrations.make_seed``.

The seed is what a real database at this version holds: the recipe (:func:`load_recipe`) loads a
small synthetic export with the current loader (several months, merged identities, rejects), a
file twice (the second load is skipped), a file with too many bad lines (failed) and the reload
probe. :func:`dump_sql` then writes every km2pg table as SQL in this version's own terms:
partitions, rows with their ids, and sequence positions. The result is frozen: once a later
version exists it stands for the databases that were left at this one, so it is never
regenerated. It runs against ``$KM2PG_TEST_DSN`` if set, else a throwaway embedded PostgreSQL.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from km2pg import db, load
from km2pg.cli import synth
from km2pg.dsn import ConnectionSettings, parse_dsn
from km2pg.sources import local_file
from tests.migrations.harness import (
    FAILING,
    PROBE,
    current_version,
    scratch_database,
    seed_path,
    version_label,
)


def synthetic_export(workdir: Path) -> synth.ExportSummary:
    """A small synthetic export over four months; messy, so some of its lines are rejected."""
    return synth.generate_export(
        workdir,
        lines=300,
        files=3,
        days=100,
        end=datetime(2025, 3, 20, 12, tzinfo=UTC),
        seed=7,
        messy=True,
        first_revision=22770,
    )


LEDGER_TIMES: Final = datetime(2025, 3, 21, tzinfo=UTC)


def load_recipe(con: db.Connection, workdir: Path) -> list[load.LoadResult]:
    """Load what a seed holds into a migrated database, with the current loader."""
    load.prepare_connection(con)
    export = synthetic_export(workdir)
    files = [*export.files, export.files[0], FAILING, PROBE]
    results = [load.load_file(con, local_file(path)) for path in files]
    # The ledger's paths and times say where and when this run happened: make them the same
    # for every run.
    con.run(
        """
        update km2pg.files set source = 'seed', path = 'seed/' || export_key,
               started_at = cast(:t AS timestamptz) + fileid * interval '1 minute'
        """,
        t=LEDGER_TIMES,
    )
    con.run("update km2pg.files set finished_at = started_at + interval '2 seconds'")
    return results


# ---------------------------------------------------------------------------------------------
# Dumping a database as SQL


def dump_sql(con: db.Connection, schema: str = db.SCHEMA) -> str:
    """The data of every table in ``schema`` (but the migration history) as SQL statements:
    partitions first, then rows in foreign-key order with their ids, then sequence positions."""
    con.run("SET TIME ZONE 'UTC'; SET DateStyle = 'ISO, YMD'; SET extra_float_digits = 3")
    out: list[str] = []
    partitions = db.rows(
        con,
        """
        select quote_ident(c.relname), quote_ident(p.relname), pg_get_expr(c.relpartbound, c.oid)
          from pg_class c join pg_inherits i on i.inhrelid = c.oid
          join pg_class p on p.oid = i.inhparent
         where c.relnamespace = to_regnamespace(:s) and c.relispartition
           and c.relkind in ('r', 'p')
         order by (select count(*) from pg_partition_ancestors(c.oid)), p.relname, c.relname
        """,
        s=schema,
    )
    for name, parent, bound in partitions:
        out.append(f"CREATE TABLE {schema}.{name} PARTITION OF {schema}.{parent} {bound};")
    for table in _tables_in_dependency_order(con, schema):
        out += _table_rows(con, schema, table)
    sequences = db.rows(
        con,
        "select quote_ident(sequencename), last_value from pg_sequences"
        " where schemaname = :s and last_value is not null order by 1",
        s=schema,
    )
    for name, value in sequences:
        out.append(f"SELECT setval('{schema}.{name}', {int(value)});")
    return "\n".join(out) + "\n"


def _tables_in_dependency_order(con: db.Connection, schema: str) -> list[str]:
    tables = [
        str(r[0])
        for r in db.rows(
            con,
            """
            select quote_ident(relname) from pg_class
             where relnamespace = to_regnamespace(:s) and relkind in ('r', 'p')
               and not relispartition and relname <> 'schema_migrations'
             order by relname
            """,
            s=schema,
        )
    ]
    references = db.rows(
        con,
        """
        select c.conrelid::regclass::text, c.confrelid::regclass::text from pg_constraint c
         where c.contype = 'f' and c.connamespace = to_regnamespace(:s)
        """,
        s=schema,
    )
    needs = {
        t: {ref.rsplit(".", 1)[-1] for own, ref in references if own.endswith(f".{t}")}
        for t in tables
    }
    ordered: list[str] = []
    while len(ordered) < len(tables):
        ready = [t for t in tables if t not in ordered and needs[t] <= {*ordered, t}]
        if not ready:
            raise RuntimeError(
                f"foreign keys form a cycle among {sorted(set(tables) - {*ordered})}"
            )
        ordered.append(ready[0])
    return ordered


def _table_rows(con: db.Connection, schema: str, table: str) -> list[str]:
    columns = db.rows(
        con,
        """
        select quote_ident(a.attname), a.attidentity, t.typcategory
          from pg_attribute a join pg_type t on t.oid = a.atttypid
         where a.attrelid = to_regclass(:t) and a.attnum > 0 and not a.attisdropped
           and a.attgenerated = ''
         order by a.attnum
        """,
        t=f"{schema}.{table}",  # as quote_ident gave it
    )
    quoted = [str(c[0]) for c in columns]
    text = ", ".join(f"x.{q}::text" for q in quoted)
    order = ", ".join(f"x.{q}" for q in quoted)
    rows = db.rows(con, f"select {text} from {schema}.{table} x order by {order}")
    if not rows:
        return []
    numeric = [c[2] == "N" for c in columns]
    overriding = " OVERRIDING SYSTEM VALUE" if any(c[1] == "a" for c in columns) else ""
    values = ",\n".join(
        "(" + ", ".join(_literal(v, n) for v, n in zip(row, numeric, strict=True)) + ")"
        for row in rows
    )
    return [f"INSERT INTO {schema}.{table} ({', '.join(quoted)}){overriding} VALUES\n{values};"]


_ESCAPES: Final = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _literal(value: str | None, numeric: bool) -> str:
    """An SQL literal for a value in its text form; non-printable characters as E'' escapes."""
    if value is None:
        return "NULL"
    if numeric:
        return value
    if value.isprintable() and "\\" not in value:
        return "'" + value.replace("'", "''") + "'"
    return "E'" + "".join(_escape(ch) for ch in value) + "'"


def _escape(ch: str) -> str:
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    if ch.isprintable():
        return ch
    return f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}"


# ---------------------------------------------------------------------------------------------
# The command


def header(version: int) -> str:
    return (
        f"-- The seed of km2pg schema {version_label(version)}: what a database at this version\n"
        "-- holds, in its own terms. Written by `python -m tests.migrations.make_seed` (see\n"
        "-- tests/migrations/README.md); the upgrade harness applies it to a database migrated\n"
        "-- to exactly this version. Frozen once a later version exists: never edit it.\n"
    )


def build_seed(admin: ConnectionSettings, workdir: Path) -> str:
    """The seed SQL of the current version, made by the recipe in a scratch database."""
    with scratch_database(admin) as settings, db.connection(settings) as con:
        db.migrate(con)
        load_recipe(con, workdir)
        return header(current_version()) + dump_sql(con)


def _admin_settings(scratch: Path) -> ConnectionSettings:
    dsn = os.environ.get("KM2PG_TEST_DSN")
    if dsn:
        return parse_dsn(dsn)
    from km2pg.cli import local

    # A temporary server is stopped and deleted when this process exits.
    server = local.start(scratch / "pgdata", local.TEST_SETTINGS, temporary=True)
    return server.settings("postgres")


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--force", action="store_true", help="overwrite an existing seed")
    args = parser.parse_args(list(argv) if argv is not None else None)
    version = current_version()
    path = seed_path(version)
    if path.exists() and not args.force:
        print(f"{path} exists; seeds are frozen (use --force only before it is merged)")
        return 1
    admin = _admin_settings(Path(tempfile.mkdtemp(prefix="km2pg-seed-server-")))
    with tempfile.TemporaryDirectory(prefix="km2pg-seed-") as workdir:
        sql = build_seed(admin, Path(workdir))
    path.write_text(sql, encoding="utf-8")
    print(f"wrote {path} ({len(sql.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
