"""A load cut off inside its transaction (the database restarted, the connection terminated, a
statement timed out): a clear one-line error, nothing half-written, and the retry completes."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest

from km2pg import db, load
from km2pg.dsn import ConnectionSettings
from km2pg.errors import DatabaseUnavailable
from km2pg.load import LoadOptions
from km2pg.sources import local_file
from tests.faults.support import (
    Reference,
    alias_lock_held,
    assert_whole_files_only,
    one_line_error,
    state_of,
    wait_until_waiting_for_alias_lock,
)
from tests.helpers import dsn_of, dump_of, km2pg, km2pg_command, load_serially

VICTIM = "km2pg-victim"


def _interrupted_load(
    settings: ConnectionSettings,
    reference: Reference,
    interrupt: Callable[[int], object],
    **dsn: str,
) -> str:
    """Load two files, then ``km2pg load FOLDER``: it skips those two and stops inside the
    third file's load transaction, every row of it written and none committed, where
    ``interrupt(backend pid)`` is called. Returns the load's error line."""
    first = km2pg("load", *map(str, reference.files[:2]), "--dsn", dsn_of(settings), "--quiet")
    assert first.returncode == 0, first.stderr
    with alias_lock_held(settings):
        loader = subprocess.Popen(
            km2pg_command(
                "load",
                str(reference.folder),
                "--dsn",
                dsn_of(settings, application_name=VICTIM, **dsn),
                "--quiet",
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            interrupt(wait_until_waiting_for_alias_lock(settings, VICTIM, loader))
            _, err = loader.communicate(timeout=60)
        finally:
            if loader.poll() is None:
                loader.kill()
                loader.communicate()
    assert loader.returncode == 1, err
    error = one_line_error(err)
    assert error.endswith(f"(while loading {reference.files[2]})"), error
    return error


def _assert_nothing_half_written_and_the_retry_completes(
    settings: ConnectionSettings, reference: Reference
) -> None:
    assert assert_whole_files_only(settings, reference) == 2
    retry = km2pg("load", str(reference.folder), "--dsn", dsn_of(settings), "--quiet")
    assert retry.returncode == 0, retry.stderr
    assert dump_of(settings) == reference.dump
    assert state_of(settings).ledger == reference.ledger


def test_a_database_restart_inside_a_load_transaction_fails_with_one_line_and_the_retry_completes(
    embedded_server, database, reference
):
    error = _interrupted_load(database, reference, lambda _pid: embedded_server.restart())
    assert error.startswith("km2pg: error: database unavailable"), error
    assert "terminating connection due to administrator command" in error
    _assert_nothing_half_written_and_the_retry_completes(database, reference)


def test_a_database_restart_during_copy_raises_database_unavailable_and_leaves_nothing(
    embedded_server, database, reference
):
    restarts: list[int] = []

    def restart_once(lines: int) -> None:
        # Called as the COPY streams, once its first chunk is sent.
        if not restarts:
            restarts.append(lines)
            embedded_server.restart()

    con = db.connect(database)
    try:
        load.prepare_connection(con)
        with pytest.raises(DatabaseUnavailable) as raised:
            load.load_file(
                con, local_file(reference.files[0]), LoadOptions(on_progress=restart_once)
            )
    finally:
        db.close_quietly(con)
    assert restarts, "the file must be big enough for the COPY to report progress midway"
    message = str(raised.value)
    # Whether the client sees the server's reason depends on whether it was writing or reading.
    assert message.startswith(
        (
            "database unavailable: connection lost",
            "database unavailable: the server closed the connection",
        )
    ), message
    assert "\n" not in message
    assert assert_whole_files_only(database, reference) == 0
    load_serially(database, reference.files)
    assert dump_of(database) == reference.dump


def test_a_connection_cut_between_copy_and_commit_fails_with_one_line_and_the_retry_completes(
    pg_admin, database, reference
):
    def terminate(pid: int) -> None:
        with db.connection(pg_admin) as con:
            # Typed: Citus adds pg_terminate_backend(bigint), for its global process ids.
            terminated = db.scalar(
                con, "select pg_terminate_backend(CAST(:pid AS integer))", pid=pid
            )
            assert terminated is True

    error = _interrupted_load(database, reference, terminate)
    assert error.startswith("km2pg: error: database unavailable"), error
    assert "terminating connection due to administrator command" in error
    _assert_nothing_half_written_and_the_retry_completes(database, reference)


def test_a_statement_timeout_fails_with_one_line_and_the_retry_completes(database, reference):
    # The timeout comes from the DSN, as a user sets it; the load waits past it for the lock.
    error = _interrupted_load(
        database, reference, lambda _pid: None, options="-c statement_timeout=2s"
    )
    assert error.startswith("km2pg: error: database unavailable"), error
    assert "canceling statement due to statement timeout" in error
    _assert_nothing_half_written_and_the_retry_completes(database, reference)
