"""Test databases on a Citus cluster: ``KM2PG_TEST_DSN`` names the coordinator and
``KM2PG_TEST_CITUS_WORKERS`` (``host:port,host:port``) its workers.

Citus 13 does not pass CREATE DATABASE on to the workers, and its node list is kept per database,
so a test database is made on every node under one name. The template is made once (the citus
extension on every node, the workers registered, km2pg migrated and so distributed); each test
database is then a copy of it on every node, which carries the shards and their metadata along
(the shards of database X on a worker are found in the worker's database X).
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import Final

import pytest
from pg8000.exceptions import DatabaseError

from km2pg import db
from km2pg.dsn import ConnectionSettings

WORKERS_ENV: Final = "KM2PG_TEST_CITUS_WORKERS"
HOW_TO_RUN: Final = (
    "run them with `make test-citus CITUS_GIT=<git dir of citusdata/citus>` "
    "(or CITUS_SRC=<Citus source tree>)"
)
_ATTEMPTS: Final = 10
OBJECT_IN_USE: Final = "55006"


def workers() -> list[tuple[str, int]]:
    """The worker nodes named by ``KM2PG_TEST_CITUS_WORKERS``; empty when not on Citus."""
    value = os.environ.get(WORKERS_ENV, "").strip()
    nodes = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        host, _, port = item.rpartition(":")
        nodes.append((host, int(port)))
    return nodes


def single_node(reason: str) -> pytest.MarkDecorator:
    """Mark a test that checks what only one PostgreSQL shows (its plan, its own relations):
    skipped on a Citus cluster, saying why and where tests/citus checks the cluster's side."""
    return pytest.mark.skipif(bool(workers()), reason=f"single PostgreSQL only: {reason}")


def _nodes(admin: ConnectionSettings) -> list[ConnectionSettings]:
    """The coordinator, then each worker, as the admin role on its maintenance database."""
    return [admin] + [replace(admin, host=host, port=port) for host, port in workers()]


def create_template(admin: ConnectionSettings, name: str) -> None:
    create_empty(admin, name)
    with db.connection(admin.with_database(name)) as con:
        db.migrate(con)


def create_empty(admin: ConnectionSettings, name: str) -> None:
    """A database on every node with the citus extension and the workers registered."""
    for node in _nodes(admin):
        with db.connection(node) as con:
            con.run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            con.run(f'CREATE DATABASE "{name}"')
            con.run(f'ALTER DATABASE "{name}" SET search_path = km2pg, public')
        with db.connection(node.with_database(name)) as con:
            con.run("CREATE EXTENSION IF NOT EXISTS citus")
    with db.connection(admin.with_database(name)) as con:
        con.run("SELECT citus_set_coordinator_host(:host, :port)", host=admin.host, port=admin.port)
        for host, port in workers():
            con.run("SELECT citus_add_node(:host, :port)", host=host, port=port)


def copy_database(admin: ConnectionSettings, template: str, name: str) -> None:
    """``name`` as a copy of ``template`` on every node."""
    for node in _nodes(admin):
        with db.connection(node) as con:
            # WAL_LOG: a small database copies faster than with a checkpoint (FILE_COPY).
            _alone(
                con, template, f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY WAL_LOG'
            )
            con.run(f'ALTER DATABASE "{name}" SET search_path = km2pg, public')


def drop_database(admin: ConnectionSettings, name: str) -> None:
    for node in _nodes(admin):
        with db.connection(node) as con:
            _alone(con, name, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _alone(con: db.Connection, database: str, sql: str) -> None:
    """Run ``sql``, which needs ``database`` to itself.

    Citus keeps sessions in a database (its maintenance daemon, cached connections between
    nodes) that DROP ... WITH (FORCE) does not end, and may open one again at any moment: end
    them and run at once, a few times if one came back in between.
    """
    for attempt in range(_ATTEMPTS):
        con.run(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = :name AND pid <> pg_backend_pid()",
            name=database,
        )
        try:
            con.run(sql)
            return
        except DatabaseError as error:
            if db.sqlstate(error) != OBJECT_IN_USE or attempt == _ATTEMPTS - 1:
                raise
            time.sleep(0.1)
