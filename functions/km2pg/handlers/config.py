"""Settings for the deployed functions: read from the environment and validated once.

Only the database is needed; everything else has a sensible default. Database credentials come
from Secrets Manager (``KM2PG_DB_SECRET_ARN``, the RDS secret JSON) or, for local runs, from
``KM2PG_DSN``. They are cached per container and read again once after an authentication failure
(the secret may have been rotated). Secrets are never logged: ``repr`` hides them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

from km2pg import tls
from km2pg.contract import SSLMODES, Env
from km2pg.dsn import ConnectionSettings, parse_dsn, settings_from_values
from km2pg.errors import ConfigError, DatabaseUnavailable
from km2pg.load import DEFAULT_MAX_REJECT_SHARE

DEFAULT_RETENTION_DAYS: Final = 400.0
DEFAULT_EXPORT_PREFIX: Final = "revisions/"
DEFAULT_ENQUEUE_LIMIT: Final = 5_000
DEFAULT_MIN_AGE_MINUTES: Final = 15.0
"""The reconciler leaves younger objects to their own notification."""
DEFAULT_TIME_MARGIN_SECONDS: Final = 120.0
"""The loader takes no further file once less time than this remains in its invocation."""
DEFAULT_QUEUE_VISIBILITY_SECONDS: Final = 3600.0
"""The stack's visibility timeout with the loader's default timeout (6 x 600 s); the reconciler
queues a file again only after this long."""


@dataclass(frozen=True)
class Config:
    secret_arn: str | None = None
    dsn: str | None = field(default=None, repr=False)
    sslmode: str = "require"
    sslrootcert: str | None = None
    max_reject_share: float = DEFAULT_MAX_REJECT_SHARE
    statement_timeout_ms: int | None = None
    retention_days: float = DEFAULT_RETENTION_DAYS
    queue_url: str | None = None
    export_bucket: str | None = None
    export_prefix: str = DEFAULT_EXPORT_PREFIX
    enqueue_limit: int = DEFAULT_ENQUEUE_LIMIT
    min_age_minutes: float = DEFAULT_MIN_AGE_MINUTES
    time_margin_seconds: float = DEFAULT_TIME_MARGIN_SECONDS
    queue_visibility_seconds: float = DEFAULT_QUEUE_VISIBILITY_SECONDS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """Parse and validate; raises :class:`ConfigError` naming the variable at fault."""
        env = os.environ if env is None else env
        secret_arn = env.get(Env.DB_SECRET_ARN) or None
        dsn = env.get(Env.DSN) or None
        if not secret_arn and not dsn:
            raise ConfigError(f"set {Env.DB_SECRET_ARN} (or {Env.DSN}) to reach the database")
        sslmode = env.get(Env.DB_SSLMODE) or "require"
        if sslmode not in SSLMODES:
            raise ConfigError(f"{Env.DB_SSLMODE} must be one of {', '.join(SSLMODES)}")
        sslrootcert = env.get(Env.DB_SSLROOTCERT) or None
        if sslmode in tls.VERIFYING and not sslrootcert:
            raise ConfigError(
                f"{Env.DB_SSLMODE}={sslmode} needs {Env.DB_SSLROOTCERT} "
                "(a PEM file's path, 'rds' or 'system')"
            )
        # Settings that can never verify fail here; the file itself is read when connecting
        # (a ConfigError too, never "database unavailable").
        tls.check_root(sslmode, sslrootcert)
        return cls(
            secret_arn=secret_arn,
            dsn=dsn,
            sslmode=sslmode,
            sslrootcert=sslrootcert,
            max_reject_share=_number(
                env, Env.MAX_REJECT_SHARE, DEFAULT_MAX_REJECT_SHARE, low=0.0, high=1.0
            ),
            statement_timeout_ms=int(_number(env, Env.STATEMENT_TIMEOUT_MS, 0, low=0)) or None,
            retention_days=_number(env, Env.RETENTION_DAYS, DEFAULT_RETENTION_DAYS, low=1.0),
            queue_url=env.get(Env.QUEUE_URL) or None,
            export_bucket=env.get(Env.EXPORT_BUCKET) or None,
            export_prefix=env.get(Env.EXPORT_PREFIX) or DEFAULT_EXPORT_PREFIX,
            enqueue_limit=int(_number(env, Env.ENQUEUE_LIMIT, DEFAULT_ENQUEUE_LIMIT, low=1)),
            min_age_minutes=_number(
                env, Env.RECONCILE_MIN_AGE_MINUTES, DEFAULT_MIN_AGE_MINUTES, low=0.0
            ),
            time_margin_seconds=_number(
                env, Env.LOADER_TIME_MARGIN_SECONDS, DEFAULT_TIME_MARGIN_SECONDS, low=0.0
            ),
            queue_visibility_seconds=_number(
                env, Env.QUEUE_VISIBILITY_SECONDS, DEFAULT_QUEUE_VISIBILITY_SECONDS, low=0.0
            ),
        )


def _number(
    env: Mapping[str, str], name: str, default: float, *, low: float, high: float | None = None
) -> float:
    text = env.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name} is not a number: {text!r}") from None
    if value < low or (high is not None and value > high):
        bounds = f"at least {low:g}" if high is None else f"between {low:g} and {high:g}"
        raise ConfigError(f"{name} must be {bounds}, not {text}")
    return value


SecretReader = Callable[[str], str]


def region_of(arn: str) -> str | None:
    """The region an ARN names (``arn:partition:service:region:...``), None for a bare name."""
    parts = arn.split(":")
    return parts[3] or None if len(parts) > 3 and parts[0] == "arn" else None


def secrets_manager_reader(arn: str) -> str:
    import boto3  # noqa: PLC0415 - boto3 is slow to import; only a secret read needs it
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415 - as boto3

    try:
        # Read from the secret's own region: it may live in another region than the function.
        client = boto3.client("secretsmanager", region_name=region_of(arn))
        value = client.get_secret_value(SecretId=arn)
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "error")
        raise DatabaseUnavailable(f"cannot read the database secret: {code}") from None
    except BotoCoreError as error:
        raise DatabaseUnavailable(f"cannot read the database secret: {error}") from None
    return str(value["SecretString"])


class Credentials:
    """The database's connection settings, from the secret (cached) or the DSN."""

    def __init__(self, config: Config, read_secret: SecretReader = secrets_manager_reader) -> None:
        self._config = config
        self._read_secret = read_secret
        self._cached: ConnectionSettings | None = None

    def settings(self) -> ConnectionSettings:
        if self._cached is None:
            self._cached = self._load()
        return self._cached

    def refresh(self) -> ConnectionSettings:
        """Forget the cache and read the secret again (after an authentication failure)."""
        self._cached = None
        return self.settings()

    def _load(self) -> ConnectionSettings:
        config = self._config
        if config.secret_arn:
            settings = settings_from_secret(self._read_secret(config.secret_arn))
        else:
            assert config.dsn is not None
            settings = parse_dsn(config.dsn)
        if config.secret_arn or "sslmode" not in (config.dsn or ""):
            settings = replace(
                settings,
                sslmode=config.sslmode,
                sslrootcert=config.sslrootcert or settings.sslrootcert,
            )
        return settings


def settings_from_secret(secret: str) -> ConnectionSettings:
    """The RDS secret JSON (host, port, username, password, dbname) as connection settings."""
    try:
        data: Any = json.loads(secret)
    except ValueError:
        raise ConfigError("the database secret is not JSON") from None
    if not isinstance(data, dict) or not data.get("host") or not data.get("username"):
        raise ConfigError("the database secret needs at least host and username")
    values = {
        "host": str(data["host"]),
        "port": str(data.get("port") or 5432),
        "user": str(data["username"]),
        "password": str(data.get("password") or ""),
        "dbname": str(data.get("dbname") or "postgres"),
    }
    return settings_from_values(values)
