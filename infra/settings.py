"""Every setting of the km2pg stack, read from CDK context and validated once.

Context comes from cdk.json (JSON values) or from ``-c key=value`` on the command line (always
strings), so every reader accepts both: ``true``/``false`` for flags, digits for numbers, and a
JSON list or a comma-separated string for lists. A bad value stops the synth with a message that
names the key. README.md ("Deploy to AWS") documents each key; cdk.json carries safe examples.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

CONTEXT_KEYS: Final = (
    "stackName",
    "exportBucketName",
    "exportPrefix",
    "eventBridge",
    "maxReceiveCount",
    "loaderBatchSize",
    "loaderBatchWindowSeconds",
    "loaderMaxConcurrency",
    "loaderMemoryMb",
    "loaderTimeoutSeconds",
    "prunerMemoryMb",
    "prunerTimeoutSeconds",
    "reconcilerMemoryMb",
    "reconcilerTimeoutSeconds",
    "scheduledReservedConcurrency",
    "pruneSchedule",
    "reconcileSchedule",
    "retentionDays",
    "maxRejectShare",
    "logLevel",
    "logRetentionDays",
    "dbSecretArn",
    "dbSecretKmsKeyArn",
    "dbSslMode",
    "dbSslRootCert",
    "createDatabase",
    "dbInstanceClass",
    "dbEngineVersion",
    "dbAllocatedStorageGb",
    "dbMaxAllocatedStorageGb",
    "dbMultiAz",
    "dbBackupRetentionDays",
    "dbDeletionProtection",
    "dbName",
    "vpcId",
    "availabilityZones",
    "privateSubnetIds",
    "privateRouteTableIds",
    "dbSecurityGroupId",
    "dbPort",
    "addDbIngress",
    "natGateway",
    "vpcEndpoints",
    "alarmEmail",
    "stalledHours",
)
"""The context keys this app reads (anything else in cdk.json is CDK's own)."""

KISSMETRICS_CANONICAL_USER: Final = (
    "6acb81d7742ac437833f51ecb2a40c74cd831ce26909e5f72354fa6af42cfb1f"
)
"""The S3 canonical user Kissmetrics writes exports as (see shared/kissmetrics-export.md)."""

LOG_RETENTION_DAYS: Final = frozenset(
    {1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
     3288, 3653}
)  # fmt: skip
"""The retention periods CloudWatch Logs accepts."""

ENDPOINTS: Final = ("s3", "secretsmanager", "sqs", "xray")
"""VPC endpoints private functions need: S3 (gateway), Secrets Manager, SQS, X-Ray (interface)."""

SSL_MODES: Final = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DB_ENGINE_VERSIONS: Final = ("16", "17")

_RATE: Final = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")
_CRON: Final = re.compile(r"^cron\(\S+ \S+ \S+ \S+ \S+ \S+\)$")
_SECRET_ARN: Final = re.compile(
    r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]+-[A-Za-z0-9]{6}$"
)
_KMS_KEY_ARN: Final = re.compile(r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/[a-f0-9-]+$")
_BUCKET: Final = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_VPC: Final = re.compile(r"^vpc-[0-9a-f]{8,17}$")
_SUBNET: Final = re.compile(r"^subnet-[0-9a-f]{8,17}$")
_ROUTE_TABLE: Final = re.compile(r"^rtb-[0-9a-f]{8,17}$")
_SECURITY_GROUP: Final = re.compile(r"^sg-[0-9a-f]{8,17}$")
_AZ: Final = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d[a-z]$")
_EMAIL: Final = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_STACK_NAME: Final = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,127}$")
_INSTANCE_CLASS: Final = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
_PREFIX: Final = re.compile(r"^[A-Za-z0-9!_.'()/-]+/$")
_DB_NAME: Final = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class SettingsError(ValueError):
    """A context value that is missing, malformed or contradicts another."""


@dataclass(frozen=True)
class Schedule:
    """An EventBridge schedule and the period in which it must have run at least once."""

    expression: str
    period_seconds: int


@dataclass(frozen=True)
class FunctionSize:
    memory_mb: int
    timeout_seconds: int


@dataclass(frozen=True)
class Network:
    """An existing VPC for the functions (and for a created database)."""

    vpc_id: str
    availability_zones: tuple[str, ...]
    private_subnet_ids: tuple[str, ...]
    private_route_table_ids: tuple[str, ...]
    db_security_group_id: str | None
    add_db_ingress: bool


@dataclass(frozen=True)
class NewDatabase:
    """An RDS for PostgreSQL instance the stack creates."""

    instance_class: str = "t4g.micro"
    engine_version: str = "17"
    allocated_storage_gb: int = 20
    max_allocated_storage_gb: int = 100
    multi_az: bool = False
    backup_retention_days: int = 7
    deletion_protection: bool = True
    name: str = "km2pg"


@dataclass(frozen=True)
class Settings:
    stack_name: str = "Km2pg"
    # Where exports land and how their arrival is announced.
    export_bucket_name: str | None = None
    export_prefix: str = "revisions/"
    event_bridge: bool = False
    # The load queue and the loader's event source.
    max_receive_count: int = 5
    loader_batch_size: int = 10
    loader_batch_window_seconds: int = 5
    loader_max_concurrency: int = 5
    # Functions.
    loader: FunctionSize = field(default_factory=lambda: FunctionSize(1024, 600))
    pruner: FunctionSize = field(default_factory=lambda: FunctionSize(512, 900))
    reconciler: FunctionSize = field(default_factory=lambda: FunctionSize(512, 300))
    scheduled_reserved_concurrency: int | None = 1
    prune_schedule: Schedule = field(default_factory=lambda: Schedule("rate(1 day)", 86_400))
    reconcile_schedule: Schedule = field(default_factory=lambda: Schedule("rate(1 hour)", 3_600))
    retention_days: int = 400
    max_reject_share: float | None = None
    log_level: str = "INFO"
    log_retention_days: int = 90
    # The database: an existing one (its secret) or a new one.
    db_secret_arn: str | None = None
    db_secret_kms_key_arn: str | None = None
    db_ssl_mode: str = "require"
    db_ssl_root_cert: str | None = None
    new_database: NewDatabase | None = None
    db_port: int = 5432
    # Network: none (the database is reached over the internet, TLS) or an existing VPC.
    network: Network | None = None
    nat_gateway: bool = False
    vpc_endpoints: tuple[str, ...] = ENDPOINTS
    # Monitoring.
    alarm_email: str | None = None
    stalled_hours: int = 6

    @property
    def in_vpc(self) -> bool:
        """Whether the functions run in a VPC (an existing one, or the new database's)."""
        return self.network is not None or self.new_database is not None

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The VPC endpoints the stack creates (none outside a VPC or behind a NAT)."""
        if not self.in_vpc or self.nat_gateway:
            return ()
        return self.vpc_endpoints

    @property
    def queue_visibility_seconds(self) -> int:
        """Six times the loader's timeout, as AWS advises for an SQS event source."""
        return 6 * self.loader.timeout_seconds

    @classmethod
    def from_context(cls, context: Mapping[str, Any]) -> Settings:
        """Read and check every key; raises :class:`SettingsError` naming the key at fault."""
        unknown = sorted(key for key in context if key not in CONTEXT_KEYS and not _is_cdk_key(key))
        if unknown:
            raise SettingsError(f"unknown context keys (a typo?): {', '.join(unknown)}")
        c = _Context(context)
        defaults = cls()
        create_database = c.flag("createDatabase", default=False)
        network = _network(c)
        settings = cls(
            stack_name=c.text("stackName", defaults.stack_name, _STACK_NAME),
            export_bucket_name=c.optional_text("exportBucketName", _BUCKET),
            export_prefix=c.text("exportPrefix", defaults.export_prefix, _PREFIX),
            event_bridge=c.flag("eventBridge", default=False),
            max_receive_count=c.integer("maxReceiveCount", defaults.max_receive_count, 1, 1000),
            loader_batch_size=c.integer("loaderBatchSize", defaults.loader_batch_size, 1, 10),
            loader_batch_window_seconds=c.integer(
                "loaderBatchWindowSeconds", defaults.loader_batch_window_seconds, 0, 300
            ),
            loader_max_concurrency=c.integer(
                "loaderMaxConcurrency", defaults.loader_max_concurrency, 2, 1000
            ),
            loader=_size(c, "loader", defaults.loader),
            pruner=_size(c, "pruner", defaults.pruner),
            reconciler=_size(c, "reconciler", defaults.reconciler),
            scheduled_reserved_concurrency=c.optional_integer(
                "scheduledReservedConcurrency", defaults.scheduled_reserved_concurrency, 1, 1000
            ),
            prune_schedule=c.schedule("pruneSchedule", defaults.prune_schedule),
            reconcile_schedule=c.schedule("reconcileSchedule", defaults.reconcile_schedule),
            retention_days=c.integer("retentionDays", defaults.retention_days, 1, 36_500),
            max_reject_share=c.optional_fraction("maxRejectShare"),
            log_level=c.choice("logLevel", defaults.log_level, LOG_LEVELS),
            log_retention_days=c.integer(
                "logRetentionDays", defaults.log_retention_days, 1, 3653, LOG_RETENTION_DAYS
            ),
            db_secret_arn=c.optional_text("dbSecretArn", _SECRET_ARN),
            db_secret_kms_key_arn=c.optional_text("dbSecretKmsKeyArn", _KMS_KEY_ARN),
            db_ssl_mode=c.choice("dbSslMode", defaults.db_ssl_mode, SSL_MODES),
            db_ssl_root_cert=c.optional_text("dbSslRootCert", re.compile(r"^/\S+$")),
            new_database=_new_database(c) if create_database else None,
            db_port=c.integer("dbPort", defaults.db_port, 1, 65535),
            network=network,
            nat_gateway=c.flag("natGateway", default=False),
            vpc_endpoints=c.subset("vpcEndpoints", ENDPOINTS),
            alarm_email=c.optional_text("alarmEmail", _EMAIL),
            stalled_hours=c.integer("stalledHours", defaults.stalled_hours, 1, 168),
        )
        settings.check()
        return settings

    def check(self) -> None:
        """Rules that tie settings together."""
        if self.new_database is not None and self.db_secret_arn:
            raise SettingsError(
                "set either dbSecretArn (an existing database) or createDatabase, not both "
                "(to create one, empty dbSecretArn: -c dbSecretArn=)"
            )
        if self.new_database is None and not self.db_secret_arn:
            raise SettingsError(
                "set dbSecretArn (the complete ARN of an existing database's RDS-style secret) "
                "or createDatabase: true"
            )
        if self.db_ssl_mode == "verify-full" and not self.db_ssl_root_cert:
            raise SettingsError("dbSslMode verify-full needs dbSslRootCert (a CA bundle path)")
        if self.network is None and self.nat_gateway:
            raise SettingsError("natGateway describes the subnets of vpcId: set vpcId too")
        network = self.network
        if network and self.new_database is None and not network.db_security_group_id:
            raise SettingsError("vpcId with an existing database needs dbSecurityGroupId")
        over_internet = self.network is None and self.new_database is None
        if over_internet and self.db_ssl_mode in ("disable", "allow", "prefer"):
            raise SettingsError(
                "without a VPC the database is reached over the internet: dbSslMode must be "
                "require, verify-ca or verify-full"
            )
        if network and "s3" in self.endpoints and not network.private_route_table_ids:
            raise SettingsError(
                "the S3 gateway endpoint needs privateRouteTableIds (or leave s3 out of "
                "vpcEndpoints, or set natGateway: true)"
            )
        if self.new_database is not None and not 1150 <= self.db_port <= 65535:
            raise SettingsError("an RDS instance's dbPort must be between 1150 and 65535")
        if self.new_database and network and len(set(network.availability_zones)) < 2:
            raise SettingsError("an RDS subnet group needs privateSubnetIds in two or more AZs")


def _is_cdk_key(key: str) -> bool:
    """CDK's own context: feature flags (``@aws-cdk/...``), ``aws:cdk:...``, lookups, and the
    CLI's hyphenated keys (``cli-telemetry``, ``acknowledged-issue-numbers``). Ours are camelCase.
    """
    return key.startswith("@") or ":" in key or "-" in key


class _Context:
    def __init__(self, context: Mapping[str, Any]) -> None:
        self._context = context

    def raw(self, key: str) -> Any:
        value = self._context.get(key)
        if isinstance(value, str) and value.strip() == "":
            return None
        return value

    def flag(self, key: str, *, default: bool) -> bool:
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "yes", "1"):
            return True
        if text in ("false", "no", "0"):
            return False
        raise SettingsError(f"{key} must be true or false, not {value!r}")

    def optional_integer(self, key: str, default: int | None, low: int, high: int) -> int | None:
        if key in self._context and self._context[key] is None:
            return None  # JSON null in cdk.json
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, str) and value.strip().lower() in ("none", "null"):
            return None
        return self.integer(key, default or low, low, high)

    def integer(
        self,
        key: str,
        default: int,
        low: int,
        high: int,
        allowed: frozenset[int] | None = None,
    ) -> int:
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, bool):
            raise SettingsError(f"{key} must be a whole number, not {value!r}")
        try:
            number = int(str(value).strip())
        except ValueError:
            raise SettingsError(f"{key} must be a whole number, not {value!r}") from None
        if not low <= number <= high:
            raise SettingsError(f"{key} must be between {low} and {high}, not {number}")
        if allowed is not None and number not in allowed:
            raise SettingsError(f"{key} must be one of {sorted(allowed)}, not {number}")
        return number

    def optional_fraction(self, key: str) -> float | None:
        value = self.raw(key)
        if value is None:
            return None
        try:
            number = float(str(value).strip())
        except ValueError:
            raise SettingsError(f"{key} must be a number between 0 and 1, not {value!r}") from None
        if not 0.0 <= number <= 1.0:
            raise SettingsError(f"{key} must be a number between 0 and 1, not {value!r}")
        return number

    def text(self, key: str, default: str, pattern: re.Pattern[str]) -> str:
        value = self.optional_text(key, pattern)
        return default if value is None else value

    def optional_text(self, key: str, pattern: re.Pattern[str]) -> str | None:
        value = self.raw(key)
        if value is None:
            return None
        text = str(value).strip()
        if not pattern.match(text):
            raise SettingsError(f"{key} is malformed: {value!r}")
        return text

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.raw(key)
        if value is None:
            return default
        text = str(value).strip()
        if text not in choices:
            raise SettingsError(f"{key} must be one of {', '.join(choices)}, not {value!r}")
        return text

    def strings(self, key: str, pattern: re.Pattern[str]) -> tuple[str, ...]:
        value = self.raw(key)
        if value is None:
            return ()
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except ValueError:
                    raise SettingsError(f"{key} is not a JSON list: {text!r}") from None
            else:
                value = [part for part in (p.strip() for p in text.split(",")) if part]
        if not isinstance(value, list):
            raise SettingsError(f"{key} must be a list, not {value!r}")
        items = tuple(str(item).strip() for item in value)
        for item in items:
            if not pattern.match(item):
                raise SettingsError(f"{key} has a malformed item: {item!r}")
        return items

    def subset(self, key: str, choices: tuple[str, ...]) -> tuple[str, ...]:
        if self.raw(key) is None:
            return choices
        items = self.strings(key, re.compile(r"^[a-z0-9]+$"))
        unknown = sorted(set(items) - set(choices))
        if unknown:
            raise SettingsError(f"{key} may hold only {', '.join(choices)}, not {unknown}")
        return tuple(choice for choice in choices if choice in items)

    def schedule(self, key: str, default: Schedule) -> Schedule:
        value = self.raw(key)
        if value is None:
            return default
        text = str(value).strip()
        rate = _RATE.match(text)
        if rate:
            count, unit = int(rate.group(1)), rate.group(2).rstrip("s")
            if count < 1:
                raise SettingsError(f"{key} must run at least every so often: {text!r}")
            if (count == 1) != (not rate.group(2).endswith("s")):
                raise SettingsError(f"{key}: write rate(1 {unit}) or rate(N {unit}s), not {text}")
            seconds = count * {"minute": 60, "hour": 3_600, "day": 86_400}[unit]
            if seconds > 7 * 86_400:
                raise SettingsError(f"{key} must run at least weekly (its missed-run alarm)")
            return Schedule(text, seconds)
        if _CRON.match(text):
            # A cron schedule's period is taken to be the default's (daily or hourly); the
            # missed-run alarm then looks over that period.
            return Schedule(text, default.period_seconds)
        raise SettingsError(f"{key} must be rate(N unit) or cron(6 fields), not {text!r}")


def _size(c: _Context, name: str, default: FunctionSize) -> FunctionSize:
    return FunctionSize(
        memory_mb=c.integer(f"{name}MemoryMb", default.memory_mb, 128, 10_240),
        timeout_seconds=c.integer(f"{name}TimeoutSeconds", default.timeout_seconds, 10, 900),
    )


def _network(c: _Context) -> Network | None:
    vpc_id = c.optional_text("vpcId", _VPC)
    azs = c.strings("availabilityZones", _AZ)
    subnets = c.strings("privateSubnetIds", _SUBNET)
    route_tables = c.strings("privateRouteTableIds", _ROUTE_TABLE)
    security_group = c.optional_text("dbSecurityGroupId", _SECURITY_GROUP)
    add_ingress = c.flag("addDbIngress", default=False)
    if vpc_id is None:
        given = [
            key
            for key, value in (
                ("availabilityZones", azs),
                ("privateSubnetIds", subnets),
                ("privateRouteTableIds", route_tables),
                ("dbSecurityGroupId", security_group),
                ("addDbIngress", add_ingress),
            )
            if value
        ]
        if given:
            raise SettingsError(f"{', '.join(given)} describe the VPC of vpcId: set vpcId too")
        return None
    if not subnets:
        raise SettingsError("vpcId needs privateSubnetIds (the functions' subnets)")
    if len(azs) != len(subnets):
        raise SettingsError(
            "availabilityZones must name the AZ of each of privateSubnetIds, in the same order"
        )
    if route_tables and len(route_tables) != len(subnets):
        raise SettingsError(
            "privateRouteTableIds must name the route table of each of privateSubnetIds, "
            "in the same order"
        )
    if add_ingress and not security_group:
        raise SettingsError("addDbIngress needs dbSecurityGroupId")
    return Network(
        vpc_id=vpc_id,
        availability_zones=azs,
        private_subnet_ids=subnets,
        private_route_table_ids=route_tables,
        db_security_group_id=security_group,
        add_db_ingress=add_ingress,
    )


def _new_database(c: _Context) -> NewDatabase:
    d = NewDatabase()
    allocated = c.integer("dbAllocatedStorageGb", d.allocated_storage_gb, 20, 65_536)
    maximum = c.integer("dbMaxAllocatedStorageGb", d.max_allocated_storage_gb, 20, 65_536)
    if maximum < allocated:
        raise SettingsError("dbMaxAllocatedStorageGb must be at least dbAllocatedStorageGb")
    return NewDatabase(
        instance_class=c.text("dbInstanceClass", d.instance_class, _INSTANCE_CLASS),
        engine_version=c.choice("dbEngineVersion", d.engine_version, DB_ENGINE_VERSIONS),
        allocated_storage_gb=allocated,
        max_allocated_storage_gb=maximum,
        multi_az=c.flag("dbMultiAz", default=d.multi_az),
        backup_retention_days=c.integer("dbBackupRetentionDays", d.backup_retention_days, 1, 35),
        deletion_protection=c.flag("dbDeletionProtection", default=d.deletion_protection),
        name=c.text("dbName", d.name, _DB_NAME),
    )
