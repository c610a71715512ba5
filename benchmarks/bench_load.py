"""Load one synthetic export file and compare with the floor: PostgreSQL COPY of the final rows.

Run: ``.venv/bin/python benchmarks/bench_load.py [--lines N] [--keep]``.

1. Write a clean synthetic export of N lines in one file (timed apart, not measured).
2. Start a throwaway embedded PostgreSQL with the durable settings a user gets, and warm it up
   with one load into a scratch database (a new server creates WAL files a used one recycles).
3. Load the file with the real command line, in a child process: wall time and peak RSS.
4. The floor: COPY the final rows of every table the load wrote into bare tables (no indexes,
   no constraints, plain logged tables) and time only those COPYs; then the same into tables
   with km2pg's keys and checks (what keeping the keys costs, whoever loads).
5. Load the file again (the skip path), and once more in-process on a fresh database to show
   the load's own per-step timings.
6. With $KM2PG_BENCH_CITUS_DSN set: load the file into a Citus cluster too, and time the
   founding query there and on the embedded PostgreSQL (see :func:`citus_row`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from common import (
    MB,
    ChildRun,
    checkpoint,
    drop_database,
    embedded_server,
    rate,
    run_load,
    work_folder,
)
from km2pg import db, local, synth
from km2pg.dsn import ConnectionSettings, parse_dsn
from km2pg.load import LoadResult, load_file, prepare_connection
from km2pg.sources import local_file

DEFAULT_LINES: Final = 1_000_000
SEED: Final = 20_240_601
DATABASE: Final = "bench"
STEPS_DATABASE: Final = "bench_steps"
WARM_UP_DATABASE: Final = "bench_warm_up"
FLOOR_SCHEMA: Final = "bench_floor"
READ_CHUNK: Final = 1 << 20

# Every table a load writes facts or dictionaries into, in load order.
TABLES: Final = (
    "users",
    "aliases",
    "actions",
    "keys",
    "events",
    "event_actions",
    "event_properties",
)


@dataclass(frozen=True)
class FloorTable:
    table: str
    rows: int
    mb: float
    seconds: float


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--lines", type=int, default=DEFAULT_LINES, help="lines in the file")
    parser.add_argument(
        "--keep", action="store_true", help="keep the work folder (the export and floor files)"
    )
    args = parser.parse_args(argv)
    if args.lines < 1:
        parser.error("--lines must be at least 1")
    return args


def warm_up(server: local.EmbeddedServer, path: Path) -> None:
    """Load the file once into a scratch database first, not measured: a new server creates its
    WAL files as they fill, which a server in use recycles, and users run the latter."""
    settings = local.ensure_database(server, WARM_UP_DATABASE)
    run = run_load(path, server.dsn(WARM_UP_DATABASE))
    print(f"warm-up load (not measured, new WAL files): {run.seconds:.2f} s, exit {run.exit_code}")
    drop_database(server, WARM_UP_DATABASE)
    checkpoint(settings.with_database("postgres"))


def file_status(settings: ConnectionSettings) -> list[str]:
    with db.connection(settings) as con:
        return [str(r[0]) for r in db.rows(con, "SELECT status FROM km2pg.files ORDER BY fileid")]


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as source:
        while chunk := source.read(READ_CHUNK):
            yield chunk


# How the floor's tables are made. Bare: the floor, same columns and types and nothing
# else (no NOT NULL, keys, checks, partitions). Keyed: the same primary keys, unique constraints,
# indexes and checks as km2pg's tables (not partitioned): what storing the final rows costs at
# the least once the keys that make loads idempotent must be kept.
FLOOR_TABLES: Final = {
    "bare": "{target} AS SELECT * FROM km2pg.{table} WITH NO DATA",
    "keyed": "{target} (LIKE km2pg.{table} INCLUDING CONSTRAINTS INCLUDING INDEXES)",
}


def export_final_rows(settings: ConnectionSettings, folder: Path) -> dict[str, int]:
    """COPY each table's final rows out to ``folder``; returns the row counts."""
    folder.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    with db.connection(settings) as con:
        for table in TABLES:
            with (folder / f"{table}.copy").open("wb") as out:
                con.run(f"COPY (SELECT * FROM km2pg.{table}) TO STDOUT", stream=out)
            counts[table] = int(con.row_count or 0)
    return counts


def measure_floor(
    settings: ConnectionSettings, folder: Path, counts: dict[str, int], kind: str
) -> list[FloorTable]:
    """Time COPY of the exported final rows into tables made as ``FLOOR_TABLES[kind]`` says."""
    with db.connection(settings) as con:
        con.run(f"DROP SCHEMA IF EXISTS {FLOOR_SCHEMA} CASCADE")
        con.run(f"CREATE SCHEMA {FLOOR_SCHEMA}")
        for table in TABLES:
            target = f"{FLOOR_SCHEMA}.{table}"
            con.run("CREATE TABLE " + FLOOR_TABLES[kind].format(target=target, table=table))
    checkpoint(settings)
    results = []
    with db.connection(settings) as con:
        for table in TABLES:
            path = folder / f"{table}.copy"
            started = time.perf_counter()
            con.run(f"COPY {FLOOR_SCHEMA}.{table} FROM STDIN", stream=_chunks(path))
            seconds = time.perf_counter() - started
            results.append(FloorTable(table, counts[table], path.stat().st_size / MB, seconds))
        con.run(f"DROP SCHEMA {FLOOR_SCHEMA} CASCADE")
    return results


def load_in_process(server: local.EmbeddedServer, path: Path) -> LoadResult:
    """One more load, in this process on a fresh database, for the load's per-step timings."""
    settings = local.ensure_database(server, STEPS_DATABASE)
    checkpoint(settings)
    with db.connection(settings) as con:
        prepare_connection(con)
        return load_file(con, local_file(path))


def report(
    lines: int,
    file_mb: float,
    load: ChildRun,
    skip: ChildRun,
    floors: dict[str, list[FloorTable]],
    steps: LoadResult,
) -> None:
    seconds = {kind: sum(f.seconds for f in floor) for kind, floor in floors.items()}
    print()
    print("floor: COPY of the final rows into bare tables, and into tables with km2pg's keys")
    print(f"  {'table':<17} {'rows':>12} {'MB':>8} {'bare s':>8} {'keyed s':>8}")
    for bare, keyed in zip(floors["bare"], floors["keyed"], strict=True):
        print(
            f"  {bare.table:<17} {bare.rows:>12,} {bare.mb:>8.1f} "
            f"{bare.seconds:>8.2f} {keyed.seconds:>8.2f}"
        )
    total_rows = sum(f.rows for f in floors["bare"])
    total_mb = sum(f.mb for f in floors["bare"])
    print(
        f"  {'total':<17} {total_rows:>12,} {total_mb:>8.1f} "
        f"{seconds['bare']:>8.2f} {seconds['keyed']:>8.2f}"
    )

    print()
    print("per-step timings of an in-process load on a fresh database (seconds)")
    for name, step_seconds in steps.timings.items():
        print(f"  {name:<17} {step_seconds:>8.2f}")
    print(f"  {'total':<17} {steps.seconds:>8.2f}  ({rate(steps.lines, steps.seconds)} lines/s)")
    print(
        f"  rows: {steps.events:,} events, {steps.actions:,} actions, "
        f"{steps.properties:,} properties, {steps.aliases:,} aliases, {steps.rejects:,} rejects"
    )

    def ratio(floor_seconds: float) -> float:
        return load.seconds / floor_seconds if floor_seconds > 0 else float("inf")

    print()
    header = (
        f"{'lines':>10} {'file MB':>8} {'km2pg s':>8} {'lines/s':>9} {'floor s':>8} "
        f"{'ratio':>6} {'keyed s':>8} {'ratio':>6} {'peak RSS MB':>11} {'skip s':>7}"
    )
    print(header)
    print("-" * len(header))
    print(
        f"{lines:>10,} {file_mb:>8.1f} {load.seconds:>8.2f} {rate(lines, load.seconds):>9} "
        f"{seconds['bare']:>8.2f} {ratio(seconds['bare']):>6.2f} "
        f"{seconds['keyed']:>8.2f} {ratio(seconds['keyed']):>6.2f} "
        f"{load.peak_rss_mb:>11.1f} {skip.seconds:>7.2f}"
    )


# ---------------------------------------------------------------------------------------------
# The Citus row: the same file into a Citus cluster, when one is named


CITUS_DSN_ENV: Final = "KM2PG_BENCH_CITUS_DSN"
"""A database on a Citus coordinator with its workers registered (``scripts/citus.sh dsn``).
The bench drops its km2pg schema and loads into a fresh one, distributed by ``km2pg load``."""
FOUNDING_QUERY: Final = """
SELECT count(1)
  FROM km2pg.events e
  JOIN km2pg.event_actions USING (eventid)
  JOIN km2pg.actions a USING (actionid)
 WHERE a.name = 'checkout successful'
   AND e.t >= now() - interval '1 week'
"""
FOUNDING_RUNS: Final = 5


def founding_query(settings: ConnectionSettings) -> tuple[int, float, list[str]]:
    """The founding query's answer, its best time of a few runs (ms) and its plan's top lines."""
    with db.connection(settings) as con:
        best = float("inf")
        answer = 0
        for _ in range(FOUNDING_RUNS):
            started = time.perf_counter()
            answer = int(db.scalar(con, FOUNDING_QUERY))
            best = min(best, time.perf_counter() - started)
        plan = [str(r[0]) for r in db.rows(con, f"EXPLAIN {FOUNDING_QUERY}")]
    return answer, best * 1000, plan


def citus_row(path: Path, lines: int, plain: ConnectionSettings) -> None:
    """Load ``path`` into the Citus database named by $KM2PG_BENCH_CITUS_DSN, if set, and print
    lines/s and the founding query's time and plan beside plain PostgreSQL's (``plain``)."""
    dsn = os.environ.get(CITUS_DSN_ENV)
    if not dsn:
        print(f"\nno Citus row: set {CITUS_DSN_ENV} (see README: Beyond one machine)")
        return
    settings = parse_dsn(dsn)
    with db.connection(settings) as con:
        con.run("DROP SCHEMA IF EXISTS km2pg CASCADE")
        workers = len(db.rows(con, "SELECT * FROM citus_get_active_worker_nodes()"))
    load = run_load(path, dsn)
    print()
    print(f"Citus ({workers} workers, {settings.describe()}):")
    print(
        f"  km2pg load: {load.seconds:.2f} s, {rate(lines, load.seconds)} lines/s, "
        f"exit {load.exit_code}"
    )
    for name, target in (("plain PostgreSQL", plain), ("Citus", settings)):
        answer, ms, plan = founding_query(target)
        print(f"  founding query on {name}: {answer:,} in {ms:.1f} ms (best of {FOUNDING_RUNS})")
        for line in plan[: 6 if name == "Citus" else 0]:
            print(f"    {line}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    lines: int = args.lines
    with work_folder("km2pg-bench-", keep=args.keep) as work:
        started = time.perf_counter()
        summary = synth.generate_export(work / "export", lines=lines, files=1, seed=SEED)
        path = summary.files[0]
        file_mb = path.stat().st_size / MB
        print(
            f"generated {lines:,} lines ({file_mb:.1f} MB) in "
            f"{time.perf_counter() - started:.1f} s (not measured): {path}"
        )
        with embedded_server(work) as server:
            warm_up(server, path)
            settings = local.ensure_database(server, DATABASE)
            checkpoint(settings)
            load = run_load(path, server.dsn(DATABASE))
            print(
                f"km2pg load: {load.seconds:.2f} s, {rate(lines, load.seconds)} lines/s, "
                f"peak RSS {load.peak_rss_mb:.1f} MB, exit {load.exit_code}"
            )
            skip = run_load(path, server.dsn(DATABASE))
            print(f"km2pg load again (skipped): {skip.seconds:.2f} s, exit {skip.exit_code}")
            statuses = file_status(settings)
            if load.exit_code or skip.exit_code or statuses != ["loaded", "skipped"]:
                print(f"unexpected outcome: ledger {statuses}", file=sys.stderr)
                return 1

            counts = export_final_rows(settings, work / "floor")
            floors = {
                kind: measure_floor(settings, work / "floor", counts, kind) for kind in FLOOR_TABLES
            }
            steps = load_in_process(server, path)
            if steps.status != "loaded":
                print(f"in-process load: {steps.status} {steps.error}", file=sys.stderr)
                return 1
            report(lines, file_mb, load, skip, floors, steps)
            citus_row(path, lines, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
