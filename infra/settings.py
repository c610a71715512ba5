"""Every setting of the km2pg stack, declared once: its context key, type, default, bounds, help.

Each field of :class:`Settings` is one CDK context key (the field name in camelCase). From that one
declaration come the parsing of cdk.json and ``-c key=value`` values (infra/context.py), the
checks and their messages, and README.md's settings table (``make settings-table``). Rules that
tie settings together are the validators at the end of the class. cdk.json carries an example
of every key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo

from infra.context import (
    Every,
    Flag,
    Items,
    Number,
    OneOf,
    OptionalWhole,
    Shape,
    SubsetOf,
    Text,
    Whole,
    parse_flag,
    settings_error,
)

# Re-exported (the explicit "as" form): the constructs and the tests import them from here.
from infra.context import Schedule as Schedule  # noqa: PLC0414
from infra.context import SettingsError as SettingsError  # noqa: PLC0414
from km2pg.contract import SSLMODES

KISSMETRICS_CANONICAL_USER: Final = (
    "6acb81d7742ac437833f51ecb2a40c74cd831ce26909e5f72354fa6af42cfb1f"
)
"""The S3 canonical user Kissmetrics writes exports as (see shared/kissmetrics-export.md)."""

LOG_RETENTION_DAYS: Final = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
)  # fmt: skip
"""The retention periods CloudWatch Logs accepts."""

ENDPOINTS: Final = ("s3", "secretsmanager", "sqs", "xray")
"""VPC endpoints private functions need: S3 (gateway), Secrets Manager, SQS, X-Ray (interface)."""

LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DB_ENGINE_VERSIONS: Final = ("16", "17")
UNENCRYPTED_SSLMODES: Final = ("disable", "allow", "prefer")
"""The sslmodes that may talk in plain text: refused where the database is on the internet."""

DAY: Final = 86_400
HOUR: Final = 3_600

STACK_NAME = Shape(r"^[A-Za-z][A-Za-z0-9-]{0,127}$", "a letter, then letters, digits or -", "Km2pg")
BUCKET = Shape(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", "an S3 bucket name", "acme-exports")
PREFIX = Shape(r"^[A-Za-z0-9!_.'()/-]+/$", "a key prefix that ends in `/`", "revisions/")
SECRET_ARN = Shape(
    r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]+-[A-Za-z0-9]{6}$",
    "a secret's complete ARN (with the 6 characters after its name)",
    "arn:aws:secretsmanager:eu-west-1:111122223333:secret:km2pg/prod-Ab12Cd",
)
KMS_KEY_ARN = Shape(
    r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/[a-f0-9-]+$",
    "a KMS key ARN",
    "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
)
ABSOLUTE_PATH = Shape(r"^/\S+$", "an absolute path in the function", "/var/task/certs/ca.pem")
INSTANCE_CLASS = Shape(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$", "an instance class", "t4g.micro")
DB_NAME = Shape(r"^[a-z][a-z0-9_]{0,62}$", "a lowercase letter, then a-z, 0-9 or _", "km2pg")
VPC_ID = Shape(r"^vpc-[0-9a-f]{8,17}$", "a VPC id", "vpc-0123456789abcdef0")
SUBNET_ID = Shape(r"^subnet-[0-9a-f]{8,17}$", "a subnet id", "subnet-0123456789abcdef0")
ROUTE_TABLE_ID = Shape(r"^rtb-[0-9a-f]{8,17}$", "a route table id", "rtb-0123456789abcdef0")
SECURITY_GROUP_ID = Shape(r"^sg-[0-9a-f]{8,17}$", "a security group id", "sg-0123456789abcdef0")
AZ = Shape(r"^[a-z]{2}(-[a-z]+)+-\d[a-z]$", "an availability zone name", "eu-west-1a")
EMAIL = Shape(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", "an e-mail address", "ops@example.com")


@dataclass(frozen=True)
class ForNewDatabase:
    """Marks a setting read only with ``createDatabase`` (otherwise ignored, even if malformed)."""


NEW_DB: Final = ForNewDatabase()


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

    instance_class: str
    engine_version: str
    allocated_storage_gb: int
    max_allocated_storage_gb: int
    multi_az: bool
    backup_retention_days: int
    deletion_protection: bool
    name: str


def _memory(default: int, of: str) -> Any:
    return Field(default, ge=128, le=10_240, description=f"{of} memory (MB)")


def _timeout(default: int, of: str, note: str = "") -> Any:
    return Field(default, ge=10, le=900, description=f"{of} timeout (seconds){note}")


class Settings(BaseModel):
    """The stack's settings; build them with :meth:`from_context`."""

    model_config = ConfigDict(
        frozen=True, alias_generator=to_camel, validate_default=True, extra="forbid"
    )

    stack_name: Annotated[str, STACK_NAME] = Field("Km2pg", description="CloudFormation stack name")
    # Where exports land and how their arrival is announced.
    export_bucket_name: Annotated[str, BUCKET] | None = Field(
        None, description="an existing export bucket, by name; empty: the stack creates one"
    )
    export_prefix: Annotated[str, PREFIX] = Field(
        "revisions/",
        description="where export files are; notifications, IAM and the reconciler use it",
    )
    event_bridge: Flag = Field(
        False,
        description="deliver ObjectCreated through EventBridge instead of an S3 notification",
    )
    # The load queue and the loader's event source.
    max_receive_count: Whole = Field(
        5, ge=1, le=1000, description="receives before a message goes to the dead-letter queue"
    )
    loader_batch_size: Whole = Field(10, ge=1, le=10, description="messages per loader invocation")
    loader_batch_window_seconds: Whole = Field(
        5, ge=0, le=300, description="longest wait to fill a batch (seconds)"
    )
    loader_max_concurrency: Whole = Field(
        5, ge=2, le=1000, description="loader instances at once: database connections"
    )
    # Functions.
    loader_memory_mb: Whole = _memory(1024, "loader")
    loader_timeout_seconds: Whole = _timeout(
        600, "loader", "; the queue's visibility timeout is 6 times this"
    )
    pruner_memory_mb: Whole = _memory(512, "pruner")
    pruner_timeout_seconds: Whole = _timeout(900, "pruner")
    reconciler_memory_mb: Whole = _memory(512, "reconciler")
    reconciler_timeout_seconds: Whole = _timeout(300, "reconciler")
    scheduled_reserved_concurrency: OptionalWhole = Field(
        1,
        ge=1,
        le=1000,
        description="reserved concurrency of pruner and reconciler; `null` (or `none`) for none",
    )
    prune_schedule: Annotated[Schedule, Every(DAY)] = Field(
        Schedule.rate("1 day"), description="EventBridge schedule of the pruner"
    )
    reconcile_schedule: Annotated[Schedule, Every(HOUR)] = Field(
        Schedule.rate("1 hour"), description="EventBridge schedule of the reconciler"
    )
    retention_days: Whole = Field(
        400, ge=1, le=36_500, description="the pruner drops events older than this (days)"
    )
    max_reject_share: Number | None = Field(
        None,
        ge=0,
        le=1,
        description="a file with a larger share of bad lines fails; empty: the loader's 0.1",
    )
    log_level: Annotated[Text, OneOf(LOG_LEVELS)] = Field(
        "INFO", description="Powertools log level"
    )
    log_retention_days: Annotated[Whole, OneOf(LOG_RETENTION_DAYS)] = Field(
        90, description="days the functions' logs are kept (a CloudWatch Logs value)"
    )
    # The database: an existing one (its secret) or a new one.
    db_secret_arn: Annotated[str, SECRET_ARN] | None = Field(
        None,
        description="complete ARN of the existing database's secret (cdk.json: a placeholder)",
    )
    db_secret_kms_key_arn: Annotated[str, KMS_KEY_ARN] | None = Field(
        None, description="the KMS key of that secret, if not the AWS-managed one"
    )
    db_ssl_mode: Annotated[Text, OneOf(SSLMODES)] = Field(
        "require",
        description="libpq sslmode of the functions' connections; "
        "`disable`, `allow` and `prefer` only in a VPC",
    )
    db_ssl_root_cert: Annotated[str, ABSOLUTE_PATH] | None = Field(
        None, description="CA bundle path for `verify-ca`/`verify-full`"
    )
    create_database: Flag = Field(False, description="create an RDS for PostgreSQL instance")
    db_instance_class: Annotated[str, INSTANCE_CLASS, NEW_DB] = Field(
        "t4g.micro", description="its instance class"
    )
    db_engine_version: Annotated[Text, OneOf(DB_ENGINE_VERSIONS), NEW_DB] = Field(
        "17", description="its major version (minor versions upgrade automatically)"
    )
    db_allocated_storage_gb: Annotated[Whole, NEW_DB] = Field(
        20, ge=20, le=65_536, description="its storage (GB)"
    )
    db_max_allocated_storage_gb: Annotated[Whole, NEW_DB] = Field(
        100, ge=20, le=65_536, description="how far its storage may grow (GB)"
    )
    db_multi_az: Annotated[Flag, NEW_DB] = Field(False, description="a standby in a second AZ")
    db_backup_retention_days: Annotated[Whole, NEW_DB] = Field(
        7, ge=1, le=35, description="automated backups kept (days)"
    )
    db_deletion_protection: Annotated[Flag, NEW_DB] = Field(True, description="refuse deletion")
    db_name: Annotated[str, DB_NAME, NEW_DB] = Field("km2pg", description="its database name")
    # Network: none (the database is reached over the internet, TLS) or an existing VPC.
    vpc_id: Annotated[str, VPC_ID] | None = Field(
        None, description="the existing VPC of the functions (and database); empty: no VPC"
    )
    availability_zones: Annotated[tuple[Annotated[str, AZ], ...], Items] = Field(
        (), description="the AZ of each private subnet, in order"
    )
    private_subnet_ids: Annotated[tuple[Annotated[str, SUBNET_ID], ...], Items] = Field(
        (), description="the functions' subnets"
    )
    private_route_table_ids: Annotated[tuple[Annotated[str, ROUTE_TABLE_ID], ...], Items] = Field(
        (), description="their route tables, in order (for the S3 gateway endpoint)"
    )
    db_security_group_id: Annotated[str, SECURITY_GROUP_ID] | None = Field(
        None, description="the existing database's security group"
    )
    db_port: Whole = Field(5432, ge=1, le=65535, description="the database port")
    add_db_ingress: Flag = Field(
        False, description="add the functions' ingress rule to `dbSecurityGroupId`"
    )
    nat_gateway: Flag = Field(False, description="the subnets have NAT: make no endpoints")
    vpc_endpoints: Annotated[tuple[str, ...], Items, SubsetOf(ENDPOINTS)] = Field(
        ENDPOINTS, description="the VPC endpoints to create (when in a VPC without NAT)"
    )
    # Monitoring.
    alarm_email: Annotated[str, EMAIL] | None = Field(
        None, description="subscribe this address to the alarm topic"
    )
    stalled_hours: Whole = Field(
        6, ge=1, le=168, description='hours without a loaded file before "export stalled"'
    )

    @classmethod
    def from_context(cls, context: Mapping[str, Any]) -> Settings:
        """Read and check every key; raises :class:`SettingsError` naming the key at fault."""
        try:
            return cls.model_validate(context)
        except ValidationError as error:
            raise settings_error(error, cls.model_fields) from None

    @property
    def loader(self) -> FunctionSize:
        return FunctionSize(self.loader_memory_mb, self.loader_timeout_seconds)

    @property
    def pruner(self) -> FunctionSize:
        return FunctionSize(self.pruner_memory_mb, self.pruner_timeout_seconds)

    @property
    def reconciler(self) -> FunctionSize:
        return FunctionSize(self.reconciler_memory_mb, self.reconciler_timeout_seconds)

    @property
    def network(self) -> Network | None:
        """The existing VPC the functions run in, if ``vpcId`` is set."""
        if self.vpc_id is None:
            return None
        return Network(
            vpc_id=self.vpc_id,
            availability_zones=self.availability_zones,
            private_subnet_ids=self.private_subnet_ids,
            private_route_table_ids=self.private_route_table_ids,
            db_security_group_id=self.db_security_group_id,
            add_db_ingress=self.add_db_ingress,
        )

    @property
    def new_database(self) -> NewDatabase | None:
        """The database the stack creates, if ``createDatabase`` is set."""
        if not self.create_database:
            return None
        return NewDatabase(
            instance_class=self.db_instance_class,
            engine_version=self.db_engine_version,
            allocated_storage_gb=self.db_allocated_storage_gb,
            max_allocated_storage_gb=self.db_max_allocated_storage_gb,
            multi_az=self.db_multi_az,
            backup_retention_days=self.db_backup_retention_days,
            deletion_protection=self.db_deletion_protection,
            name=self.db_name,
        )

    @property
    def in_vpc(self) -> bool:
        """Whether the functions run in a VPC (an existing one, or the new database's)."""
        return self.vpc_id is not None or self.create_database

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The VPC endpoints the stack creates (none outside a VPC or behind a NAT)."""
        if not self.in_vpc or self.nat_gateway:
            return ()
        return self.vpc_endpoints

    @property
    def queue_visibility_seconds(self) -> int:
        """Six times the loader's timeout, as AWS advises for an SQS event source."""
        return 6 * self.loader_timeout_seconds

    @model_validator(mode="before")
    @classmethod
    def _read_context(cls, context: Any) -> Any:
        """Context as CDK gives it -> this model's input: unknown keys refused, CDK's own keys
        left out, an empty string (or JSON null, where a setting cannot be null) taken as not
        set, and the created database's settings read only with ``createDatabase``."""
        if not isinstance(context, Mapping):
            return context
        fields = {field.alias: field for field in cls.model_fields.values()}
        unknown = sorted(key for key in context if key not in fields and not _is_cdk_key(key))
        if unknown:
            raise SettingsError(f"unknown context keys (a typo?): {', '.join(unknown)}")
        creating = _is_true(context.get("createDatabase"))
        given = {}
        for key, value in context.items():
            field = fields.get(key)
            if field is None or _not_set(value, field):
                continue
            if NEW_DB in field.metadata and not creating:
                continue
            given[key] = value
        return given

    @model_validator(mode="after")
    def _network_rules(self) -> Self:
        if self.vpc_id is None:
            described = [
                key
                for key, value in (
                    ("availabilityZones", self.availability_zones),
                    ("privateSubnetIds", self.private_subnet_ids),
                    ("privateRouteTableIds", self.private_route_table_ids),
                    ("dbSecurityGroupId", self.db_security_group_id),
                    ("addDbIngress", self.add_db_ingress),
                    ("natGateway", self.nat_gateway),
                )
                if value
            ]
            if described:
                verb = "describes" if len(described) == 1 else "describe"
                raise SettingsError(
                    f"{', '.join(described)} {verb} the VPC of vpcId: set vpcId too"
                )
            return self
        subnets = self.private_subnet_ids
        if not subnets:
            raise SettingsError("vpcId needs privateSubnetIds (the functions' subnets)")
        if len(self.availability_zones) != len(subnets):
            raise SettingsError(
                "availabilityZones must name the AZ of each of privateSubnetIds, in the same order"
            )
        if self.private_route_table_ids and len(self.private_route_table_ids) != len(subnets):
            raise SettingsError(
                "privateRouteTableIds must name the route table of each of privateSubnetIds, "
                "in the same order"
            )
        if self.add_db_ingress and not self.db_security_group_id:
            raise SettingsError("addDbIngress needs dbSecurityGroupId")
        return self

    @model_validator(mode="after")
    def _database_rules(self) -> Self:
        if self.create_database and self.db_secret_arn:
            raise SettingsError(
                "set either dbSecretArn (an existing database) or createDatabase, not both "
                "(to create one, empty dbSecretArn: -c dbSecretArn=)"
            )
        if not self.create_database and not self.db_secret_arn:
            raise SettingsError(
                "set dbSecretArn (the complete ARN of an existing database's RDS-style secret) "
                "or createDatabase: true"
            )
        if self.create_database:
            if self.db_max_allocated_storage_gb < self.db_allocated_storage_gb:
                raise SettingsError("dbMaxAllocatedStorageGb must be at least dbAllocatedStorageGb")
            if not 1150 <= self.db_port <= 65535:
                raise SettingsError("an RDS instance's dbPort must be between 1150 and 65535")
            if self.vpc_id is not None and len(set(self.availability_zones)) < 2:
                raise SettingsError("an RDS subnet group needs privateSubnetIds in two or more AZs")
        elif self.vpc_id is not None and not self.db_security_group_id:
            raise SettingsError("vpcId with an existing database needs dbSecurityGroupId")
        return self

    @model_validator(mode="after")
    def _tls_and_endpoint_rules(self) -> Self:
        if self.db_ssl_mode == "verify-full" and not self.db_ssl_root_cert:
            raise SettingsError("dbSslMode verify-full needs dbSslRootCert (a CA bundle path)")
        if not self.in_vpc and self.db_ssl_mode in UNENCRYPTED_SSLMODES:
            raise SettingsError(
                "without a VPC the database is reached over the internet: dbSslMode must be "
                f"one of {', '.join(m for m in SSLMODES if m not in UNENCRYPTED_SSLMODES)}"
            )
        if self.vpc_id is not None and "s3" in self.endpoints and not self.private_route_table_ids:
            raise SettingsError(
                "the S3 gateway endpoint needs privateRouteTableIds (or leave s3 out of "
                "vpcEndpoints, or set natGateway: true)"
            )
        return self


CONTEXT_KEYS: Final = tuple(field.alias or name for name, field in Settings.model_fields.items())
"""The context keys this app reads (anything else in cdk.json is CDK's own)."""


def _is_cdk_key(key: str) -> bool:
    """CDK's own context: feature flags (``@aws-cdk/...``), ``aws:cdk:...``, lookups, and the
    CLI's hyphenated keys (``cli-telemetry``, ``acknowledged-issue-numbers``). Ours are camelCase.
    """
    return key.startswith("@") or ":" in key or "-" in key


def _not_set(value: Any, field: FieldInfo) -> bool:
    if isinstance(value, str):
        return value.strip() == ""
    return value is None and type(None) not in getattr(field.annotation, "__args__", ())


def _is_true(value: Any) -> bool:
    """``createDatabase`` read early (a malformed value is reported with the others)."""
    try:
        return value is not None and parse_flag(value)
    except ValueError:
        return False
