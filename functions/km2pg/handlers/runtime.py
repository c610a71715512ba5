"""What the three functions share, created once per container (cold start), never at import.

A database connection is kept across invocations and opened again when it was lost; after an
authentication failure the secret is read again once (rotation) before giving up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from km2pg import db
from km2pg.db import Connection
from km2pg.errors import DatabaseUnavailable
from km2pg.handlers.config import Config, Credentials, SecretReader, secrets_manager_reader
from km2pg.load import LoadOptions, prepare_connection


@dataclass
class Runtime:
    config: Config
    credentials: Credentials
    options: LoadOptions
    _con: Connection | None = field(default=None, repr=False)
    _clients: dict[str, Any] = field(default_factory=dict, repr=False)

    def client(self, service: str) -> Any:
        """A boto3 client per service, made once per container."""
        if service not in self._clients:
            import boto3  # noqa: PLC0415 - slow to import; made once per container, on first use

            self._clients[service] = boto3.client(service)  # type: ignore[call-overload]
        return self._clients[service]

    @classmethod
    def from_env(cls, read_secret: SecretReader = secrets_manager_reader) -> Runtime:
        config = Config.from_env()
        return cls(
            config=config,
            credentials=Credentials(config, read_secret),
            options=LoadOptions(
                max_reject_share=config.max_reject_share,
                statement_timeout_ms=config.statement_timeout_ms,
            ),
        )

    def connection(self) -> Connection:
        """A live, prepared connection (reused while it works)."""
        if self._con is not None and _alive(self._con):
            return self._con
        self.discard()
        try:
            con = db.connect(self.credentials.settings())
        except DatabaseUnavailable:
            # Perhaps rotated credentials (a refused login does not always reach us as such:
            # the server may close the socket first). Read the secret again, try once more.
            con = db.connect(self.credentials.refresh())
        try:
            prepare_connection(con, self.options)
        except BaseException:
            db.close_quietly(con)
            raise
        self._con = con
        return con

    def discard(self) -> None:
        """Drop the connection (after an error left it in doubt)."""
        if self._con is not None:
            db.close_quietly(self._con)
            self._con = None


def _alive(con: Connection) -> bool:
    try:
        con.run("SELECT 1")
    except Exception:
        return False
    return True


_runtime: Runtime | None = None


def runtime() -> Runtime:
    """The container's runtime, made on first use."""
    global _runtime  # noqa: PLW0603 - one per container, by design
    if _runtime is None:
        _runtime = Runtime.from_env()
    return _runtime


def reset() -> None:
    """Forget the container's runtime (tests; a new configuration)."""
    global _runtime  # noqa: PLW0603
    if _runtime is not None:
        _runtime.discard()
    _runtime = None
