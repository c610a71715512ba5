"""The exceptions km2pg raises: a small tree, so callers catch exactly what they can handle.

Every message is one line a person can act on; the CLI prints it as is, without a traceback.
"""

from __future__ import annotations


class Km2pgError(Exception):
    """Base of every error km2pg raises on purpose."""


class ConfigError(Km2pgError):
    """A setting is missing or invalid (a bad DSN, an unknown sslmode, a negative retention)."""


class DatabaseUnavailable(Km2pgError):
    """The database cannot be reached, refused us, or dropped the connection.

    Transient by nature: the same work may succeed when retried later.
    """


class SourceError(Km2pgError):
    """An export file cannot be found or read (a missing path, an unreadable S3 object)."""


class SchemaError(Km2pgError):
    """The database schema is not one this version of km2pg can use."""


class WorkerFailed(Km2pgError):
    """A helper process of the loader died or failed: the load was rolled back; retry it."""
