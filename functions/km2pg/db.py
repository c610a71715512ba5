"""Connections and schema migrations: the only module that opens connections to PostgreSQL.

Errors from the driver are translated into km2pg's own: :class:`DatabaseUnavailable` for
anything transient (refused, reset, terminated, too many connections, authentication),
with a one-line message that names the server but never the password.
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

import pg8000.native
from pg8000.exceptions import DatabaseError, InterfaceError
from pg8000.native import Connection

from km2pg import citus
from km2pg.dsn import ConnectionSettings
from km2pg.errors import DatabaseUnavailable, Km2pgError, SchemaError, ServerNotTrusted

SCHEMA: Final = "km2pg"
# Advisory lock keys (first int: km2pg's namespace; second: the purpose).
LOCK_NAMESPACE: Final = 0x6B6D3270  # "km2p"
LOCK_MIGRATE: Final = 1
LOCK_PARTITIONS: Final = 2
LOCK_ALIASES: Final = 3

# SQLSTATE classes and codes that mean "try again later", not "your data is wrong".
_TRANSIENT_CLASSES: Final = ("08", "53", "57", "28")
_TRANSIENT_CODES: Final = frozenset({"40001", "40P01", "55P03", "57014", "57P01", "57P02", "57P03"})
# What pg8000 says when the socket fails or was closed.
_CONNECTION_LOST: Final = frozenset({"network error", "connection is closed"})


class AuthenticationFailed(DatabaseUnavailable):
    """The server refused our credentials (perhaps rotated: read them again and retry)."""


class QueryError(Km2pgError):
    """A statement failed for a reason that is not transient (a bug or a schema mismatch)."""


def sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE code of a pg8000 DatabaseError, if any."""
    if isinstance(error, DatabaseError) and error.args and isinstance(error.args[0], dict):
        code = error.args[0].get("C")
        return str(code) if code else None
    return None


def server_message(error: BaseException) -> str:
    """The server's one-line message (``M`` field), or the error's own text."""
    if isinstance(error, DatabaseError) and error.args and isinstance(error.args[0], dict):
        return str(error.args[0].get("M", "")) or str(error)
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def is_transient(error: BaseException) -> bool:
    """True for failures worth retrying: lost connections, restarts, timeouts, limits."""
    if isinstance(error, DatabaseUnavailable | InterfaceError | OSError):
        return True
    code = sqlstate(error)
    return code is not None and (code in _TRANSIENT_CODES or code[:2] in _TRANSIENT_CLASSES)


def is_connection_lost(error: BaseException) -> bool:
    """The connection broke (closed by the server, reset, unreachable), as opposed to a
    statement failing on a working connection."""
    return isinstance(error, OSError) or (
        isinstance(error, InterfaceError) and str(error) in _CONNECTION_LOST
    )


def translate(
    error: BaseException,
    settings: ConnectionSettings | None = None,
    con: Connection | None = None,
) -> Km2pgError:
    """Turn a driver error into a km2pg error with a one-line message.

    ``con``, the connection that failed, may know why the server closed it.
    """
    where = f" ({settings.describe()})" if settings else ""
    if isinstance(error, Km2pgError):
        return error
    if is_connection_lost(error):
        # Say so, and why when the server told us.
        reason = getattr(con, "closed_by_server", None)
        lost = (
            f"the server closed the connection: {reason}"
            if reason
            else f"connection lost ({server_message(error)})"
        )
        return DatabaseUnavailable(f"database unavailable{where}: {lost}")
    if is_transient(error):
        return DatabaseUnavailable(f"database unavailable{where}: {server_message(error)}")
    return QueryError(f"database error: {server_message(error)}")


class _Connection(pg8000.native.Connection):  # type: ignore[misc]  # pg8000 is untyped
    """pg8000's connection, keeping the reason the server gave for closing it.

    A server that ends a session (a restart, ``pg_terminate_backend``, an idle timeout) sends
    the reason as a FATAL error and closes the socket; pg8000 reads on for the end of the
    response and raises only "network error", dropping the reason. :func:`translate` uses it.
    """

    closed_by_server: str | None = None

    def handle_ERROR_RESPONSE(self, data: bytes, context: Any) -> None:
        super().handle_ERROR_RESPONSE(data, context)
        fields = context.error.args[0] if context.error is not None else {}
        # V is the severity untranslated (S may be in the server's language).
        if isinstance(fields, dict) and fields.get("V", fields.get("S")) == "FATAL":
            self.closed_by_server = str(fields.get("M") or "no reason given")


def connect(settings: ConnectionSettings) -> Connection:
    """Open a connection, or raise :class:`DatabaseUnavailable` with a clear one-line message.

    TLS settings that cannot work (no usable root) raise :class:`ConfigError` before anything
    is opened, and a server that fails verification raises :class:`ServerNotTrusted`: neither
    is worth a retry, so neither is reported as an unavailable database.
    """
    ssl_context = settings.ssl_context()
    try:
        sock = _open_socket(settings)
    except OSError as error:
        reason = error.strerror or str(error) or type(error).__name__
        raise DatabaseUnavailable(
            f"cannot reach the database at {settings.describe()}: {reason}"
        ) from None
    try:
        con: Connection = _Connection(
            user=settings.user,
            password=settings.password,
            database=settings.database,
            host=settings.host,
            port=settings.port,
            sock=sock,
            ssl_context=ssl_context,
            application_name=settings.application_name,
            # libpq's ``options`` (``-c name=value`` server settings) go in the startup packet.
            startup_params={"options": settings.options} if settings.options else None,
            tcp_keepalive=True,
        )
    except ssl.SSLCertVerificationError as error:
        sock.close()
        root = settings.sslrootcert or "the default root file"
        reason = error.verify_message or error.reason
        raise ServerNotTrusted(
            f"the database server at {settings.describe()} failed TLS verification "
            f"(sslmode={settings.sslmode}, sslrootcert={root}): {reason}"
        ) from None
    except (DatabaseError, InterfaceError, OSError) as error:
        sock.close()
        message = server_message(error)
        if isinstance(error, InterfaceError) and "SSL" in message:
            message += " (set sslmode=disable for a server without TLS)"
        failure = AuthenticationFailed if is_auth_failure(error) else DatabaseUnavailable
        raise failure(
            f"cannot connect to the database at {settings.describe()}: {message}"
        ) from None
    return con


def _open_socket(settings: ConnectionSettings) -> socket.socket:
    # The connect timeout bounds only the connection itself; statements may run long.
    path = settings.unix_socket
    if path is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(settings.connect_timeout)
        try:
            sock.connect(path)
        except OSError:
            sock.close()
            raise
    else:
        sock = socket.create_connection((settings.host, settings.port), settings.connect_timeout)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.settimeout(None)
    return sock


def is_auth_failure(error: BaseException) -> bool:
    """Wrong password or role: the credentials may have been rotated."""
    return (sqlstate(error) or "").startswith("28") or "password authentication failed" in str(
        error
    )


@contextmanager
def connection(settings: ConnectionSettings) -> Iterator[Connection]:
    """A connection closed on exit; driver errors inside come out translated."""
    con = connect(settings)
    try:
        yield con
    except (DatabaseError, InterfaceError, OSError) as error:
        raise translate(error, settings, con) from error
    finally:
        close_quietly(con)


def close_quietly(con: Connection) -> None:
    # The connection may already be gone; there is nothing left to do then.
    with suppress(Exception):
        con.close()


@contextmanager
def transaction(con: Connection) -> Iterator[Connection]:
    """BEGIN ... COMMIT, or ROLLBACK on any exception (the exception propagates)."""
    con.run("BEGIN")
    try:
        yield con
    except BaseException:
        rollback_quietly(con)
        raise
    con.run("COMMIT")


def rollback_quietly(con: Connection) -> None:
    # A dead connection rolls back by itself.
    with suppress(Exception):
        con.run("ROLLBACK")


def rows(con: Connection, sql: str, **params: Any) -> list[list[Any]]:
    """Run a statement and return its rows (an empty list for statements without rows)."""
    result = con.run(sql, **params)
    return list(result) if result else []


def scalar(con: Connection, sql: str, **params: Any) -> Any:
    result = rows(con, sql, **params)
    return result[0][0] if result else None


# ---------------------------------------------------------------------------------------------
# Migrations

_MIGRATION_NAME: Final = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The schema's migrations, in order, from the package's ``schema/`` folder."""
    found = []
    for entry in resources.files("km2pg.schema").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise SchemaError(f"migrations are not numbered 1..n without gaps: {versions}")
    return found


def schema_version(con: Connection) -> int:
    """The newest migration applied to this database (0 for none)."""
    exists = scalar(con, "SELECT to_regclass('km2pg.schema_migrations') IS NOT NULL")
    if not exists:
        return 0
    return int(scalar(con, "SELECT coalesce(max(version), 0) FROM km2pg.schema_migrations"))


def migrate(
    con: Connection, target: int | None = None, *, distribute: bool | None = None
) -> list[Migration]:
    """Apply the migrations this database lacks, each in its own transaction.

    Safe to call from many processes at once: a session advisory lock serializes them, and
    the second caller finds nothing left to do. Returns what was applied.

    On a Citus cluster (see :mod:`km2pg.citus`), ``distribute`` True distributes every table
    that is not yet, False never does; None (automatic migration before a load) keeps the
    layout: a schema made now is distributed, and so are new tables of a distributed schema,
    while a schema kept plain (``km2pg migrate --no-distribute``) stays plain.
    """
    available = migrations()
    if target is None:
        target = available[-1].version if available else 0
    con.run("SELECT pg_advisory_lock(:ns, :key)", ns=LOCK_NAMESPACE, key=LOCK_MIGRATE)
    try:
        current = schema_version(con)
        distributing = _distributing(con, distribute, fresh=current == 0)
        if distributing:
            citus.require_coordinator_in_metadata(con)  # before any change, not halfway
        newest = available[-1].version if available else 0
        if current > newest:
            raise SchemaError(
                f"the database schema is version {current}, newer than this km2pg knows "
                f"({newest}): upgrade km2pg"
            )
        applied = []
        on_citus = citus.is_distributed(con)
        for migration in available:
            if current < migration.version <= target:
                with transaction(con):
                    if on_citus:
                        citus.run_migration(con, migration.sql)
                    else:
                        con.run(migration.sql)
                    con.run(
                        "INSERT INTO km2pg.schema_migrations (version, name) VALUES (:v, :n)",
                        v=migration.version,
                        n=migration.name,
                    )
                applied.append(migration)
        if distributing:
            citus.distribute(con)
        return applied
    finally:
        con.run("SELECT pg_advisory_unlock(:ns, :key)", ns=LOCK_NAMESPACE, key=LOCK_MIGRATE)


def _distributing(con: Connection, distribute: bool | None, *, fresh: bool) -> bool:
    """Whether this migration distributes tables (see :func:`migrate`)."""
    if distribute is False or not citus.is_cluster(con):
        return False
    return bool(distribute or fresh or citus.is_distributed(con))


def ensure_schema(con: Connection) -> None:
    """Migrate if needed; cheap when the schema is current (one query)."""
    available = migrations()
    if schema_version(con) != available[-1].version:
        migrate(con)


__all__ = ["Connection", "connect", "connection", "migrate", "transaction"]
