"""Test helpers: write export files, dump a database canonically, load and compare.

The canonical dump names everything by its text (identities, actions, keys), never by the
ids a load happened to assign, so two databases loaded in different orders compare equal
exactly when they hold the same facts. What a correct load gives is computed by the oracle in
``tests/oracle.py``, which shares no code with km2pg.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from km2pg import db, load
from km2pg.cli.synth import generate_export
from km2pg.dsn import ConnectionSettings
from km2pg.sources import discover_local, local_file
from tests.oracle import Dump, oracle_dump_of_paths

TIMESTAMPTZ_OID = 1184


def write_export(folder: Path, revision: int, lines: Sequence[str | dict[str, Any]]) -> Path:
    """Write ``folder/revisions/<revision>.json`` from dicts (as JSON) or raw strings."""
    path = folder / "revisions" / f"{revision}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(
        (line if isinstance(line, str) else json.dumps(line, ensure_ascii=False)) + "\n"
        for line in lines
    )
    path.write_text(text, encoding="utf-8")
    return path


def numbered(lines: Iterable[str | bytes]) -> list[tuple[int, bytes]]:
    """Lines as :func:`km2pg.export.iter_raw_lines` yields them: (number from 1, raw bytes
    without the end of line), the way :func:`km2pg.export.parse_lines` reads them."""
    return [
        (n, (line.encode() if isinstance(line, str) else line).rstrip(b"\r\n"))
        for n, line in enumerate(lines, 1)
    ]


# Every table by the text of what it names (identities, actions, keys), never by ids.
CANONICAL_QUERIES = {
    "users": """
        select u.name, min(p.name) over (partition by u.personid)
          from km2pg.users u join km2pg.users p on p.personid = u.personid
    """,
    "aliases": """
        select u.name, a.name, x.since from km2pg.aliases x
          join km2pg.users u on u.userid = x.userid join km2pg.users a on a.userid = x.aliasid
    """,
    "events": "select u.name, e.t from km2pg.events e join km2pg.users u using (userid)",
    "event_actions": """
        select u.name, e.t, a.name from km2pg.events e join km2pg.users u using (userid)
          join km2pg.event_actions using (eventid) join km2pg.actions a using (actionid)
    """,
    "event_properties": """
        select u.name, e.t, k.name, p.value, a.name, p.revision, p.lineno
          from km2pg.events e join km2pg.users u using (userid)
          join km2pg.event_properties p using (eventid)
          join km2pg.keys k using (keyid)
          left join km2pg.actions a on a.actionid = p.actionid
    """,
    "actions": "select name from km2pg.actions",
    "keys": "select name from km2pg.keys",
    # The person by the least name of its identities, as in "users".
    "person_properties": """
        select (select min(u.name) from km2pg.users u where u.personid = p.personid),
               p.key, p.value, p.t, p.first_value, p.first_t
          from km2pg.person_properties p
    """,
}


def canonical_dump(con: db.Connection) -> Dump:
    # pg8000 parses timestamptz with strptime, most of a big dump's time; fromisoformat reads
    # the server's output ("2026-01-02 03:04:05+00") to the same datetime, many times faster.
    parse = con.pg_types[TIMESTAMPTZ_OID]
    con.register_in_adapter(TIMESTAMPTZ_OID, datetime.fromisoformat)
    try:
        return {
            name: sorted({tuple(row) for row in db.rows(con, sql)}, key=repr)
            for name, sql in CANONICAL_QUERIES.items()
        }
    finally:
        con.register_in_adapter(TIMESTAMPTZ_OID, parse)


def canonical_digest(con: db.Connection) -> dict[str, tuple[int, str]]:
    """Each table of the canonical dump as (distinct rows, hash), computed by the server: two
    databases of one server (same settings) digest equal exactly when their dumps are equal.
    A fraction of a dump's cost, for checks repeated many times."""
    # Times as text depend on the session's time zone: make it UTC for the digest.
    zone = db.scalar(con, "select current_setting('TimeZone')")
    con.run("SET TIME ZONE 'UTC'")
    try:
        return {
            name: (int(count), str(md5))
            for name, sql in CANONICAL_QUERIES.items()
            for count, md5 in db.rows(
                con,
                f"""
                select count(*), md5(coalesce(string_agg(r, E'\\n' order by r collate "C"), ''))
                  from (select distinct q::text as r from ({sql}) as q) as rows
                """,
            )
        }
    finally:
        db.scalar(con, "select set_config('TimeZone', :zone, false)", zone=zone)


def dump_differences(got: Dump, want: Dump, shown: int = 5) -> str:
    """What one canonical dump has that the other lacks, table by table (a few rows each)."""
    lines = []
    for table in sorted(set(got) | set(want)):
        have, need = set(got.get(table, [])), set(want.get(table, []))
        for label, rows in (("extra", have - need), ("missing", need - have)):
            if rows:
                sample = sorted(rows, key=repr)[:shown]
                lines.append(f"{table}: {len(rows)} {label}, e.g. {sample}")
    return "\n".join(lines)


def assert_matches_oracle(con: db.Connection, paths: Iterable[Path]) -> None:
    """The database holds exactly what the independent oracle computes for these files."""
    got, want = canonical_dump(con), oracle_dump_of_paths(paths)
    differences = dump_differences(got, want)
    assert got == want, f"the database differs from the oracle:\n{differences}"


def check_invariants(con: db.Connection, *, pruned: bool = False) -> None:
    """What must hold after any sequence of loads (and prunes, when ``pruned``)."""
    bad_person = db.scalar(
        con,
        """
        select count(*) from km2pg.users u
          join (select personid, min(userid) as smallest from km2pg.users group by personid) p
         using (personid)
         where u.personid <> p.smallest
    """,
    )
    assert bad_person == 0, "personid must be the smallest userid of its person"
    bad_eventid = db.scalar(
        con,
        """
        select count(*) from km2pg.events
         where eventid <> ((extract(epoch from t)::bigint - 946684800) << 32) | userid
    """,
    )
    assert bad_eventid == 0, "eventid must encode (userid, t)"
    orphans = db.scalar(
        con,
        """
        select (select count(*) from km2pg.event_actions x
                 where not exists (select from km2pg.events e where e.eventid = x.eventid))
             + (select count(*) from km2pg.event_properties x
                 where not exists (select from km2pg.events e where e.eventid = x.eventid))
    """,
    )
    assert orphans == 0, "every action and property belongs to an event"
    loaded_twice = db.scalar(
        con,
        """
        select count(*) from (select export_key, content_md5 from km2pg.files
         where status = 'loaded' group by 1, 2 having count(*) > 1) x
    """,
    )
    assert loaded_twice == 0
    if not pruned and db.scalar(con, "select to_regclass('km2pg.person_property_state')"):
        assert person_properties_drift(con) == 0, (
            "person_properties must equal its full recomputation from event_properties"
        )


def person_properties_drift(con: db.Connection) -> int:
    """Rows in which the loader's person_property_state and a full recomputation differ."""
    return int(
        db.scalar(
            con,
            """
            select count(*) from (
                (select * from km2pg.person_property_state
                 except all select * from km2pg.person_properties_recomputed())
                union all
                (select * from km2pg.person_properties_recomputed()
                 except all select * from km2pg.person_property_state)) as drift
            """,
        )
    )


# ---------------------------------------------------------------------------------------------
# Exports, loads and dumps shared by the order, concurrency and fault tests


def overlapping_export(
    folder: Path, *, lines: int, files: int, seed: int, copies: int = 2, days: float = 45
) -> list[Path]:
    """A messy synthetic export whose identities, aliases and times overlap across files, plus
    byte copies of its first ``copies`` files under other export keys (a line repeated in
    another file must count once). In the order ``km2pg load FOLDER`` loads them."""
    generate_export(folder, lines=lines, files=files, seed=seed, messy=True, days=days)
    originals = [Path(f.path) for f in discover_local(folder)]
    target = folder / "copies" / "revisions"
    target.mkdir(parents=True)
    for n, path in enumerate(originals[:copies]):
        (target / f"{90000 + n}.json").write_bytes(path.read_bytes())
    return [Path(f.path) for f in discover_local(folder)]


def load_serially(settings: ConnectionSettings, files: Iterable[Path]) -> None:
    with db.connection(settings) as con:
        load.prepare_connection(con)
        for path in files:
            assert load.load_file(con, local_file(path)).status in ("loaded", "skipped")


def dump_of(settings: ConnectionSettings) -> Dump:
    """The canonical dump of a database whose invariants hold."""
    with db.connection(settings) as con:
        check_invariants(con)
        return canonical_dump(con)


def dsn_of(settings: ConnectionSettings, **params: str) -> str:
    """A DSN for the CLI, with the password (unlike ``settings.uri()``) and extra parameters."""
    if settings.unix_socket:
        query = {"host": settings.host, "port": str(settings.port), **params}
        return f"postgresql://{settings.user}@/{settings.database}?{urlencode(query)}"
    password = f":{settings.password}" if settings.password else ""
    query = {"sslmode": settings.sslmode, **params}
    return (
        f"postgresql://{settings.user}{password}@{settings.host}:{settings.port}/"
        f"{settings.database}?{urlencode(query)}"
    )


def km2pg_command(*args: str) -> list[str]:
    """The argv that runs the ``km2pg`` command of this checkout."""
    return [sys.executable, "-m", "km2pg.cli", *args]


def km2pg(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run the ``km2pg`` command as a user does; its output is captured."""
    return subprocess.run(
        km2pg_command(*args),
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def run_loaders(
    settings: ConnectionSettings, shares: Sequence[Sequence[Path]], reports: Path
) -> None:
    """One process per share, each loading its files (shuffled by its index) on one connection;
    they start loading together. Fails with the workers' tracebacks if any of them failed."""
    reports.mkdir(parents=True, exist_ok=True)
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(len(shares))
    workers = [
        context.Process(
            target=_load_worker,
            args=(settings, [str(p) for p in share], seed, start, str(reports / f"{seed}.txt")),
        )
        for seed, share in enumerate(shares)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)  # a safety net: a deadlock would fail, not hang, the test
    for worker in workers:
        if worker.is_alive():
            worker.kill()
            worker.join()
    failures = [p.read_text() for p in sorted(reports.glob("*.txt"))]
    assert [w.exitcode for w in workers] == [0] * len(workers), "\n".join(failures)


def _load_worker(
    settings: ConnectionSettings, paths: list[str], seed: int, start: Any, report: str
) -> None:
    try:
        files = list(paths)
        random.Random(seed).shuffle(files)
        with db.connection(settings) as con, load.Lookahead() as lookahead:
            load.prepare_connection(con)
            start.wait(timeout=120)
            # Each file's load parses the next one ahead, as a serial loader does.
            for path, following in zip(files, [*files[1:], None], strict=True):
                after = None if following is None else local_file(Path(following))
                result = load.load_file(
                    con, local_file(Path(path)), lookahead=lookahead, next_file=after
                )
                if result.status not in ("loaded", "skipped"):
                    raise AssertionError(f"{path}: {result.status} {result.error}")
    except BaseException:
        # Leave the reason where the test can show it (a child's stderr is easily lost).
        Path(report).write_text(traceback.format_exc())
        raise


def load_demo_database(
    admin: ConnectionSettings, template: str, folder: Path, *, lines: int, files: int
) -> ConnectionSettings:
    """A new database holding demo data (28 days up to now, as ``km2pg demo`` makes it, at
    ``lines`` lines in ``files`` files), loaded and analyzed; drop it with conftest's
    ``drop_database``."""
    from tests.conftest import create_database

    generate_export(folder, lines=lines, files=files, days=28.0)
    settings = create_database(admin, template)
    with db.connection(settings) as con:
        load.prepare_connection(con)
        for file in discover_local(folder / "revisions"):
            assert load.load_file(con, file).status == "loaded"
        # Fresh tables have no statistics yet; the insight functions' plans need them.
        con.run("ANALYZE")
    return settings


class LoadThread(threading.Thread):
    """One ``load_file`` on its own connection, in a thread; ``status`` once it ended."""

    def __init__(self, settings: ConnectionSettings, path: Path) -> None:
        super().__init__(daemon=True)
        self.settings, self.path = settings, path
        self.status: str | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with db.connection(self.settings) as con:
                load.prepare_connection(con)
                self.status = load.load_file(con, local_file(self.path)).status
        except BaseException as error:  # shown by the test
            self.error = error


def lock_waiters_reach(
    settings: ConnectionSettings, wait_event: str, count: int = 1, seconds: float = 30
) -> bool:
    """Whether ``count`` backends of this database wait (or within ``seconds`` come to wait) for
    a lock of that kind (``advisory``, ``transactionid``...)."""
    deadline = time.monotonic() + seconds
    with db.connection(settings) as con:
        while time.monotonic() < deadline:
            waiting = db.scalar(
                con,
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND wait_event = :event",
                event=wait_event,
            )
            if waiting >= count:
                return True
            time.sleep(0.05)
    return False
