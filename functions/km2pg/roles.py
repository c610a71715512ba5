"""A database role made for km2pg: it logs in, owns schema ``km2pg`` and nothing else.

Run once by an administrator (the RDS master user, or any role that may create roles):
:func:`create_app_role` creates the role (or sets its password again), lets it connect and use
temporary tables (the loader stages each file in one), and makes it the owner of schema
``km2pg`` and of everything in it, so that it can run every migration and every load. It is no
superuser, creates no database or role, and owns nothing outside ``km2pg``.

DDL takes no parameters, so each statement is written by the server itself
(``format('%I', ...)``, ``format('%L', ...)``) from the role name and password given as
parameters: nothing is pasted into SQL on this side. README ("A role for km2pg") gives the same
statements for psql.
"""

from __future__ import annotations

from typing import Final

from km2pg import db
from km2pg.db import Connection
from km2pg.errors import ConfigError

APP_ROLE: Final = "km2pg_app"
SCHEMA: Final = "km2pg"

_ROLE_EXISTS: Final = "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = CAST(:role AS name))"
_CREATE_ROLE: Final = (
    "SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', CAST(:role AS text), "
    "CAST(:password AS text))"
)
_UPDATE_ROLE: Final = (
    "SELECT format('ALTER ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %L', "
    "CAST(:role AS text), CAST(:password AS text))"
)
_MEMBERSHIP: Final = "SELECT format('GRANT %I TO CURRENT_USER', CAST(:role AS text))"
_DATABASE_RIGHTS: Final = (
    "SELECT format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I', current_database(), "
    "CAST(:role AS text))"
)
_CREATE_SCHEMA: Final = (
    "SELECT format('CREATE SCHEMA IF NOT EXISTS %I AUTHORIZATION %I', CAST(:schema AS text), "
    "CAST(:role AS text))"
)
# Every object of the schema that has an owner of its own: tables (partitions one by one),
# views, sequences not owned by a table's identity column (those follow their table), and
# functions. Indexes and identity sequences move with their table.
_OWNER_STATEMENTS: Final = """
SELECT format('ALTER SCHEMA %I OWNER TO %I', nspname, CAST(:role AS text))
  FROM pg_namespace
 WHERE nspname = CAST(:schema AS name) AND pg_get_userbyid(nspowner) <> CAST(:role AS name)
UNION ALL
SELECT format('ALTER %s %I.%I OWNER TO %I',
              CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                             WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END,
              n.nspname, c.relname, CAST(:role AS text))
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = CAST(:schema AS name) AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
   AND pg_get_userbyid(c.relowner) <> CAST(:role AS name)
   AND NOT (c.relkind = 'S' AND EXISTS (
        SELECT 1 FROM pg_depend d
         WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('a', 'i')))
UNION ALL
SELECT format('ALTER ROUTINE %s OWNER TO %I', p.oid::regprocedure, CAST(:role AS text))
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = CAST(:schema AS name) AND pg_get_userbyid(p.proowner) <> CAST(:role AS name)
"""


CLONE_SUFFIX: Final = "_clone"
"""Secrets Manager's multi-user rotation alternates between a user and ``<user>_clone``."""


def create_app_role(
    con: Connection, password: str | None, role: str = APP_ROLE, clone_password: str | None = None
) -> list[str]:
    """Create (or update) ``role``, run the migrations the database lacks, and make ``role``
    own schema km2pg and everything in it; with ``clone_password``, also the rotation clone.

    The migrations run as the administrator: the first one creates the schema, which takes the
    right to create in the database, a right ``role`` does not get. Later ones run as ``role``
    too. Returns what it did (never the password).
    """
    done = create_role(con, password, role)
    if clone_password is not None:
        done += prepare_rotation_clone(con, role, clone_password)
    done += [f"applied {m.version:04d}_{m.name}" for m in db.migrate(con)]
    return done + hand_over(con, role)


def prepare_rotation_clone(con: Connection, role: str, password: str) -> list[str]:
    """Make ``<role>_clone`` log in *as* ``role``: member of it, with ``role`` as its session
    default, so tables and partitions it creates are ``role``'s (else, after a rotation, the
    pruner logged in as the other user could not drop them). The rotation function finds the
    clone existing and only changes its password."""
    clone = f"{role}{CLONE_SUFFIX}"
    # Made once; its password is the rotation's from then on (never reset here).
    done = (
        [] if db.scalar(con, _ROLE_EXISTS, role=clone) else create_role_only(con, password, clone)
    )
    _execute(
        con, "SELECT format('GRANT %I TO %I', CAST(:a AS text), CAST(:b AS text))", a=role, b=clone
    )
    _execute(
        con,
        "SELECT format('ALTER ROLE %I SET role = %L', CAST(:b AS text), CAST(:a AS text))",
        a=role,
        b=clone,
    )
    return [*done, f"{clone} acts as {role}"]


def create_role_only(con: Connection, password: str, role: str) -> list[str]:
    """Create ``role`` (or set its password), able to log in, without any right."""
    exists = db.scalar(con, _ROLE_EXISTS, role=role)
    _execute(con, _UPDATE_ROLE if exists else _CREATE_ROLE, role=role, password=password)
    return [f"{'updated' if exists else 'created'} role {role}"]


def create_role(con: Connection, password: str | None, role: str) -> list[str]:
    """Create ``role`` (or set its password; ``None``: keep it) with its rights in this database
    and schema km2pg (created if missing, owned by ``role``)."""
    done: list[str] = []
    con.run("BEGIN")
    try:
        exists = db.scalar(con, _ROLE_EXISTS, role=role)
        if password is not None:
            _execute(con, _UPDATE_ROLE if exists else _CREATE_ROLE, role=role, password=password)
            done.append(f"{'updated' if exists else 'created'} role {role}")
        elif not exists:
            raise ConfigError(f"role {role} does not exist and no password was given for it")
        if not db.scalar(
            con, "SELECT pg_has_role(current_user, CAST(:role AS name), 'USAGE')", role=role
        ):
            _execute(con, _MEMBERSHIP, role=role)
        _execute(con, _DATABASE_RIGHTS, role=role)
        _execute(con, _CREATE_SCHEMA, role=role, schema=SCHEMA)
        con.run("COMMIT")
    except BaseException:
        con.run("ROLLBACK")
        raise
    return done


def hand_over(con: Connection, role: str) -> list[str]:
    """Make ``role`` the owner of schema km2pg and of every object in it, in one transaction."""
    done: list[str] = []
    con.run("BEGIN")
    try:
        for (statement,) in db.rows(con, _OWNER_STATEMENTS, role=role, schema=SCHEMA):
            con.run(statement)
            done.append(" ".join(statement.split()[:3]))
        con.run("COMMIT")
    except BaseException:
        con.run("ROLLBACK")
        raise
    return done


def _execute(con: Connection, writer: str, **params: str) -> None:
    """Run the one statement ``writer`` (a SELECT format(...)) makes the server write."""
    con.run(str(db.scalar(con, writer, **params)))
