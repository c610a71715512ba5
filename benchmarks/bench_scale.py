"""Scale figures: a 1 GB file, pruning 10 million events, and a long run of small files through
the Lambda loader. Figures, not assertions: everything is measured live and printed as one table.

Run: ``make scale``, or ``.venv/bin/python benchmarks/bench_scale.py [--quick] [--keep]``.

1. Loads. A ~10 MB file, a ~1 GB file (8,000,000 lines) and the same 1 GB file gzipped, each
   loaded with ``km2pg load`` in a child process into a fresh database: lines/s and the child's
   peak RSS (the target is under 300 MB whatever the file's size).
2. Pruning. 10,000,000 events over 12 months, written with set-based SQL, then the database is
   cloned. One copy is pruned to 6 months with km2pg's prune, the other with a plain DELETE of
   the same rows (then VACUUM): seconds, rows removed, and the fact tables' size after each.
3. Connections. 400 files of 100 lines through the loader function's handler (S3 faked by moto,
   this PostgreSQL behind a fake secret), 10 messages per invocation as the queue delivers them:
   the database's pg_stat_activity rows and this process's RSS, sampled after every invocation.

``--quick`` runs the same steps at tiny sizes, in seconds (tests/integration runs it).
Generated files live in a temporary folder, deleted at the end; nothing is cached.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import logging
import os
import platform
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import psutil  # type: ignore[import-untyped]  # no stubs in the dev set

from common import (
    MB,
    checkpoint,
    clone_database,
    drop_database,
    embedded_server,
    rate,
    run_load,
    work_folder,
)
from km2pg import db
from km2pg.cli import local, synth
from km2pg.db import Connection
from km2pg.dsn import ConnectionSettings
from km2pg.prune import prune

SEED: Final = 20_261_128
TEMPLATE: Final = "scale_template"
"""A migrated, empty database: every fresh database is cloned from it."""

SPAN_DAYS: Final = 365
KEEP_DAYS: Final = SPAN_DAYS / 2
"""Twelve months of events, pruned to the last six."""

FACT_CHUNK: Final = 1_000_000
"""Events written per INSERT while populating: keeps each statement's transaction modest."""

BUCKET: Final = "kissmetrics-export"
RSS_TARGET_MB: Final = 300

ACTIONS: Final = (
    "visited site",
    "viewed product",
    "added to cart",
    "signed up",
    "logged in",
    "checkout started",
    "checkout successful",
)
KEYS: Final = (
    "product",
    "category",
    "price",
    "quantity",
    "plan name",
    "billing amount",
    "country",
    "city",
    "browser",
    "platform",
    "referrer",
    "campaign",
)


class BenchError(Exception):
    """A step did not do what it should: its figures would mean nothing."""


@dataclass(frozen=True)
class Sizes:
    big_lines: int
    small_lines: int
    events: int
    files: int
    file_lines: int
    batch: int = 10
    """Messages per loader invocation: the stack's default loaderBatchSize."""


# ~122 bytes a synthetic line: 8,000,000 lines make ~1 GB, 85,000 lines ~10 MB.
FULL: Final = Sizes(
    big_lines=8_000_000, small_lines=85_000, events=10_000_000, files=400, file_lines=100
)
QUICK: Final = Sizes(big_lines=20_000, small_lines=2_000, events=20_000, files=30, file_lines=20)


@dataclass(frozen=True)
class Row:
    """One line of the table; every cell is already text."""

    area: str
    case: str
    size: str = ""
    seconds: str = ""
    rate: str = ""
    rss_mb: str = ""
    total_mb: str = ""
    index_mb: str = ""
    connections: str = ""


HEADERS: Final = {
    "area": "area",
    "case": "case",
    "size": "size",
    "seconds": "seconds",
    "rate": "per second",
    "rss_mb": "RSS MB",
    "total_mb": "total MB",
    "index_mb": "index MB",
    "connections": "conns",
}
LEFT_ALIGNED: Final = frozenset({"area", "case", "size"})


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: runs in seconds")
    parser.add_argument("--lines", type=int, help="lines of the big file (default 8,000,000)")
    parser.add_argument("--events", type=int, help="events to prune from (default 10,000,000)")
    parser.add_argument("--files", type=int, help="small files through the handler (default 400)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    overrides = {"big_lines": args.lines, "events": args.events, "files": args.files}
    sizes = replace(sizes, **{k: v for k, v in overrides.items() if v is not None})
    if min(sizes.big_lines, sizes.events, sizes.files) < 1:
        parser.error("--lines, --events and --files must be at least 1")
    # At most one event a second makes every (userid, t), hence every eventid, unique.
    if sizes.events > SPAN_DAYS * 86_400:
        parser.error(f"--events must be at most {SPAN_DAYS * 86_400:,} (one a second)")
    args.sizes = sizes
    return args


# ---------------------------------------------------------------------------------------------
# 1. Loads: one big file, plain and gzipped, beside a 10 MB one


def write_export(folder: Path, lines: int, seed: int) -> Path:
    """One synthetic export file, streamed to disk (timed apart, not measured)."""
    started = time.perf_counter()
    path = synth.generate_export(folder, lines=lines, files=1, seed=seed).files[0]
    print(
        f"generated {lines:,} lines ({path.stat().st_size / MB:,.1f} MB) in "
        f"{time.perf_counter() - started:.1f} s (not measured)"
    )
    return path


def gzip_copy(path: Path) -> Path:
    """``N.json`` -> ``N.json.gz`` beside it, streamed; same export key, same content."""
    started = time.perf_counter()
    target = path.with_name(path.name + ".gz")
    with path.open("rb") as source, gzip.open(target, "wb", compresslevel=6) as out:
        shutil.copyfileobj(source, out, 1 << 20)
    print(
        f"gzipped to {target.stat().st_size / MB:,.1f} MB in "
        f"{time.perf_counter() - started:.1f} s (not measured)"
    )
    return target


def ledger_statuses(settings: ConnectionSettings) -> list[str]:
    with db.connection(settings) as con:
        return [str(r[0]) for r in db.rows(con, "SELECT status FROM km2pg.files ORDER BY fileid")]


def load_row(server: local.EmbeddedServer, case: str, path: Path, lines: int) -> Row:
    """Load ``path`` with the CLI into a fresh database, then drop the database."""
    name = "scale_load"
    settings = clone_database(server, TEMPLATE, name)
    try:
        # The file was just written: its dirty pages must not be written back during the load.
        os.sync()
        checkpoint(settings)
        run = run_load(path, server.dsn(name))
        statuses = ledger_statuses(settings)
    finally:
        drop_database(server, name)
    if run.exit_code or statuses != ["loaded"]:
        raise BenchError(f"loading {path.name}: exit {run.exit_code}, ledger {statuses}")
    print(f"{case}: {run.seconds:.1f} s, peak RSS {run.peak_rss_mb:.1f} MB")
    return Row(
        area="load",
        case=case,
        size=f"{lines:,} lines, {path.stat().st_size / MB:,.1f} MB",
        seconds=f"{run.seconds:,.2f}",
        rate=f"{rate(lines, run.seconds)} lines",
        rss_mb=f"{run.peak_rss_mb:,.1f}",
    )


def measure_loads(server: local.EmbeddedServer, work: Path, sizes: Sizes) -> list[Row]:
    small = write_export(work / "small", sizes.small_lines, SEED)
    rows = [load_row(server, "small file, .json", small, sizes.small_lines)]
    big = write_export(work / "big", sizes.big_lines, SEED + 1)
    rows.append(load_row(server, "big file, .json", big, sizes.big_lines))
    packed = gzip_copy(big)
    big.unlink()  # a gigabyte of disk back before the next steps
    rows.append(load_row(server, "big file, .json.gz", packed, sizes.big_lines))
    return rows


# ---------------------------------------------------------------------------------------------
# 2. Pruning: km2pg's prune against a plain DELETE, on two copies of one database

# Event i (0-based) of the populated database: a user, a second and so an eventid, computed
# alike in all three fact tables so that their rows match without a join.
# (pg8000 sends parameters untyped: the casts say what they are.)
_USERID: Final = "(1 + i % CAST(:users AS bigint))"
_T: Final = "to_timestamp(CAST(:first AS bigint) + floor(i * CAST(:step AS float8)))"
_EVENTID: Final = f"km2pg.make_eventid({_USERID}, {_T})"
_ACTIONID: Final = "(1 + i % :actions)::int"

POPULATE_EVENTS: Final = f"""
INSERT INTO km2pg.events (eventid, userid, t)
SELECT {_EVENTID}, {_USERID}, {_T} FROM generate_series(:lo, :hi - 1) AS i
"""
POPULATE_ACTIONS: Final = f"""
INSERT INTO km2pg.event_actions (eventid, actionid)
SELECT {_EVENTID}, {_ACTIONID} FROM generate_series(:lo, :hi - 1) AS i
"""
# Two properties an event (the synthetic exports have about two), from the event's own line.
POPULATE_PROPERTIES: Final = f"""
INSERT INTO km2pg.event_properties (eventid, keyid, value, actionid, revision, lineno)
SELECT {_EVENTID}, (1 + (i + j) % :keys)::int, 'value ' || (i % 997), {_ACTIONID},
       :revision + i / 100000, (i % 100000)::int + 1
  FROM generate_series(:lo, :hi - 1) AS i CROSS JOIN (VALUES (0), (1)) AS p(j)
"""

FACT_SIZES: Final = """
SELECT coalesce(sum(pg_total_relation_size(t.relid)), 0)::bigint,
       coalesce(sum(pg_indexes_size(t.relid)), 0)::bigint
  FROM unnest(ARRAY['km2pg.events', 'km2pg.event_actions', 'km2pg.event_properties']::regclass[])
       AS f(parent),
       LATERAL pg_partition_tree(f.parent) AS t
 WHERE t.isleaf
"""

PLAIN_DELETE: Final = (
    (
        "event_properties",
        "DELETE FROM km2pg.event_properties WHERE eventid < km2pg.eventid_floor(:c)",
    ),
    ("event_actions", "DELETE FROM km2pg.event_actions WHERE eventid < km2pg.eventid_floor(:c)"),
    ("events", "DELETE FROM km2pg.events WHERE t < :c"),
)


@dataclass(frozen=True)
class FactSizes:
    total_mb: float
    index_mb: float


def month_starts(first: datetime, last: datetime) -> Iterator[datetime]:
    month = first.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    while month <= last:
        yield month
        month = (month + timedelta(days=32)).replace(day=1)


def populate_dictionaries(con: Connection, users: int) -> None:
    """Users, actions and keys with explicit ids, and their identity sequences moved past them
    (as a load would leave them)."""
    con.run(
        "INSERT INTO km2pg.users (userid, name, personid) "
        "SELECT u, 'user ' || u, u FROM generate_series(1, :n) AS u",
        n=users,
    )
    for table, column, names in (("actions", "actionid", ACTIONS), ("keys", "keyid", KEYS)):
        con.run(
            f"INSERT INTO km2pg.{table} ({column}, name) "
            "SELECT n, name FROM unnest(CAST(:names AS text[])) WITH ORDINALITY AS a(name, n)",
            names=list(names),
        )
    for table, column, last in (
        ("users", "userid", users),
        ("actions", "actionid", len(ACTIONS)),
        ("keys", "keyid", len(KEYS)),
    ):
        con.run(
            f"SELECT setval(pg_get_serial_sequence('km2pg.{table}', '{column}'), :last)",
            last=last,
        )


def populate(settings: ConnectionSettings, events: int, end: datetime) -> None:
    """``events`` events over the SPAN_DAYS before ``end``, one action and two properties each,
    written set-based (far faster than loading export files, and not what is measured)."""
    started = time.perf_counter()
    first = end - timedelta(days=SPAN_DAYS)
    users = max(1, events // 20)
    params = {
        "users": users,
        "first": int(first.timestamp()),
        "step": SPAN_DAYS * 86_400 / events,
        "actions": len(ACTIONS),
        "keys": len(KEYS),
        "revision": 22_770,
    }
    with db.connection(settings) as con:
        con.run("SET synchronous_commit = off")  # each chunk's commit need not wait for disk
        populate_dictionaries(con, users)
        for month in month_starts(first, end):
            con.run("SELECT km2pg.ensure_month_partitions(:m)", m=month)
        for lo in range(0, events, FACT_CHUNK):
            hi = min(events, lo + FACT_CHUNK)
            for sql in (POPULATE_EVENTS, POPULATE_ACTIONS, POPULATE_PROPERTIES):
                con.run(sql, lo=lo, hi=hi, **params)
        # Both copies start alike: hint bits set, visibility map and statistics fresh.
        con.run("VACUUM ANALYZE km2pg.events, km2pg.event_actions, km2pg.event_properties")
    print(f"populated {events:,} events in {time.perf_counter() - started:.1f} s (not measured)")


def fact_sizes(con: Connection) -> FactSizes:
    total, indexes = db.rows(con, FACT_SIZES)[0]
    return FactSizes(int(total) / MB, int(indexes) / MB)


def count_events(con: Connection) -> int:
    return int(db.scalar(con, "SELECT count(*) FROM km2pg.events"))


def size_row(case: str, size: str, seconds: float | None, sizes: FactSizes) -> Row:
    return Row(
        area="prune",
        case=case,
        size=size,
        seconds="" if seconds is None else f"{seconds:,.2f}",
        total_mb=f"{sizes.total_mb:,.0f}",
        index_mb=f"{sizes.index_mb:,.0f}",
    )


def removed_text(rows: dict[str, int]) -> str:
    return f"{rows.get('events', 0):,} events, {sum(rows.values()):,} rows removed"


def prune_side(settings: ConnectionSettings, end: datetime) -> tuple[Row, datetime, dict[str, int]]:
    """km2pg's prune, timed; returns its row, the cutoff it used and the rows it removed."""
    checkpoint(settings)
    with db.connection(settings) as con:
        started = time.perf_counter()
        result = prune(con, KEEP_DAYS, now=end)
        seconds = time.perf_counter() - started
        after = fact_sizes(con)
    case = f"km2pg prune, {len(result.partitions) // 3} months dropped"
    return size_row(case, removed_text(result.rows), seconds, after), result.cutoff, result.rows


def delete_side(settings: ConnectionSettings, cutoff: datetime) -> tuple[list[Row], dict[str, int]]:
    """The same rows removed with plain DELETEs in one transaction, then a VACUUM."""
    checkpoint(settings)
    removed: dict[str, int] = {}
    with db.connection(settings) as con:
        started = time.perf_counter()
        with db.transaction(con):
            for table, sql in PLAIN_DELETE:
                con.run(sql, c=cutoff)
                removed[table] = int(con.row_count or 0)
        deleted = time.perf_counter() - started
        after_delete = fact_sizes(con)
        started = time.perf_counter()
        con.run("VACUUM km2pg.events, km2pg.event_actions, km2pg.event_properties")
        vacuumed = time.perf_counter() - started
        after_vacuum = fact_sizes(con)
    rows = [
        size_row("DELETE (same cutoff)", removed_text(removed), deleted, after_delete),
        size_row("  then VACUUM", "", vacuumed, after_vacuum),
    ]
    return rows, removed


def measure_prune(server: local.EmbeddedServer, sizes: Sizes) -> list[Row]:
    end = datetime.now(UTC).replace(microsecond=0)
    pruned = clone_database(server, TEMPLATE, "scale_prune")
    populate(pruned, sizes.events, end)
    deleted = clone_database(server, "scale_prune", "scale_delete")
    try:
        with db.connection(pruned) as con:
            before = size_row(
                "12 months, before", f"{count_events(con):,} events", None, fact_sizes(con)
            )
        prune_row, cutoff, by_prune = prune_side(pruned, end)
        delete_rows, by_delete = delete_side(deleted, cutoff)
    finally:
        drop_database(server, "scale_prune")
        drop_database(server, "scale_delete")
    if by_prune != by_delete:
        raise BenchError(f"prune removed {by_prune}, the DELETE {by_delete}")
    return [before, prune_row, *delete_rows]


# ---------------------------------------------------------------------------------------------
# 3. Connections: many small files through the loader function's handler


@dataclass(frozen=True)
class Sample:
    files: int
    seconds: float
    connections: int
    rss_mb: float


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block, then put back what was there."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def secret_for(settings: ConnectionSettings) -> str:
    """The RDS-style secret the deployed functions read."""
    return json.dumps(
        {
            "host": settings.host,
            "port": settings.port,
            "username": settings.user,
            "password": settings.password or "",
            "dbname": settings.database,
        }
    )


@contextlib.contextmanager
def fake_aws(settings: ConnectionSettings) -> Iterator[Any]:
    """moto's S3 and Secrets Manager with the loader's configuration; yields the S3 client."""
    import boto3
    from moto import mock_aws

    fake = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_SERVICE_NAME": "km2pg",
        "POWERTOOLS_METRICS_NAMESPACE": "km2pg",
        "KM2PG_DB_SSLMODE": settings.sslmode,
        "KM2PG_EXPORT_BUCKET": BUCKET,
    }
    with environment(fake), mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        secrets = boto3.client("secretsmanager")
        arn = secrets.create_secret(Name="km2pg-db", SecretString=secret_for(settings))["ARN"]
        with environment({"KM2PG_DB_SECRET_ARN": arn}):
            yield s3


def upload(s3: Any, paths: list[Path], root: Path) -> list[str]:
    """Put every file in the bucket; returns each file's S3 notification, as SQS carries it."""
    bodies = []
    for path in paths:
        key = path.relative_to(root).as_posix()
        s3.upload_file(str(path), BUCKET, key)
        head = s3.head_object(Bucket=BUCKET, Key=key)
        bodies.append(s3_notification(key, head["ContentLength"], head["ETag"].strip('"')))
    return bodies


def s3_notification(key: str, size: int, etag: str) -> str:
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventName": "ObjectCreated:Put",
        "s3": {
            "bucket": {"name": BUCKET, "arn": f"arn:aws:s3:::{BUCKET}"},
            "object": {"key": key, "size": size, "eTag": etag},
        },
    }
    return json.dumps({"Records": [record]})


def sqs_event(bodies: list[str]) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": f"m{i}",
                "receiptHandle": f"r{i}",
                "body": body,
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:km2pg-load",
                "awsRegion": "us-east-1",
            }
            for i, body in enumerate(bodies)
        ]
    }


def connections(monitor: Connection) -> int:
    """Client sessions on the database other than the monitor's own.

    Only client backends: an autovacuum worker also shows in pg_stat_activity with the
    database's name (the inserts wake it), and it is no connection of the loader's.
    """
    return int(
        db.scalar(
            monitor,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
        )
    )


def invoke_all(settings: ConnectionSettings, bodies: list[str], batch: int) -> list[Sample]:
    """Every message through the handler, ``batch`` per invocation, sampling after each."""
    from tests.lambda_context import FakeContext  # the root is on the path: see common.py

    from km2pg.handlers import loader, runtime
    from km2pg.handlers.observability import logger

    # Per-file INFO lines would bury the table; warnings and errors still show.
    logger.setLevel(logging.WARNING)
    process = psutil.Process()
    samples = []
    runtime.reset()
    started = time.perf_counter()
    with db.connection(settings) as monitor, open(os.devnull, "w") as sink:
        for lo in range(0, len(bodies), batch):
            # Powertools prints the metrics of every invocation (EMF) on stdout.
            with contextlib.redirect_stdout(sink):
                response = loader.handler(sqs_event(bodies[lo : lo + batch]), FakeContext())
            if response["batchItemFailures"]:
                raise BenchError(f"loader handler failures: {response['batchItemFailures']}")
            samples.append(
                Sample(
                    files=min(lo + batch, len(bodies)),
                    seconds=time.perf_counter() - started,
                    connections=connections(monitor),
                    rss_mb=process.memory_info().rss / MB,
                )
            )
    runtime.reset()
    return samples


def sample_row(sample: Sample, file_lines: int) -> Row:
    return Row(
        area="connections",
        case=f"after {sample.files:,} files",
        size=f"{sample.files * file_lines:,} lines",
        seconds=f"{sample.seconds:,.2f}",
        rate=f"{rate(sample.files, sample.seconds)} files",
        rss_mb=f"{sample.rss_mb:,.1f}",
        connections=str(sample.connections),
    )


def measure_connections(server: local.EmbeddedServer, work: Path, sizes: Sizes) -> list[Row]:
    folder = work / "small-files"
    export = synth.generate_export(
        folder, lines=sizes.files * sizes.file_lines, files=sizes.files, seed=SEED + 2
    )
    settings = clone_database(server, TEMPLATE, "scale_handler")
    try:
        with fake_aws(settings) as s3:
            # All uploaded first: moto keeps objects in this process's memory, and its growth
            # must not pass for the loader's.
            bodies = upload(s3, export.files, folder)
            samples = invoke_all(settings, bodies, sizes.batch)
        statuses = ledger_statuses(settings)
    finally:
        drop_database(server, "scale_handler")
    if statuses != ["loaded"] * sizes.files:
        raise BenchError(f"handler run: ledger {sorted(set(statuses))} for {len(statuses)} files")
    picks = [samples[0], samples[len(samples) // 2], samples[-1]]
    conns = [s.connections for s in samples]
    rss = [s.rss_mb for s in samples]
    spread = Row(
        area="connections",
        case=f"min..max of {len(samples)} samples",
        rss_mb=f"{min(rss):,.1f}..{max(rss):,.1f}",
        connections=f"{min(conns)}..{max(conns)}",
    )
    return [*(sample_row(s, sizes.file_lines) for s in picks), spread]


# ---------------------------------------------------------------------------------------------
# The table


def print_table(rows: list[Row]) -> None:
    names = [f.name for f in fields(Row)]
    cells = [[HEADERS[n] for n in names]] + [[getattr(r, n) for n in names] for r in rows]
    widths = [max(len(line[k]) for line in cells) for k in range(len(names))]

    def line(values: list[str]) -> str:
        parts = [
            v.ljust(w) if n in LEFT_ALIGNED else v.rjust(w)
            for n, v, w in zip(names, values, widths, strict=True)
        ]
        return "  ".join(parts).rstrip()

    print(line(cells[0]))
    print("  ".join("-" * w for w in widths))
    previous = rows[0].area if rows else ""
    for row, values in zip(rows, cells[1:], strict=True):
        if row.area != previous:
            print()
            previous = row.area
        print(line(values))


def print_notes(server: local.EmbeddedServer, sizes: Sizes, quick: bool) -> None:
    with db.connection(server.settings("postgres")) as con:
        version = db.scalar(con, "SHOW server_version")
    print(
        f"km2pg scale figures{' (--quick)' if quick else ''}, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, "
        f"{psutil.virtual_memory().total / 1024**3:.0f} GB, Python {platform.python_version()}, "
        f"embedded PostgreSQL {version} (durable settings)"
    )
    notes = (
        f"load: RSS = peak RSS of km2pg load and its parse workers (target < {RSS_TARGET_MB} MB at",
        "      any size); files from 16 MB up are parsed by two workers, smaller ones in-process",
        "prune: total = pg_total_relation_size, index = pg_indexes_size, summed over the",
        "       partitions of events, event_actions and event_properties",
        f"connections: {sizes.file_lines}-line files, {sizes.batch} messages an invocation;",
        "       conns = pg_stat_activity client backends on the database (not the monitor),",
        "       RSS = this process, which runs the handler as a Lambda container would",
    )
    print("\n".join(notes))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes: Sizes = args.sizes
    started = time.perf_counter()
    with work_folder("km2pg-scale-", keep=args.keep) as work, embedded_server(work) as server:
        local.ensure_database(server, TEMPLATE)
        try:
            rows = measure_loads(server, work, sizes)
            rows += measure_prune(server, sizes)
            rows += measure_connections(server, work, sizes)
        except BenchError as error:
            print(f"bench_scale: {error}", file=sys.stderr)
            return 1
        print()
        print_notes(server, sizes, args.quick)
        print()
        print_table(rows)
    print(f"\nwall time {time.perf_counter() - started:,.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
