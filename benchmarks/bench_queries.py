"""How fast the insight functions answer on a big database: one table of query, time, target.

Run: ``make bench-queries``, or ``.venv/bin/python benchmarks/bench_queries.py [--events N]
[--runs N] [--quick] [--keep] [--reuse DIR]``. ``--reuse DIR`` keeps the loaded database in DIR
and measures it again on the next run with the same DIR (no build: for profiling a change; the
migrations not yet run there are run first).

1. Write a synthetic export of about ``--events`` events (default 10,000,000) over 12 months:
   the demo's shop, with aliases, a sign-up and checkout funnel, a homepage experiment and
   billing amounts with refunds (timed apart, not measured).
2. Load it with ``km2pg load`` into a throwaway embedded PostgreSQL with the durable settings a
   user gets (lines/s shown: the loader keeps person_properties as it goes), then ANALYZE.
3. Run each query of the issue's speed table ``--runs`` times (default 5) and print the median
   and the fastest run beside the target. Figures, not assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from common import embedded_server, rate, run_child, work_folder
from km2pg import db
from km2pg.cli import local, synth

DATABASE: Final = "bench_queries"
SEED: Final = 20_261_202
DAYS: Final = 365
EVENTS_PER_LINE: Final = 0.92
"""About this many events per synthetic line (alias lines and same-second lines make none)."""
LINES_PER_FILE: Final = 1_000_000


@dataclass(frozen=True)
class Query:
    name: str
    sql: str
    target_s: float
    params: tuple[str, ...] = ("end",)


def queries() -> list[Query]:
    """The speed table's queries, on the data's last days (``:end`` is the export's end)."""
    return [
        Query(
            "funnel of 3 steps over 30 days",
            "select * from km2pg.funnel(array['visited site', 'signed up', 'checkout successful'],"
            " CAST(:end AS timestamptz) - interval '30 days', :end)",
            2.0,
        ),
        Query(
            "retention weekly, 8 periods, 12 cohorts",
            "select * from km2pg.retention('visited site', 'visited site',"
            " date_trunc('week', CAST(:end AS timestamptz) - interval '20 weeks', 'UTC'),"
            " date_trunc('week', CAST(:end AS timestamptz) - interval '8 weeks', 'UTC'),"
            " 'week', 8)",
            3.0,
        ),
        Query(
            "ab_test over 30 days",
            "select * from km2pg.ab_test('homepage variation', 'signed up',"
            " CAST(:end AS timestamptz) - interval '30 days', :end)",
            2.0,
        ),
        Query("revenue monthly over all data", "select * from km2pg.revenue()", 2.0, ()),
        Query(
            "person_properties for one key ('plan') over all people",
            "select count(*), sum(length(value)), max(t), max(first_t)"
            " from km2pg.person_properties where key = 'plan'",
            1.0,
            (),
        ),
        Query(
            "person_properties for one key ('referrer') over all people",
            "select count(*), sum(length(value)), max(t), max(first_t)"
            " from km2pg.person_properties where key = 'referrer'",
            1.0,
            (),
        ),
        Query(
            "timeline of one person (the one with most identities)",
            "select * from km2pg.timeline where personid = :person order by t",
            0.05,
            ("person",),
        ),
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=10_000_000, help="events to load")
    parser.add_argument("--runs", type=int, default=5, help="runs of each query")
    parser.add_argument("--quick", action="store_true", help="20,000 events, 2 runs: seconds")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument(
        "--reuse", type=Path, metavar="DIR", help="build once into DIR, then measure it again"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.runs = 20_000, 2
    if args.events < 1000 or args.runs < 1:
        parser.error("--events must be at least 1,000 and --runs at least 1")
    return args


def build(work: Path, server: local.EmbeddedServer, events: int) -> tuple[datetime, int]:
    """Write and load the export; returns its end and the events loaded."""
    lines = int(events / EVENTS_PER_LINE)
    files = max(1, lines // LINES_PER_FILE)
    end = datetime.now(UTC).replace(microsecond=0)
    started = time.perf_counter()
    synth.generate_export(work / "export", lines=lines, files=files, days=DAYS, end=end, seed=SEED)
    print(f"generated {lines:,} lines in {files} files in {time.perf_counter() - started:.0f} s")
    local.ensure_database(server, DATABASE)
    dsn = server.dsn(DATABASE)
    run = run_child(
        [sys.executable, "-m", "km2pg.cli", "load", str(work / "export"), "--dsn", dsn, "-q"]
    )
    if run.exit_code:
        raise SystemExit(f"bench_queries: km2pg load exited {run.exit_code}")
    print(f"loaded in {run.seconds:.0f} s: {rate(lines, run.seconds)} lines/s (not the figures)")
    with db.connection(server.settings(DATABASE)) as con:
        con.run("VACUUM ANALYZE")
        loaded = int(db.scalar(con, "select count(*) from km2pg.events"))
    return end, loaded


def busiest_person(con: db.Connection) -> int:
    sql = "select personid from km2pg.users group by 1 order by count(*) desc, 1 limit 1"
    return int(db.scalar(con, sql))


def measure(con: db.Connection, query: Query, runs: int, **values: Any) -> list[float]:
    params = {name: values[name] for name in query.params}
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        db.rows(con, query.sql, **params)
        times.append(time.perf_counter() - started)
    return times


@contextmanager
def database(args: argparse.Namespace) -> Iterator[tuple[local.EmbeddedServer, datetime, int]]:
    """The loaded database: built in a throwaway folder, or kept in (and reused from) --reuse."""
    if args.reuse is None:
        with work_folder("km2pg-queries-", keep=args.keep) as work, embedded_server(work) as server:
            end, events = build(work, server, args.events)
            yield server, end, events
        return
    marker = args.reuse / "built.json"
    server = local.start(args.reuse / "pgdata", local.LOCAL_SETTINGS)
    try:
        if marker.exists():
            built = json.loads(marker.read_text())
            local.ensure_database(server, DATABASE)  # runs migrations added since the build
            end, events = datetime.fromisoformat(built["end"]), int(built["events"])
            print(f"reusing the database in {args.reuse} ({events:,} events)")
        else:
            end, events = build(args.reuse, server, args.events)
            shutil.rmtree(args.reuse / "export", ignore_errors=True)
            marker.write_text(json.dumps({"end": end.isoformat(), "events": events}))
        yield server, end, events
    finally:
        server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with database(args) as (server, end, events), db.connection(server.settings(DATABASE)) as con:
        con.run("SET TIME ZONE 'UTC'")
        person = busiest_person(con)
        load_before = os.getloadavg()[0]
        rows = []
        for query in queries():
            times = measure(con, query, args.runs, end=end, person=person)
            rows.append((query, statistics.median(times), min(times)))
        version = db.scalar(con, "SHOW server_version")
    print()
    print(
        f"km2pg insight queries, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {events:,} events over "
        f"{DAYS} days, PostgreSQL {version}, median and fastest of {args.runs} runs; load "
        f"average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after (the figures are "
        "only comparable at the same load)"
    )
    width = max(len(q.name) for q, _, _ in rows)
    print(f"{'query':<{width}}  {'median s':>9}  {'fastest s':>9}  {'target s':>8}  within")
    print(f"{'-' * width}  {'-' * 9}  {'-' * 9}  {'-' * 8}  ------")
    for query, median, fastest in rows:
        within = "yes" if median <= query.target_s else "NO"
        print(
            f"{query.name:<{width}}  {median:>9.3f}  {fastest:>9.3f}  {query.target_s:>8.2f}  "
            f"{within}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
