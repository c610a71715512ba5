"""Connection settings: parse a PostgreSQL DSN (URI or key=value) once, validate it, hide secrets.

TLS is on by default: ``sslmode`` defaults to ``require`` for any host but a local socket or a
loopback address, where it defaults to ``disable``.
"""

from __future__ import annotations

import os
import re
import ssl
from dataclasses import dataclass, field, replace
from typing import Final
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from km2pg.contract import SSLMODES
from km2pg.errors import ConfigError

_LOOPBACK: Final = frozenset({"localhost", "127.0.0.1", "::1"})
_KNOWN_KEYS: Final = frozenset(
    {
        "host",
        "hostaddr",
        "port",
        "dbname",
        "user",
        "password",
        "sslmode",
        "sslrootcert",
        "connect_timeout",
        "application_name",
        "options",
    }
)


@dataclass(frozen=True)
class ConnectionSettings:
    """Everything needed to open a connection. ``password`` never appears in repr or messages."""

    host: str = "localhost"
    port: int = 5432
    database: str = "postgres"
    user: str = "postgres"
    password: str | None = field(default=None, repr=False)
    sslmode: str = "require"
    sslrootcert: str | None = None
    connect_timeout: float = 10.0
    application_name: str = "km2pg"
    options: str | None = None
    """Server settings for the session, as libpq's ``options`` (``-c statement_timeout=60s``)."""

    @property
    def unix_socket(self) -> str | None:
        """The socket file when ``host`` names a directory, as libpq does."""
        if self.host.startswith("/"):
            return f"{self.host.rstrip('/')}/.s.PGSQL.{self.port}"
        return None

    def describe(self) -> str:
        """Where we connect, for messages: never the password."""
        where = self.host if self.unix_socket is None else f"socket {self.host}"
        return f"{self.user}@{where}:{self.port}/{self.database}"

    def ssl_context(self) -> ssl.SSLContext | bool | None:
        """What pg8000 wants: False (no TLS), True (TLS, unverified), None (TLS if offered),
        or a verifying context."""
        if self.unix_socket is not None or self.sslmode == "disable":
            return False
        if self.sslmode in ("allow", "prefer"):
            return None
        if self.sslmode == "require":
            return True
        context = ssl.create_default_context(cafile=self.sslrootcert)
        context.check_hostname = self.sslmode == "verify-full"
        context.verify_mode = ssl.CERT_REQUIRED
        return context

    def uri(self) -> str:
        """A libpq URI for these settings, without the password (psql, logs, messages)."""
        user = quote(self.user, safe="")
        database = quote(self.database, safe="")
        options = f"&options={quote(self.options, safe='')}" if self.options else ""
        if self.unix_socket is not None:
            return (
                f"postgresql://{user}@/{database}?host={quote(self.host)}&port={self.port}{options}"
            )
        host = f"[{self.host}]" if ":" in self.host else self.host
        query = f"sslmode={self.sslmode}"
        if self.sslrootcert:
            query += f"&sslrootcert={quote(self.sslrootcert)}"
        return f"postgresql://{user}@{host}:{self.port}/{database}?{query}{options}"

    def with_database(self, database: str) -> ConnectionSettings:
        return replace(self, database=database)


def parse_dsn(dsn: str) -> ConnectionSettings:
    """Parse ``postgresql://user:pass@host:port/db?sslmode=...`` or ``host=... dbname=...``.

    A password not in the DSN is taken from ``PGPASSWORD``. Raises :class:`ConfigError` with a
    message that does not repeat the DSN (it may hold a password).
    """
    text = dsn.strip()
    if not text:
        raise ConfigError("the database DSN is empty")
    if text.startswith(("postgresql://", "postgres://")):
        values = _parse_uri(text)
    elif "=" in text:
        values = _parse_keywords(text)
    else:
        raise ConfigError("the database DSN is neither a postgresql:// URI nor key=value pairs")
    return settings_from_values(values)


def settings_from_values(values: dict[str, str]) -> ConnectionSettings:
    """Build validated settings from libpq-style keywords (also used for secrets' JSON)."""
    unknown = sorted(set(values) - _KNOWN_KEYS)
    if unknown:
        raise ConfigError(f"unknown DSN parameter(s): {', '.join(unknown)}")
    host = values.get("host") or values.get("hostaddr") or "localhost"
    try:
        port = int(values.get("port") or 5432)
    except ValueError:
        raise ConfigError(f"the DSN port is not a number: {values.get('port')!r}") from None
    if not 0 < port < 65536:
        raise ConfigError(f"the DSN port is out of range: {port}")
    local = host.startswith("/") or host in _LOOPBACK
    sslmode = values.get("sslmode") or ("disable" if local else "require")
    if sslmode not in SSLMODES:
        raise ConfigError(f"unknown sslmode {sslmode!r}: use one of {', '.join(SSLMODES)}")
    sslrootcert = values.get("sslrootcert") or None
    if sslmode in ("verify-ca", "verify-full") and sslrootcert and not os.path.exists(sslrootcert):
        raise ConfigError(f"sslrootcert file not found: {sslrootcert}")
    try:
        timeout = float(values.get("connect_timeout") or 10)
    except ValueError:
        raise ConfigError("the DSN connect_timeout is not a number") from None
    user = values.get("user") or os.environ.get("PGUSER") or "postgres"
    password = values.get("password") or os.environ.get("PGPASSWORD") or None
    return ConnectionSettings(
        host=host,
        port=port,
        database=values.get("dbname") or user,
        user=user,
        password=password,
        sslmode=sslmode,
        sslrootcert=sslrootcert,
        connect_timeout=timeout if timeout > 0 else 10.0,
        application_name=values.get("application_name") or "km2pg",
        options=values.get("options") or None,
    )


def _parse_uri(text: str) -> dict[str, str]:
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        # The error's text may quote the password (an unencoded '/', '#' or '?' in it).
        raise ConfigError(
            "the database DSN is not a valid URI (bad port, or a password with an unencoded "
            "'/', '#' or '?')"
        ) from None
    values: dict[str, str] = {}
    if parts.hostname:
        values["host"] = unquote(parts.hostname)
    if port is not None:
        values["port"] = str(port)
    if parts.username:
        values["user"] = unquote(parts.username)
    if parts.password:
        values["password"] = unquote(parts.password)
    database = unquote(parts.path.lstrip("/"))
    if database:
        values["dbname"] = database
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        values[key] = value
    return values


_KEYWORD: Final = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*")


def _parse_keywords(text: str) -> dict[str, str]:
    """libpq's ``key=value`` form: spaces around '=' allowed; values bare or single-quoted, with
    backslash escaping the next character in both. Error messages never repeat a value."""
    values: dict[str, str] = {}
    pos, end = 0, len(text)
    while pos < end:
        if text[pos:].strip() == "":
            break
        match = _KEYWORD.match(text, pos)
        if match is None:
            raise ConfigError("the database DSN is not a list of key=value pairs")
        key, pos = match.group(1), match.end()
        chars: list[str] = []
        if pos < end and text[pos] == "'":
            pos += 1
            while pos < end and text[pos] != "'":
                if text[pos] == "\\" and pos + 1 < end:
                    pos += 1
                chars.append(text[pos])
                pos += 1
            if pos >= end:
                raise ConfigError(f"the DSN value of {key} has an unbalanced quote")
            pos += 1
        else:
            while pos < end and not text[pos].isspace():
                if text[pos] == "\\" and pos + 1 < end:
                    pos += 1
                chars.append(text[pos])
                pos += 1
        values[key] = "".join(chars)
    return values
