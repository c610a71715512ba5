"""What the fault tests share: a clean serial load's state after each file, a consistent
snapshot of a database's state, and ways to stop a loader at a known point of its load."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from km2pg import db
from km2pg.dsn import ConnectionSettings
from tests.helpers import Dump, canonical_digest, check_invariants

Digest = dict[str, tuple[int, str]]

# Each loaded file's ledger row (what ids and clocks do not decide), and the rejects it kept.
LOADED_LEDGER = """
select f.export_key, f.content_md5, f.lines, f.events, f.actions, f.properties, f.aliases,
       f.rejects, f.min_t, f.max_t,
       (select count(*) from km2pg.rejects r where r.fileid = f.fileid) as kept_rejects
  from km2pg.files f
 where f.status = 'loaded'
 order by f.fileid
"""


def loaded_ledger(con: db.Connection) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in db.rows(con, LOADED_LEDGER)]


@dataclass(frozen=True)
class Reference:
    """A clean serial load of ``files`` in the order ``km2pg load FOLDER`` takes them."""

    folder: Path
    files: list[Path]
    ledger: list[tuple[Any, ...]]
    """The ledger row of each file's load, in that order."""
    digests: list[Digest]
    """``digests[k]``: the canonical digest once the first k files are loaded."""
    dump: Dump
    """The canonical dump once every file is loaded."""


@dataclass(frozen=True)
class State:
    """A database's load state, read in one snapshot."""

    ledger: list[tuple[Any, ...]]
    failed: int
    digest: Digest


def state_of(settings: ConnectionSettings) -> State:
    """The ledger and the data as of one instant (a load committing meanwhile is all or
    nothing in it), after checking the invariants in that same snapshot."""
    with db.connection(settings) as con:
        con.run("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        check_invariants(con)
        state = State(
            ledger=loaded_ledger(con),
            failed=int(db.scalar(con, "select count(*) from km2pg.files where status = 'failed'")),
            digest=canonical_digest(con),
        )
        con.run("COMMIT")
    return state


def assert_whole_files_only(settings: ConnectionSettings, reference: Reference) -> int:
    """The database holds exactly the files its ledger says are loaded, each whole, as a clean
    serial load of just those files would: no partial file, no rows of a file not loaded.
    Returns how many files are loaded."""
    state = state_of(settings)
    loaded = len(state.ledger)
    assert state.ledger == reference.ledger[:loaded], (
        "the loaded files must be a prefix of the load order, recorded as a clean load does"
    )
    assert state.digest == reference.digests[loaded], (
        f"the data must be that of the {loaded} files recorded loaded, and only that: "
        f"{_differences(state.digest, reference.digests[loaded])}"
    )
    assert state.failed == 0, "a fault of the loader or the database is not the file's failure"
    return loaded


def _differences(got: Digest, want: Digest) -> str:
    return ", ".join(
        f"{table} has {got[table][0]} rows, {want[table][0]} expected"
        for table in want
        if got.get(table) != want[table]
    )


# ---------------------------------------------------------------------------------------------
# Stopping a loader at a known point: inside its load transaction, with every row written


@contextmanager
def alias_lock_held(settings: ConnectionSettings) -> Iterator[db.Connection]:
    """Hold the lock a load takes last, just before its commit (after writing its events,
    actions, properties, aliases, ledger row and rejects), so a loader of a file with aliases
    waits there, everything written and nothing committed, until this session lets go."""
    con = db.connect(settings)
    try:
        con.run("SELECT pg_advisory_lock(:ns, :key)", ns=db.LOCK_NAMESPACE, key=db.LOCK_ALIASES)
        yield con
    finally:
        db.close_quietly(con)


_WAITING_FOR_ALIAS_LOCK = """
select a.pid from pg_stat_activity a join pg_locks l on l.pid = a.pid
 where a.application_name = :app and a.datname = current_database()
   and l.locktype = 'advisory' and not l.granted
   and l.classid::bigint = :ns and l.objid::bigint = :key
"""


def wait_until_waiting_for_alias_lock(
    settings: ConnectionSettings,
    application_name: str,
    process: subprocess.Popen[str],
    timeout: float = 60,
) -> int:
    """Wait for the loader connected as ``application_name`` to queue for the alias lock;
    returns its backend's pid. Fails if the loader exits first."""
    deadline = time.monotonic() + timeout
    with db.connection(settings) as con:
        while True:
            pid = db.scalar(
                con,
                _WAITING_FOR_ALIAS_LOCK,
                app=application_name,
                ns=db.LOCK_NAMESPACE,
                key=db.LOCK_ALIASES,
            )
            if pid is not None:
                return int(pid)
            if process.poll() is not None:
                _, err = process.communicate()
                raise AssertionError(f"the loader exited ({process.returncode}) first: {err}")
            assert time.monotonic() < deadline, "the loader never reached the alias lock"
            time.sleep(0.01)  # polling the server for the state we wait for


def one_line_error(stderr: str) -> str:
    """The CLI's error: exactly one line, km2pg's own, no traceback. Returns it."""
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one line of error, got:\n{stderr}"
    assert lines[0].startswith("km2pg: error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]
