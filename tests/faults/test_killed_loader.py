"""Nothing lost, nothing doubled, nothing stalls: a loader killed (SIGKILL) at any moment."""

from __future__ import annotations

import random
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from km2pg import db
from km2pg.dsn import ConnectionSettings
from tests.conftest import create_database, drop_database
from tests.faults.support import (
    Reference,
    alias_lock_held,
    assert_whole_files_only,
    state_of,
    wait_until_waiting_for_alias_lock,
)
from tests.helpers import dsn_of, dump_of, km2pg, km2pg_command

KILLS = 20
SEED = 1128
ROOT = Path(__file__).resolve().parents[2]

# What a statement does, from the start of its text.
_STATEMENTS = (
    ("COPY pg_temp.km2pg_stage", "COPY into staging"),
    ("ANALYZE pg_temp", "ANALYZE staging"),
    ("TRUNCATE", "TRUNCATE staging"),
    ("CREATE TEMP TABLE s_merge", "merge persons"),
    ("CREATE TEMP TABLE s_", "resolve names"),
    ("SAVEPOINT", "savepoint"),
    ("RELEASE SAVEPOINT", "savepoint"),
    ("INSERT INTO km2pg.users", "INSERT users"),
    ("INSERT INTO km2pg.actions", "INSERT actions"),
    ("INSERT INTO km2pg.keys", "INSERT keys"),
    ("INSERT INTO km2pg.events", "INSERT events"),
    ("INSERT INTO km2pg.event_actions", "INSERT event_actions"),
    ("INSERT INTO km2pg.event_properties", "INSERT event_properties"),
    ("INSERT INTO km2pg.aliases", "INSERT aliases"),
    ("INSERT INTO km2pg.files", "INSERT ledger row"),
    ("INSERT INTO km2pg.rejects", "INSERT rejects"),
    ("COPY s_merge", "merge persons"),
    ("UPDATE km2pg.users", "merge persons"),
    ("SELECT DISTINCT u1.personid", "merge persons"),
    ("SELECT km2pg.ensure_month_partitions", "create partitions"),
    ("SELECT to_regclass", "look up partitions"),
    ("SELECT pg_advisory", "take a lock"),
    ("LOCK TABLE", "take a lock"),
    ("SELECT fileid FROM km2pg.files", "look up the ledger"),
    ("SELECT EXISTS", "look up the ledger"),
    ("COMMIT", "COMMIT"),
    ("BEGIN", "BEGIN"),
    ("(the load returned)", "the load returned"),
)


def _what(sql: str) -> str:
    return next((name for start, name in _STATEMENTS if sql.startswith(start)), sql[:40])


@dataclass(frozen=True)
class Kill:
    file: int
    statement: int
    mode: str
    written: bool
    committed: bool
    sql: str

    @property
    def committing(self) -> bool:
        """Killed with the load's commit sent: the server commits it, client or not."""
        return self.mode == "sent" and self.sql == "COMMIT" and self.written and not self.committed

    @property
    def moment(self) -> str:
        if self.mode == "before":
            return f"before sending: {_what(self.sql)}"
        if self.sql.startswith("COPY"):
            return f"streaming, a first chunk sent: {_what(self.sql)}"
        return f"the server running: {_what(self.sql)}"


def _loader(settings: ConnectionSettings, folder: Path, name: str, *where: str) -> list[str]:
    dsn = dsn_of(settings, application_name=name)
    return [sys.executable, "-m", "tests.faults.killable_loader", dsn, str(folder), *where]


def _statements_per_file(settings: ConnectionSettings, folder: Path) -> list[tuple[int, int, int]]:
    """Load everything once, counting each file's statements: (how many, the number of the
    COPY into staging, the number of the commit)."""
    counting = subprocess.run(
        _loader(settings, folder, "km2pg-count", "count"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert counting.returncode == 0, counting.stderr
    return [
        (int(count), int(copy), int(commit))
        for _, _, count, copy, commit in map(str.split, counting.stdout.splitlines())
    ]


def _kill(
    settings: ConnectionSettings, folder: Path, name: str, file: int, statement: int, mode: str
) -> Kill:
    """Start a loader, let it reach the point, SIGKILL it there."""
    loader = subprocess.Popen(
        _loader(settings, folder, name, str(file), str(statement), mode),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # A safety net, not a synchronization: the loader says when it is there.
        ready, _, _ = select.select([loader.stdout], [], [], 120)
        assert ready, "the loader never reached its stopping point"
        line = loader.stdout.readline()
    finally:
        loader.kill()
        _, err = loader.communicate()
    assert line, f"the loader ended before its stopping point: {err}"
    number, written, committed, sql = line.rstrip("\n").split(" ", 3)
    assert int(number) <= statement
    return Kill(file, statement, mode, written == "1", committed == "1", sql)


def _wait_until_gone(monitor: db.Connection, name: str) -> None:
    """Wait for a killed loader's backend to end (it finishes the statement it was sent)."""
    deadline = time.monotonic() + 60
    while db.scalar(
        monitor, "select count(*) from pg_stat_activity where application_name = :n", n=name
    ):
        assert time.monotonic() < deadline, "the killed loader's backend never ended"
        time.sleep(0.005)  # polling the server for the state we wait for


def test_a_loader_killed_at_twenty_random_moments_leaves_only_whole_files_and_reloading_completes(
    pg_admin, template_database, reference: Reference
):
    """Twenty SIGKILLs of a serial loader of the export, at seeded random points spread over
    the loads of all its files: any statement of a file's load (parse and COPY into staging,
    each set-based insert, the ledger row, the identity merge, the commit, what follows), the
    loader killed either just before sending it or while the server runs it.

    After each kill the database holds exactly the files whose load committed (no partial
    file, nothing of a file not loaded: the data and the ledger are a clean serial load's of
    just those files), and the next loader goes on from there. At the end ``km2pg load``
    completes, with a clean serial load's dump.
    """
    rng = random.Random(SEED)
    files = len(reference.files)
    settings = create_database(pg_admin, template_database)
    monitor = db.connect(pg_admin)
    try:
        statements = _statements_per_file(settings, reference.folder)
        assert len(statements) == files
        assert assert_whole_files_only(settings, reference) == files
        drop_database(pg_admin, settings)
        settings = create_database(pg_admin, template_database)

        # Where each kill falls in its file's load: spread evenly over the statements (the last
        # point being once the load returned), in a random order; and surely these three:
        # before the commit, with the commit sent, amid the COPY's rows.
        spread = [(n + rng.random()) / KILLS for n in range(KILLS)]
        rng.shuffle(spread)
        sure = [("commit", "before"), ("commit", "sent"), ("copy", "sent")]
        surely = dict(zip(rng.sample(range(KILLS), len(sure)), sure, strict=True))
        kills: list[Kill] = []
        loaded = 0
        for n in range(KILLS):
            if loaded == files:
                # Everything is in: loading again changes nothing. Start over.
                again = km2pg("load", str(reference.folder), "--dsn", dsn_of(settings), "-q")
                assert again.returncode == 0, again.stderr
                assert assert_whole_files_only(settings, reference) == files
                drop_database(pg_admin, settings)
                settings = create_database(pg_admin, template_database)
                loaded = 0
            # Mostly the next file or one soon after, so the kills meet every prefix of loads.
            file = rng.randrange(loaded, min(files, loaded + 3))
            count, copy, commit = statements[file]
            if n in surely:
                which, mode = surely[n]
                statement = commit if which == "commit" else copy
            else:
                statement = 1 + int(spread[n] * (count + 1))
                mode = rng.choice(["before", "sent"])
            name = f"km2pg-kill-{n}"
            kill = _kill(settings, reference.folder, name, file, statement, mode)
            kills.append(kill)
            if kill.committing:
                _wait_until_gone(monitor, name)
            loaded = assert_whole_files_only(settings, reference)
            expected = kill.file + (kill.committed or kill.committing)
            assert loaded == expected, f"{kill}: {loaded} files loaded, {expected} expected"

        # After the last kill, loading again completes, and gives a clean serial load's dump.
        final = km2pg("load", str(reference.folder), "--dsn", dsn_of(settings), "--quiet")
        assert final.returncode == 0, final.stderr
        assert dump_of(settings) == reference.dump
        assert state_of(settings).ledger == reference.ledger
        print(f"\n{KILLS} kills; each file's (statements, COPY, commit): {statements}")
        for kill in kills:
            print(f"  file {kill.file:2}  statement {kill.statement:2}  {kill.moment}")
    finally:
        db.close_quietly(monitor)
        drop_database(pg_admin, settings)


@contextmanager
def _loader_killed_while_waiting(
    settings: ConnectionSettings, folder: Path
) -> Iterator[tuple[db.Connection, int]]:
    """A ``km2pg load`` killed while its backend waits for the alias lock, which stays held:
    yields the holding connection and the killed loader's backend pid."""
    with alias_lock_held(settings) as holder:
        killed = subprocess.Popen(
            km2pg_command(
                "load",
                str(folder),
                "--dsn",
                dsn_of(settings, application_name="km2pg-killed"),
                "-q",
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        leftover = wait_until_waiting_for_alias_lock(settings, "km2pg-killed", killed)
        killed.kill()
        killed.wait()
        yield holder, leftover


def test_a_killed_loaders_backend_still_holding_its_locks_delays_the_next_load_which_completes(
    database, reference: Reference
):
    """A loader killed while its backend waits for a lock: the backend stays, in the middle of
    the load transaction, holding the file's lock, until it notices its client is gone (see
    the next test). The next load of the same folder waits for that lock (it does not fail),
    and once the leftover backend has rolled back, completes as a clean load."""
    # The held alias lock stands for a long merge of another loader.
    with _loader_killed_while_waiting(database, reference.folder) as (holder, leftover):
        following = subprocess.Popen(
            km2pg_command(
                "load",
                str(reference.folder),
                "--dsn",
                dsn_of(database, application_name="km2pg-next"),
                "-q",
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _wait_until_blocked_by(holder, "km2pg-next", leftover, following)
            holder.run(
                "SELECT pg_advisory_unlock(:ns, :key)", ns=db.LOCK_NAMESPACE, key=db.LOCK_ALIASES
            )
            _, err = following.communicate(timeout=120)
        finally:
            if following.poll() is None:
                following.kill()
                following.communicate()
    assert following.returncode == 0, err
    assert dump_of(database) == reference.dump
    assert state_of(database).ledger == reference.ledger


def test_a_killed_loaders_backend_gives_up_its_locks_within_seconds_whatever_it_waits_for(
    database, reference: Reference
):
    """A loader killed while its backend waits for a lock that is never granted: the backend
    notices its client is gone (client_connection_check_interval) and rolls back, releasing the
    load's locks, instead of holding them for as long as the wait lasts."""
    with _loader_killed_while_waiting(database, reference.folder) as (holder, leftover):
        deadline = time.monotonic() + 20
        gone = "select not exists (select from pg_stat_activity where pid = :pid)"
        while not db.scalar(holder, gone, pid=leftover):
            assert time.monotonic() < deadline, "the killed loader's backend still holds its locks"
            time.sleep(0.05)  # polling the server for the state we wait for
        # Still holding the alias lock: the backend went because its client did, not the lock.
        assert db.scalar(
            holder,
            "select count(*) from pg_locks where locktype = 'advisory' and granted"
            " and pid = pg_backend_pid()",
        )


def _wait_until_blocked_by(
    monitor: db.Connection, name: str, pid: int, process: subprocess.Popen[str]
) -> None:
    """Wait for the loader connected as ``name`` to wait for a lock that backend ``pid`` holds
    (or for that backend to be gone)."""
    deadline = time.monotonic() + 60
    blocked = """
        select not exists (select from pg_stat_activity where pid = :pid)
            or exists (select from pg_stat_activity
                        where application_name = :n and :pid = any(pg_blocking_pids(pid)))
    """
    while not db.scalar(monitor, blocked, n=name, pid=pid):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the next load never waited for the leftover backend"
        time.sleep(0.01)  # polling the server for the state we wait for
