"""km2pg_app, the role made for km2pg: no superuser, owns schema km2pg and nothing else, and
migrates and loads as itself (the embedded server trusts its socket, so no password is asked)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from km2pg import db, load
from km2pg.dsn import ConnectionSettings
from km2pg.roles import create_app_role, create_role, hand_over
from km2pg.sources import local_file
from tests.conftest import drop_database
from tests.helpers import write_export


@pytest.fixture  # request it before the database: it is dropped after the database
def role(pg_admin: ConnectionSettings) -> Iterator[str]:
    name = f"km2pg_app_{uuid.uuid4().hex[:8]}"
    yield name
    with db.connection(pg_admin) as con:
        for made in (f"{name}_clone", name):
            if db.scalar(
                con, "SELECT count(*) FROM pg_roles WHERE rolname = CAST(:r AS name)", r=made
            ):
                con.run(
                    str(db.scalar(con, "SELECT format('DROP ROLE %I', CAST(:r AS text))", r=made))
                )


@pytest.fixture
def empty_database(pg_admin: ConnectionSettings) -> Iterator[ConnectionSettings]:
    """A database without the km2pg schema (a new deployment)."""
    name = f"km2pg_test_{uuid.uuid4().hex[:12]}"
    with db.connection(pg_admin) as con:
        con.run(f'CREATE DATABASE "{name}"')
    settings = pg_admin.with_database(name)
    yield settings
    drop_database(pg_admin, settings)


def load_one(settings: ConnectionSettings, folder: Path, revision: int) -> str:
    when = 1_700_000_000 + revision * 40 * 86_400  # each revision in a month of its own
    path = write_export(folder, revision, [{"_p": f"p{revision}", "_t": when, "_n": "signed up"}])
    with db.connection(settings) as con:
        load.prepare_connection(con)
        return load.load_file(con, local_file(path)).status


def owners(settings: ConnectionSettings) -> set[str]:
    """Every owner of schema km2pg and of the objects in it."""
    with db.connection(settings) as con:
        rows = db.rows(
            con,
            """
            SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'km2pg'
            UNION SELECT pg_get_userbyid(relowner) FROM pg_class
             WHERE relnamespace = 'km2pg'::regnamespace
            UNION SELECT pg_get_userbyid(proowner) FROM pg_proc
             WHERE pronamespace = 'km2pg'::regnamespace
            """,
        )
    return {row[0] for row in rows}


def test_the_setup_step_creates_the_role_migrates_and_hands_everything_over(
    role: str, empty_database: ConnectionSettings, tmp_path: Path
) -> None:
    with db.connection(empty_database) as con:
        done = create_app_role(con, "a-password", role=role, clone_password="clone-password")
    applied = [f"applied {m.version:04d}_{m.name}" for m in db.migrations()]
    clone = f"{role}_clone"
    assert done[: 3 + len(applied)] == [
        f"created role {role}",
        f"created role {clone}",
        f"{clone} acts as {role}",
        *applied,
    ]
    assert "ALTER TABLE km2pg.files" in done
    app = replace(empty_database, user=role, password="a-password")
    with db.connection(app) as con:
        privileged = "SELECT rolsuper OR rolcreatedb OR rolcreaterole FROM pg_roles"
        assert db.scalar(con, f"{privileged} WHERE rolname = current_user") is False
        assert db.migrate(con) == []
    assert load_one(app, tmp_path, 1) == "loaded"
    # After a rotation the functions log in as the clone: what it creates is still the role's.
    rotated = replace(empty_database, user=clone, password="clone-password")
    with db.connection(rotated) as con:
        assert db.rows(con, "SELECT session_user::text, current_user::text") == [[clone, role]]
    assert load_one(rotated, tmp_path, 2) == "loaded"  # a new month: partitions made as clone
    assert owners(empty_database) == {role}


def test_with_the_readme_steps_km2pg_migrate_and_loads_work_as_the_role(
    pg_admin: ConnectionSettings,
    role: str,
    empty_database: ConnectionSettings,
    tmp_path: Path,
) -> None:
    newest = db.migrations()[-1]
    with db.connection(empty_database) as con:  # an older km2pg, run as the administrator
        db.migrate(con, target=newest.version - 1)
        # Partitions the administrator made (a load would also migrate to the newest version).
        assert db.scalar(con, "SELECT km2pg.ensure_month_partitions(now())") is True
    with db.connection(empty_database) as con:
        create_role(con, "first", role)
        create_role(con, "second", role)  # again: the password changes, no error
        hand_over(con, role)
    app = replace(empty_database, user=role, password="second")
    with db.connection(app) as con:
        assert [m.version for m in db.migrate(con)] == [newest.version]  # as the role
    assert load_one(app, tmp_path, 2) == "loaded"  # a new month: partitions of its own
    assert owners(empty_database) == {role}
    with db.connection(pg_admin) as con:
        elsewhere = db.scalar(
            con,
            """
            SELECT count(*) FROM pg_shdepend d JOIN pg_roles r ON r.oid = d.refobjid
             WHERE r.rolname = CAST(:r AS name) AND d.deptype = 'o'
               AND d.dbid <> (SELECT oid FROM pg_database WHERE datname = CAST(:db AS name))
            """,
            r=role,
            db=empty_database.database,
        )
    assert elsewhere == 0, "the role owns nothing outside this database"
    with db.connection(app) as con, pytest.raises(Exception, match="permission denied"):
        con.run("CREATE TABLE public.not_ours (x int)")
    with db.connection(app) as con, pytest.raises(Exception, match="permission denied"):
        con.run("CREATE SCHEMA another")
