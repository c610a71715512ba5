"""Load speed where users load, beside the floor: PostgreSQL COPY of the same final rows.

Run: ``.venv/bin/python benchmarks/bench_load.py [--lines N] [--keep]`` (``make bench``).

Three synthetic exports: one file of N lines; N lines in 10 files (Kissmetrics' hourly files are
about 100,000 lines); 4N lines in 40 files (a backfill). On two throwaway servers, each warmed up
with one unmeasured load (a new server creates WAL files a used one recycles): the embedded
server with km2pg's settings, and one with PostgreSQL's defaults (what a user's own server may
have). Every case runs as a child process, as a user runs it, for its wall time and peak RSS:

- 1 file by ``km2pg load`` (parse workers for large files, as the CLI does);
- 10 files by one process with no parse workers, one after another: the loader function's path;
- the same without person_properties' upkeep (``LoadOptions.person_properties``, a switch only
  this benchmark turns off), right after it on the same server: the upkeep's cost, as a ratio;
- 10 files by ``km2pg load``;
- 40 files by ``km2pg load --jobs 4``: four loaders at once, as the function's concurrency does.

Then the upkeep's cost on a second shape of data, "real-sample shape" (sample_shape.py): 10 files
made of the real Kissmetrics sample's people (renamed copies, the same people every file, about
as many lines as the synthetic 10 files), loaded by one process with and without the upkeep,
alternately, a few times: its ratio is printed beside the synthetic one, and the median run with
the upkeep is a row of the table, against the floors of its own final rows.

After each case, the final rows are copied out and COPYed back into bare tables and into tables
with km2pg's keys: the floors its time is compared with (same run, same server). The table ends
with the per-step time of the one-process case and the time of loading a file again (skipped).
Then "where the time goes": each step of the one-process case beside its floor, the keyed COPY
of the final rows of the table(s) it writes, and for the stage step the server's COPY of the same
staging text into the load's own staging table (see :func:`where_the_time_goes`), the writes
alone (:func:`design_floor`) and, from one more load of the same files with each fact statement's
SELECT timed alone first, what making and writing the rows takes beyond them
(:func:`design_statements`).

With $KM2PG_BENCH_CITUS_DSN set, the 1-file export is loaded into that Citus cluster too, and the
founding query is timed there and on the embedded PostgreSQL (see :func:`citus_row`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from unittest import mock

from common import (
    MB,
    ChildRun,
    checkpoint,
    drop_database,
    embedded_server,
    rate,
    run_child,
    run_load,
    work_folder,
)
from km2pg import db, store
from km2pg.cli import local, synth
from km2pg.db import Connection
from km2pg.dsn import ConnectionSettings, parse_dsn
from km2pg.export import FUTURE_SLACK_SECONDS, iter_raw_lines
from km2pg.load import LoadOptions, Lookahead, load_file, prepare_connection
from km2pg.sources import ContentStream, local_file
from km2pg.staging import STAGE_COLUMNS, StageStats, copy_export
from km2pg.store import STAGE, setup_session
from sample_shape import read_sample, write_sample_shaped_export

DEFAULT_LINES: Final = 1_000_000
SEED: Final = 20_240_601
DATABASE: Final = "bench"
WARM_UP_DATABASE: Final = "bench_warm_up"
FLOOR_SCHEMA: Final = "bench_floor"
READ_CHUNK: Final = 1 << 20
HOURLY_FILES: Final = 10
BACKFILL_FILES: Final = 40
BACKFILL_JOBS: Final = 4
SAMPLE: Final = (
    Path(__file__).resolve().parents[2] / "shared" / "samples" / "kissmetrics-demo" / "revisions"
) / "1.json"
"""The real Kissmetrics sample, read in place beside the checkout (see tests/conftest.py)."""
SAMPLE_SHAPE_RUNS: Final = 3
"""Runs of each (with, without the upkeep), alternately: the ratio is a few percent, so one run
each is within the noise."""
SERVERS: Final = {"embedded": local.LOCAL_SETTINGS, "default": {}}
"""The embedded server as km2pg starts it, and one with PostgreSQL's own defaults."""
SHOWN_SETTINGS: Final = (
    "shared_buffers",
    "max_wal_size",
    "checkpoint_timeout",
    "fsync",
    "synchronous_commit",
)
SETTINGS_NOTE: Final = """\
How the two servers differ (PostgreSQL's default -> the embedded server's):
  shared_buffers 128MB -> 256MB: the table and index pages a load touches stay in memory longer.
  max_wal_size 1GB -> 4GB and checkpoint_timeout 5min -> 15min: fewer checkpoints during a large
    load, so fewer full-page images in the WAL after each one (WAL volume is a large part of
    a load's cost).
  max_connections 100 -> 100 (the same). Both are durable (fsync on, synchronous_commit on)."""

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
UPKEEP_TABLES: Final = ("person_property_state",)
"""What person_properties' upkeep writes: its floor is measured beside the others for the
upkeep's step, but is not part of the case's floors (the issue's floor: the load's facts)."""
COPIED_TABLES: Final = TABLES + UPKEEP_TABLES
"""Every table whose final rows are copied out and COPYed back for a floor."""


STEP_FLOORS: Final = {
    "stage": ("staging",),
    "users": ("users",),
    "dictionaries": ("actions", "keys"),
    "events": ("events",),
    "event_actions": ("event_actions",),
    "event_properties": ("event_properties",),
    "aliases": ("aliases",),
    "person_properties": UPKEEP_TABLES,
}
"""The floor of each load step that writes tables of its own: the keyed COPY of those tables'
final rows ("staging": the COPY of the staging text, see :func:`stage_floor`)."""
STEP_NOTES: Final = {
    "hash": "before staging: the ledger's look-ups (a local file's MD5 if it may be a reload)",
    "suppress": "dropping staged lines of forgotten people (only when some are)",
    "merge_persons": "the merges the file's aliases make (rows moved between persons)",
    "person_properties": (
        "the upkeep: folds each person's settings into person_properties (floor: a COPY of its"
        " final rows; the upkeep's other part, each identity's first and latest setting, is in"
        " event_properties' extra)"
    ),
    "commit": "the COMMIT of each file's transaction (its WAL flushed)",
}
"""What the steps with no table of their own in the floor do: all their time is extra."""


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
    parser.add_argument(
        "--sample",
        type=Path,
        default=SAMPLE,
        help="the real export sample the real-sample-shape files are made of",
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
        for table in COPIED_TABLES:
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
        for table in COPIED_TABLES:
            target = f"{FLOOR_SCHEMA}.{table}"
            con.run("CREATE TABLE " + FLOOR_TABLES[kind].format(target=target, table=table))
    checkpoint(settings)
    results = []
    with db.connection(settings) as con:
        for table in COPIED_TABLES:
            path = folder / f"{table}.copy"
            started = time.perf_counter()
            con.run(f"COPY {FLOOR_SCHEMA}.{table} FROM STDIN", stream=_chunks(path))
            seconds = time.perf_counter() - started
            results.append(FloorTable(table, counts[table], path.stat().st_size / MB, seconds))
        con.run(f"DROP SCHEMA {FLOOR_SCHEMA} CASCADE")
    return results


@dataclass(frozen=True)
class Case:
    """One way of loading, measured on one server."""

    server: str
    name: str
    lines: int
    run: ChildRun
    floors: dict[str, float]
    """Seconds of COPY of the same final rows: "bare" and "keyed" tables."""
    keyed: dict[str, float]
    """The keyed floor per table (and "staging" where measured, see :func:`stage_floor`)."""


def floor_seconds(
    settings: ConnectionSettings, folder: Path
) -> tuple[dict[str, float], dict[str, float]]:
    """The two floors for the rows now in ``settings``' database, in seconds, and the keyed
    one per table."""
    counts = export_final_rows(settings, folder)
    tables = {kind: measure_floor(settings, folder, counts, kind) for kind in FLOOR_TABLES}
    shutil.rmtree(folder, ignore_errors=True)
    floors = {
        kind: sum(f.seconds for f in found if f.table in TABLES) for kind, found in tables.items()
    }
    return floors, {f.table: f.seconds for f in tables["keyed"]}


def write_staging_text(paths: list[Path], folder: Path) -> list[Path]:
    """Each file's staging text as the loader's parser writes it (not measured): what the
    stage step COPYs."""
    folder.mkdir(parents=True, exist_ok=True)
    latest = int(time.time()) + FUTURE_SLACK_SECONDS
    texts = []
    for path in paths:
        texts.append(folder / f"{path.name}.stage")
        with ContentStream(local_file(path)) as content, texts[-1].open("w") as out:
            out.writelines(copy_export(iter_raw_lines(content.stream), latest, StageStats()))
    return texts


def stage_floor(settings: ConnectionSettings, texts: list[Path]) -> float:
    """Seconds of the server's COPY of the staging text into the load's own staging table (a
    session's temporary, unindexed tables, as the loader sets them up), file by file: the stage
    step without its parse and ANALYZE."""
    seconds = 0.0
    with db.connection(settings) as con:
        setup_session(con)
        for text in texts:
            con.run(f"TRUNCATE {STAGE}")
            started = time.perf_counter()
            con.run(f"COPY {STAGE} ({STAGE_COLUMNS}) FROM STDIN", stream=_chunks(text))
            seconds += time.perf_counter() - started
    return seconds


UPKEEP_OFF: Final = "--no-person-properties"
NO_UPKEEP_CASE: Final = "files, one process, no person_properties"
"""The serial case with person_properties' upkeep switched off (benchmark only)."""


def run_serial(paths: list[Path], dsn: str, steps: Path, *, upkeep: bool = True) -> ChildRun:
    """Load ``paths`` one after another in one child process, parsing in that process only:
    what the loader function does with a batch of files. Its summed per-step timings are
    written to ``steps`` (JSON). ``upkeep`` False switches person_properties' upkeep off."""
    child = [sys.executable, str(Path(__file__).resolve()), "--serial-child", str(steps), dsn]
    return run_child([*child, *([] if upkeep else [UPKEEP_OFF]), *map(str, paths)])


def serial_child(steps: str, dsn: str, paths: list[str]) -> int:
    """The child of :func:`run_serial`: writes the summed per-step timings as JSON."""
    upkeep = paths[:1] != [UPKEEP_OFF]
    timings = load_serially(dsn, paths if upkeep else paths[1:], upkeep=upkeep)
    if timings is None:
        return 1
    Path(steps).write_text(json.dumps(timings))
    return 0


def load_serially(dsn: str, paths: list[str], *, upkeep: bool = True) -> dict[str, float] | None:
    """Load ``paths`` one after another as the loader function does (one process, the next file
    parsed ahead); the summed per-step timings, or None (said why) when a file did not load."""
    options = LoadOptions(parse_in_workers=False, person_properties=upkeep)
    timings: dict[str, float] = {}
    files = [local_file(Path(path)) for path in paths]
    with db.connection(parse_dsn(dsn)) as con, Lookahead() as lookahead:
        prepare_connection(con, options)
        for path, file, following in zip(paths, files, [*files[1:], None], strict=True):
            result = load_file(con, file, options, lookahead=lookahead, next_file=following)
            if result.status != "loaded":
                print(f"{path}: {result.status} {result.error}", file=sys.stderr)
                return None
            for step, seconds in result.timings.items():
                timings[step] = timings.get(step, 0.0) + seconds
    return timings


# ---------------------------------------------------------------------------------------------
# Making the rows against writing them: the fact statements' SELECTs timed alone

MAKING_CHILD: Final = "--making-child"
ENDS_KEPT: Final = " with the ends"
"""Marks the event properties statement that also keeps each pair's ends from its written rows
(when the parser did not stage them): its INSERT's extra then includes that work."""
FACT_ROWS: Final = {
    store._EVENTS: ("events", store._EVENT_ROWS),
    store._EVENT_ACTIONS: ("event_actions", store._EVENT_ACTION_ROWS),
    store._EVENT_PROPERTIES: ("event_properties", store._EVENT_PROPERTY_ROWS),
    store._EVENT_PROPERTIES_KEPT[0]: (
        "event_properties" + ENDS_KEPT,
        store._EVENT_PROPERTY_ROWS,
    ),
}
"""Each fact statement's fast form (the one a load of new rows runs), with the table it writes
and the SELECT that makes its rows."""


@dataclass(frozen=True)
class Making:
    """One more load of a case's files (:func:`making_child`): per fact statement, its SELECT
    alone and the statement as the load runs it; and the load's per-step timings."""

    selects: dict[str, float]
    statements: dict[str, float]
    steps: dict[str, float]


def measure_making(server: local.EmbeddedServer, paths: list[Path], work: Path) -> Making:
    """Load ``paths`` once more into a new database, in a child process, with each fact
    statement's SELECT timed alone first (not a case of the table: the counts add their time)."""
    settings = local.ensure_database(server, DATABASE)
    checkpoint(settings)
    out = work / "making.json"
    child = [sys.executable, str(Path(__file__).resolve()), MAKING_CHILD, str(out)]
    run = run_child([*child, server.dsn(DATABASE), *map(str, paths)])
    drop_database(server, DATABASE)
    if run.exit_code:
        raise SystemExit(f"the load that times the fact statements' SELECTs exited {run.exit_code}")
    found = json.loads(out.read_text())
    return Making(found["selects"], found["statements"], found["steps"])


def making_child(out: str, dsn: str, paths: list[str]) -> int:
    """The child of :func:`measure_making`: the files loaded as :func:`serial_child` loads them,
    each fact statement's SELECT first run alone (a count over it, in the same transaction, on
    the same staged rows), then the statement; both timed, written to ``out`` (JSON) with the
    steps."""
    selects: dict[str, float] = {}
    statements: dict[str, float] = {}
    insert = store._insert

    def timed(
        con: Connection, fast: str, safe: str, *, safe_only: bool = False, **params: Any
    ) -> tuple[int, bool]:
        if fast not in FACT_ROWS or safe_only:
            return insert(con, fast, safe, safe_only=safe_only, **params)
        name, rows = FACT_ROWS[fast]
        started = time.perf_counter()
        used = {key: value for key, value in params.items() if f":{key}" in rows}
        db.scalar(con, f"SELECT count(*) FROM ({rows}) AS made", **used)
        made = time.perf_counter()
        result = insert(con, fast, safe, safe_only=safe_only, **params)
        selects[name] = selects.get(name, 0.0) + made - started
        statements[name] = statements.get(name, 0.0) + time.perf_counter() - made
        return result

    with mock.patch.object(store, "_insert", timed):
        steps = load_serially(dsn, paths)
    if steps is None:
        return 1
    Path(out).write_text(json.dumps({"selects": selects, "statements": statements, "steps": steps}))
    return 0


def measure_server(
    label: str,
    server: local.EmbeddedServer,
    exports: dict[str, list[Path]],
    staged: list[Path],
    work: Path,
) -> tuple[list[Case], dict[str, float], ChildRun, Making]:
    """Every case on one server: the cases, the serial case's step timings, the skip run, and its
    files loaded once more with the fact statements' SELECTs timed alone. ``staged``: the hourly
    files' staging text, for the serial case's stage floor."""
    warm_up(server, exports["one"][0])
    with db.connection(server.settings("postgres")) as con:
        shown = {name: db.scalar(con, f"SHOW {name}") for name in SHOWN_SETTINGS}
    print(f"{label} server: " + ", ".join(f"{k} {v}" for k, v in shown.items()))
    cases: list[Case] = []

    def measure(
        name: str,
        database: str,
        lines: int,
        load: Callable[[str], ChildRun],
        staged: list[Path] | None = None,
    ) -> None:
        settings = local.ensure_database(server, database)
        checkpoint(settings)
        run = load(server.dsn(database))
        if run.exit_code:
            raise SystemExit(f"{label} {name}: the load exited {run.exit_code}")
        floors, keyed = floor_seconds(settings, work / "floor")
        if staged:
            keyed["staging"] = stage_floor(settings, staged)
        cases.append(Case(label, name, lines, run, floors, keyed))
        print(f"  {label:<9} {name:<44} {run.seconds:7.2f} s  {rate(lines, run.seconds)} lines/s")
        drop_database(server, database)

    one, hourly, backfill = exports["one"], exports["hourly"], exports["backfill"]
    steps = work / f"{label}-steps.json"
    total = {key: sum(_lines(p) for p in paths) for key, paths in exports.items()}
    measure("1 file, km2pg load (CLI)", DATABASE, total["one"], lambda dsn: run_load(one[0], dsn))
    # The skip path, on a database that has the file.
    settings = local.ensure_database(server, DATABASE)
    run_load(one[0], server.dsn(DATABASE))
    skip = run_load(one[0], server.dsn(DATABASE))
    if file_status(settings) != ["loaded", "skipped"]:
        raise SystemExit(f"{label}: unexpected ledger {file_status(settings)}")
    drop_database(server, DATABASE)

    measure(
        f"{len(hourly)} files, one process, no workers {SYNTHETIC_SERIAL_MARK}",
        DATABASE,
        total["hourly"],
        lambda dsn: run_serial(hourly, dsn, steps),
        staged,
    )
    timings: dict[str, float] = json.loads(steps.read_text())
    making = measure_making(server, hourly, work)
    measure(
        f"{len(hourly)} {NO_UPKEEP_CASE}",
        DATABASE,
        total["hourly"],
        lambda dsn: run_serial(hourly, dsn, work / f"{label}-no-upkeep.json", upkeep=False),
    )
    measure(
        f"{len(hourly)} files, km2pg load (CLI)",
        DATABASE,
        total["hourly"],
        lambda dsn: run_load(hourly[0].parent, dsn),
    )
    measure(
        f"{len(backfill)} files, km2pg load --jobs {BACKFILL_JOBS}",
        DATABASE,
        total["backfill"],
        lambda dsn: run_load(backfill[0].parent, dsn, jobs=BACKFILL_JOBS),
    )
    return cases, timings, skip, making


@dataclass(frozen=True)
class SampleShape:
    """The real-sample-shape files loaded by one process, with and without the upkeep."""

    lines: int
    with_upkeep: list[float]
    without: list[float]

    @staticmethod
    def median(seconds: list[float]) -> float:
        return sorted(seconds)[len(seconds) // 2]


SYNTHETIC_SERIAL_MARK: Final = "(Lambda)"
"""In the name of the synthetic hourly files' one-process case (the loader function's path)."""
SAMPLE_SHAPE_CASE: Final = "real-sample-shape files, one process"
"""The real-sample-shape files as the loader function loads them: a row of the table too."""


def measure_sample_shape(
    label: str,
    server: local.EmbeddedServer,
    paths: list[Path],
    staged: list[Path],
    work: Path,
) -> tuple[SampleShape, Case, dict[str, float], Making]:
    """The real-sample-shape files by one process, with and without the upkeep, alternately,
    each time into a new database (the without run first, so neither always goes first).
    Also the table's row for them: the median run with the upkeep against the floors of its
    final rows (measured after the last such run; ``staged``: the files' staging text, for the
    stage step's floor), and that run's per-step timings; then the files loaded once more
    with the fact statements' SELECTs timed alone."""
    runs: dict[bool, list[ChildRun]] = {True: [], False: []}
    timings: list[dict[str, float]] = []
    steps = work / "sample-steps.json"
    floors: tuple[dict[str, float], dict[str, float]] = ({}, {})
    for round_ in range(SAMPLE_SHAPE_RUNS):
        for upkeep in (False, True):
            settings = local.ensure_database(server, DATABASE)
            checkpoint(settings)
            run = run_serial(paths, server.dsn(DATABASE), steps, upkeep=upkeep)
            if run.exit_code:
                raise SystemExit(f"{label} real-sample shape: the load exited {run.exit_code}")
            runs[upkeep].append(run)
            if upkeep:
                timings.append(json.loads(steps.read_text()))
            if upkeep and round_ == SAMPLE_SHAPE_RUNS - 1:
                floors = floor_seconds(settings, work / "floor")
                floors[1]["staging"] = stage_floor(settings, staged)
            drop_database(server, DATABASE)
    seconds = {upkeep: [run.seconds for run in found] for upkeep, found in runs.items()}
    shape = SampleShape(len_lines(paths), seconds[True], seconds[False])
    middle = sorted(range(len(timings)), key=lambda i: runs[True][i].seconds)[len(timings) // 2]
    median = runs[True][middle]
    case = Case(label, f"{len(paths)} {SAMPLE_SHAPE_CASE}", shape.lines, median, *floors)
    print(
        f"  {label:<9} {len(paths)} real-sample-shape files, one process, with/without upkeep"
        f" (median of {SAMPLE_SHAPE_RUNS}): {shape.median(shape.with_upkeep):.2f} s /"
        f" {shape.median(shape.without):.2f} s"
    )
    return shape, case, timings[middle], measure_making(server, paths, work)


def len_lines(paths: list[Path]) -> int:
    return sum(_lines(p) for p in paths)


def _lines(path: Path) -> int:
    with path.open("rb") as source:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: source.read(READ_CHUNK), b""))


def report(
    cases: list[Case],
    steps: dict[str, dict[str, float]],
    skips: dict[str, float],
    shapes: dict[str, SampleShape] | None = None,
    sample_steps: dict[str, dict[str, float]] | None = None,
    making: dict[str, dict[str, Making]] | None = None,
) -> None:
    """The table, the upkeep's cost, the per-step times and where the time goes. ``making``: per
    case mark (:data:`SYNTHETIC_SERIAL_MARK`, :data:`SAMPLE_SHAPE_CASE`) and server, the load
    that timed the fact statements' SELECTs alone."""
    making = making or {}
    print()
    header = (
        f"{'server':<9} {'case':<44} {'lines':>10} {'s':>7} {'lines/s':>9} "
        f"{'bare s':>7} {'x bare':>6} {'keyed s':>7} {'x keyed':>7} {'RSS MB':>7}"
    )
    print(header)
    print("-" * len(header))
    for case in cases:
        bare, keyed = case.floors["bare"], case.floors["keyed"]
        print(
            f"{case.server:<9} {case.name:<44} {case.lines:>10,} {case.run.seconds:>7.2f} "
            f"{rate(case.lines, case.run.seconds):>9} {bare:>7.2f} "
            f"{case.run.seconds / bare:>6.2f} {keyed:>7.2f} {case.run.seconds / keyed:>7.2f} "
            f"{case.run.peak_rss_mb:>7.1f}"
        )
    for server, seconds in skips.items():
        print(f"{server}: loading the 1-file export again (skipped): {seconds:.2f} s")
    print()
    upkeep_report(cases, steps, shapes or {})
    print()
    print("per-step seconds of the one-process case (summed over its files)")
    servers = list(steps)
    print(f"  {'step':<17}" + "".join(f" {s:>10}" for s in servers))
    for step in steps[servers[0]]:
        print(f"  {step:<17}" + "".join(f" {steps[s].get(step, 0.0):>10.2f}" for s in servers))
    print(f"  {'total':<17}" + "".join(f" {sum(steps[s].values()):>10.2f}" for s in servers))
    print(
        "  (stage: the first file parsed as it is COPYed; each next one parsed in a thread while"
        " the server applied the one before, then COPYed from that spool)"
    )
    print()
    where_the_time_goes(
        cases,
        steps,
        SYNTHETIC_SERIAL_MARK,
        "the one-process case",
        making.get(SYNTHETIC_SERIAL_MARK, {}),
    )
    if sample_steps:
        print()
        where_the_time_goes(
            cases,
            sample_steps,
            SAMPLE_SHAPE_CASE,
            "the real-sample-shape files",
            making.get(SAMPLE_SHAPE_CASE, {}),
        )


def upkeep_report(
    cases: list[Case], steps: dict[str, dict[str, float]], shapes: dict[str, SampleShape]
) -> None:
    """person_properties' upkeep: the one-process case with and without it (same run, same
    server), as lines/s and the time it adds; and its step's share of the case's step time.
    Then the same on the real-sample-shape files, where measured."""
    print("person_properties' upkeep (one process, the 10 files; budget: at most +10% time)")
    for server, timings in steps.items():
        serial = [c for c in cases if c.server == server and SYNTHETIC_SERIAL_MARK in c.name]
        bare = [c for c in cases if c.server == server and NO_UPKEEP_CASE in c.name]
        if not (serial and bare):
            continue
        on, off = serial[0], bare[0]
        share = timings.get("person_properties", 0.0) / max(sum(timings.values()), 1e-9)
        ratio = on.run.seconds / off.run.seconds
        # The least the upkeep can add: writing its table's final rows, one COPY into a table
        # with its key (the rows themselves are a property of the data: one per person and key).
        least = sum(on.keyed.get(table, 0.0) for table in UPKEEP_TABLES)
        print(
            f"  {server:<9} with {rate(on.lines, on.run.seconds)} lines/s, without "
            f"{rate(off.lines, off.run.seconds)} lines/s: time x{ratio:.3f} ({ratio - 1:+.1%});"
            f" the fold step is {share:.1%} of the steps' time; a keyed COPY of its final rows"
            f" alone would add {least:.2f} s ({least / off.run.seconds:+.1%})"
        )
    for server, shape in shapes.items():
        slow, fast = shape.median(shape.with_upkeep), shape.median(shape.without)
        print(
            f"  {server:<9} real-sample shape: with {rate(shape.lines, slow)} lines/s, without "
            f"{rate(shape.lines, fast)} lines/s: time x{slow / fast:.3f} ({slow / fast - 1:+.1%});"
            f" medians of {len(shape.with_upkeep)} alternate runs"
        )


def where_the_time_goes(
    cases: list[Case],
    steps: dict[str, dict[str, float]],
    mark: str,
    title: str,
    making: dict[str, Making],
) -> None:
    """A one-process case's steps (the case whose name holds ``mark``) beside their floors
    (:data:`STEP_FLOORS`, measured right after it on the same server) and the difference: the
    load's own extra work. The sums read: steps total = floors + extra, and the case's wall time
    = steps total + the time outside any step (starting the process, connecting, the schema
    check, partitions, the ledger rows). Then per server the writes alone and, where ``making``
    has the server, the statements that make and write the rows."""
    serial = {c.server: c for c in cases if mark in c.name}
    servers = [server for server in steps if server in serial]
    names = list(dict.fromkeys(step for server in servers for step in steps[server]))

    def row(label: str, what: str, figures: list[tuple[float, float | None]]) -> None:
        cells = "".join(
            f" {s:>12.2f} {'-' if f is None else f'{f:.2f}':>6} {s - (f or 0.0):>6.2f}"
            for s, f in figures
        )
        print(f"  {label:<17} {what:<22}{cells}")

    print(f"where the time goes ({title}): each step against its floor (seconds)")
    print(
        f"  {'step':<17} {'floor: COPY into':<22}"
        + "".join(f" {server + ' s':>12} {'floor':>6} {'extra':>6}" for server in servers)
    )
    floors = {
        server: {
            step: sum(serial[server].keyed[table] for table in STEP_FLOORS[step])
            for step in names
            if step in STEP_FLOORS
        }
        for server in servers
    }
    for step in names:
        what = " + ".join(STEP_FLOORS.get(step, ("-",)))
        row(step, what, [(steps[s].get(step, 0.0), floors[s].get(step)) for s in servers])
    totals = [(sum(steps[s].values()), sum(floors[s].values())) for s in servers]
    row("steps total", "sum of the floors", list(totals))
    outside = [serial[s].run.seconds - t for s, (t, _) in zip(servers, totals, strict=True)]
    row("outside the steps", "-", [(o, None) for o in outside])
    row(
        "the case (wall)",
        "sum of the floors",
        [(serial[s].run.seconds, f) for s, (_, f) in zip(servers, totals, strict=True)],
    )
    for server, (total, floor) in zip(servers, totals, strict=True):
        extra = {
            step: steps[server][step] - floors[server].get(step, 0.0) for step in steps[server]
        }
        top = max(extra, key=lambda step: extra[step])
        print(
            f"  {server}: steps {total:.2f} s = floors {floor:.2f} s + extra {total - floor:.2f} s"
            f" (x{total / max(floor, 1e-9):.2f} the floors); the largest extra: {top}"
            f" {extra[top]:.2f} s ({extra[top] / max(total - floor, 1e-9):.0%} of it)"
        )
    for server in servers:
        design_floor(server, serial[server])
        if server in making:
            design_statements(server, serial[server], making[server])
    print(
        "  floor: the keyed COPY of the final rows of the table(s) the step writes; for stage,"
        " the server's COPY of the same staging text into the load's own staging table"
        " (temporary, unindexed), file by file, without the parse and ANALYZE"
    )
    for step in names:
        if step in STEP_NOTES:
            print(f"  {step}: {STEP_NOTES[step]}")


def writes_alone(case: Case) -> dict[str, float]:
    """What any load that stages a file and writes it set-based must write, as COPYs: the file's
    staging text into the staging table, the facts' final rows (the case's keyed floor) and the
    upkeep's final rows."""
    return {
        "staging": case.keyed.get("staging", 0.0),
        "facts": case.floors["keyed"],
        "upkeep": sum(case.keyed.get(table, 0.0) for table in UPKEEP_TABLES),
    }


def design_floor(server: str, case: Case) -> None:
    """The writes alone (:func:`writes_alone`); against the issue's target (at most 2x the keyed
    floor), what they leave for everything else (resolving names to ids, the checks against
    stored rows, the sorts, the merges, the ledger), and what everything else takes now."""
    facts = case.floors["keyed"]
    writes = writes_alone(case)
    least = sum(writes.values())
    print(
        f"  {server}: the writes alone (COPY: "
        + " + ".join(f"{name} {seconds:.2f}" for name, seconds in writes.items())
        + f") {least:.2f} s = x{least / max(facts, 1e-9):.2f} the keyed floor; the target,"
        f" 2x that floor ({2 * facts:.2f} s), leaves {2 * facts - least:.2f} s for everything"
        f" else, which takes {case.run.seconds - least:.2f} s now"
    )


def design_statements(server: str, case: Case, making: Making) -> None:
    """What a load that stages a file and writes it with set-based SQL runs to make and write its
    rows, whatever else it does, from a load of its own (:func:`making_child`): the fact
    statements' SELECTs alone, their INSERTs beyond a keyed COPY of the same rows (the floors
    measured after ``case``), and resolving names to ids (the users and dictionaries steps);
    against what the target leaves beside the writes alone (:func:`design_floor`)."""
    left = 2 * case.floors["keyed"] - sum(writes_alone(case).values())
    made = making.selects
    beyond = {
        name: seconds - made[name] - case.keyed[name.removesuffix(ENDS_KEPT)]
        for name, seconds in making.statements.items()
    }
    resolving = making.steps.get("users", 0.0) + making.steps.get("dictionaries", 0.0)
    total = sum(made.values()) + sum(beyond.values()) + resolving
    print(
        f"  {server}: making and writing the rows (a load of their own): making them"
        f" ({_parts(made)}) {sum(made.values()):.2f} s + their INSERTs beyond COPY"
        f" ({_parts(beyond)}) {sum(beyond.values()):.2f} s + resolving names to ids (users +"
        f" dictionaries) {resolving:.2f} s = {total:.2f} s, against the {left:.2f} s the target"
        " leaves"
    )


def _parts(seconds: dict[str, float]) -> str:
    return " + ".join(f"{name} {value:.2f}" for name, value in seconds.items())


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


def sample_shaped(sample: Path, folder: Path, lines: int) -> list[Path]:
    """The real-sample-shape files, about ``lines`` lines in all (at least one copy of the
    sample per file), or none when the sample is not there (said so)."""
    if not sample.is_file():
        print(f"no real-sample-shape rows: no sample at {sample} (see --sample)")
        return []
    copies = max(1, round(lines / HOURLY_FILES / len(read_sample(sample))))
    return write_sample_shaped_export(sample, folder, files=HOURLY_FILES, copies=copies)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["--serial-child"]:
        return serial_child(arguments[1], arguments[2], arguments[3:])
    if arguments[:1] == [MAKING_CHILD]:
        return making_child(arguments[1], arguments[2], arguments[3:])
    args = parse_args(arguments)
    lines: int = args.lines
    with work_folder("km2pg-bench-", keep=args.keep) as work:
        started = time.perf_counter()
        exports = {
            "one": synth.generate_export(work / "one", lines=lines, files=1, seed=SEED).files,
            "hourly": synth.generate_export(
                work / "hourly", lines=lines, files=HOURLY_FILES, seed=SEED + 1
            ).files,
            "backfill": synth.generate_export(
                work / "backfill",
                lines=lines * BACKFILL_FILES // HOURLY_FILES,
                files=BACKFILL_FILES,
                seed=SEED + 2,
            ).files,
        }
        sample_paths = sample_shaped(args.sample, work / "sample", lines)
        staged = write_staging_text(exports["hourly"], work / "staged")
        sample_staged = write_staging_text(sample_paths, work / "sample-staged")
        size = sum(p.stat().st_size for paths in exports.values() for p in paths) / MB
        print(
            f"generated {len(exports['one'])} + {len(exports['hourly'])} + "
            f"{len(exports['backfill'])} files ({size:,.0f} MB) in "
            f"{time.perf_counter() - started:.1f} s (not measured)"
        )
        cases: list[Case] = []
        steps: dict[str, dict[str, float]] = {}
        skips: dict[str, float] = {}
        shapes: dict[str, SampleShape] = {}
        sample_steps: dict[str, dict[str, float]] = {}
        making: dict[str, dict[str, Making]] = {SYNTHETIC_SERIAL_MARK: {}, SAMPLE_SHAPE_CASE: {}}
        for label, settings in SERVERS.items():
            with embedded_server(work / label, settings) as server:
                found, timings, skip, made = measure_server(label, server, exports, staged, work)
                making[SYNTHETIC_SERIAL_MARK][label] = made
                if sample_paths:
                    shapes[label], shaped, sample_steps[label], made = measure_sample_shape(
                        label, server, sample_paths, sample_staged, work
                    )
                    making[SAMPLE_SHAPE_CASE][label] = made
                    found.append(shaped)
                if label == "embedded":
                    plain = local.ensure_database(server, DATABASE)
                    run_load(exports["one"][0], server.dsn(DATABASE))
                    citus_row(exports["one"][0], len_lines(exports["one"]), plain)
            cases += found
            steps[label] = timings
            skips[label] = skip.seconds
        report(cases, steps, skips, shapes, sample_steps, making)
        print()
        print(SETTINGS_NOTE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
