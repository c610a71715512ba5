"""The PostgreSQL database: an existing one (its secret) or a new private RDS instance."""

from __future__ import annotations

from aws_cdk import (
    Annotations,
    Aws,
    CfnOutput,
    CfnRule,
    CfnRuleAssertion,
    Duration,
    Fn,
    RemovalPolicy,
    Stack,
)
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_rds as rds
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from infra.nag import acknowledge
from infra.network import FunctionNetwork
from infra.settings import Settings
from km2pg.roles import APP_ROLE

ENGINE_VERSIONS = {
    "16": rds.PostgresEngineVersion.VER_16,
    "17": rds.PostgresEngineVersion.VER_17,
}
MASTER_USERNAME = "km2pg_admin"


class Database(Construct):
    """What the functions need of the database: its secret's ARN and a way in.

    - Existing database (``dbSecretArn``, the complete ARN of an RDS-style JSON secret: host,
      port, username, password, dbname): in a VPC, the functions' group may reach
      ``dbSecurityGroupId`` on ``dbPort``; the matching ingress rule on that group is added when
      ``addDbIngress`` is true, else the stack outputs the command that adds it.
    - ``createDatabase``: an RDS for PostgreSQL instance, encrypted, private, with automated
      backups, deletion protection (``dbDeletionProtection``), a generated secret, and its
      security group open to the functions' group only.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: Settings,
        network: FunctionNetwork | None,
    ) -> None:
        super().__init__(scope, construct_id)
        self._kms_key_arn = settings.db_secret_kms_key_arn
        if settings.db_ssl_mode != "verify-full":
            Annotations.of(self).add_warning_v2(
                "km2pg:dbSslModeUnverified",
                f"dbSslMode {settings.db_ssl_mode}: the functions do not check the database "
                "server's identity (verify-full does), so whoever can intercept their traffic "
                "can pose as the database and read its password. Keep it for a server whose "
                "certificate no CA you can ship signs.",
            )
        self._existing_region: str | None = None
        self.master_secret_arn: str | None = None
        self.rotation: secretsmanager.SecretRotation | None = None
        self.instance: rds.DatabaseInstance | None = None
        if settings.new_database is not None:
            assert network is not None, "a new database lives in the functions' network"
            self.secret_arn = self._create(settings, network)
        else:
            assert settings.db_secret_arn is not None
            self.secret_arn = settings.db_secret_arn
            self._existing_region = settings.db_secret_arn.split(":")[3]
            if network is not None:
                self._open_existing(settings, network)
                if "secretsmanager" in settings.endpoints:
                    self._same_region_rule(self._existing_region)

    @property
    def secret_region(self) -> str:
        """The region of the secret: its ARN's for an existing database, else the stack's."""
        if self._existing_region is not None:
            return self._existing_region
        return Stack.of(self).region

    def grant_read_secret(self, role: iam.Role) -> None:
        """secretsmanager:GetSecretValue on this database's secret, nothing else."""
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="ReadDatabaseSecret",
                actions=["secretsmanager:GetSecretValue"],
                resources=[self.secret_arn],
            )
        )
        if self._kms_key_arn:
            role.add_to_principal_policy(
                iam.PolicyStatement(
                    sid="DecryptDatabaseSecret",
                    actions=["kms:Decrypt"],
                    resources=[self._kms_key_arn],
                    conditions={
                        "StringEquals": {
                            "kms:ViaService": f"secretsmanager.{Stack.of(self).region}"
                            f".{Stack.of(self).url_suffix}"
                        }
                    },
                )
            )

    def _same_region_rule(self, region: str) -> None:
        """Functions in a VPC without NAT reach Secrets Manager through the stack's own region's
        endpoint only: a secret elsewhere is refused before anything deploys (the stack's
        region is not known at synth, so CloudFormation checks it)."""
        CfnRule(
            self,
            "SecretInStackRegion",
            assertions=[
                CfnRuleAssertion(
                    assert_=Fn.condition_equals(Aws.REGION, region),
                    assert_description=(
                        f"dbSecretArn is in {region}: functions in a VPC without NAT reach "
                        "Secrets Manager only through this region's endpoint. Deploy the stack "
                        f"in {region}, or set natGateway: true."
                    ),
                )
            ],
        )

    def _open_existing(self, settings: Settings, network: FunctionNetwork) -> None:
        assert settings.network is not None
        group_id = settings.network.db_security_group_id
        assert group_id is not None
        port = ec2.Port.tcp(settings.db_port)
        network.security_group.add_egress_rule(
            ec2.Peer.security_group_id(group_id), port, "PostgreSQL (the km2pg database)"
        )
        source = network.security_group.security_group_id
        if settings.network.add_db_ingress:
            ec2.CfnSecurityGroupIngress(
                self,
                "IngressFromFunctions",
                group_id=group_id,
                ip_protocol="tcp",
                from_port=settings.db_port,
                to_port=settings.db_port,
                source_security_group_id=source,
                description="km2pg functions to PostgreSQL",
            )
        else:
            output = CfnOutput(
                self,
                "IngressCommand",
                description="Run once: lets the km2pg functions reach the database",
                value=Fn.join(
                    "",
                    [
                        f"aws ec2 authorize-security-group-ingress --group-id {group_id} "
                        f"--protocol tcp --port {settings.db_port} --source-group ",
                        source,
                    ],
                ),
            )
            output.override_logical_id("DatabaseIngressCommand")

    def _create(self, settings: Settings, network: FunctionNetwork) -> str:
        spec = settings.new_database
        assert spec is not None
        instance = rds.DatabaseInstance(
            self,
            "Instance",
            engine=rds.DatabaseInstanceEngine.postgres(
                version=ENGINE_VERSIONS[spec.engine_version]
            ),
            instance_type=ec2.InstanceType(spec.instance_class),
            vpc=network.vpc,
            vpc_subnets=network.subnets,
            port=settings.db_port,
            credentials=rds.Credentials.from_generated_secret(MASTER_USERNAME),
            database_name=spec.name,
            storage_encrypted=True,
            publicly_accessible=False,
            multi_az=spec.multi_az,
            allocated_storage=spec.allocated_storage_gb,
            max_allocated_storage=spec.max_allocated_storage_gb,
            storage_type=rds.StorageType.GP3,
            backup_retention=Duration.days(spec.backup_retention_days),
            deletion_protection=spec.deletion_protection,
            removal_policy=RemovalPolicy.SNAPSHOT,
            auto_minor_version_upgrade=True,
            copy_tags_to_snapshot=True,
        )
        instance.connections.allow_default_port_from(
            network.security_group, "km2pg functions to PostgreSQL"
        )
        self.instance = instance
        assert instance.secret is not None
        self.master_secret_arn = instance.secret.secret_arn
        # The functions' own secret (km2pg_app, made by the setup function at deploy), rotated
        # by Secrets Manager alternating between km2pg_app and km2pg_app_clone.
        app_secret = rds.DatabaseSecret(
            self,
            "AppSecret",
            username=APP_ROLE,
            master_secret=instance.secret,
            exclude_characters=" %+~`#$&*()|[]{}:;<>?!'/@\"\\",
        ).attach(instance)
        self.app_secret = app_secret
        self.rotation = instance.add_rotation_multi_user(
            "AppSecretRotation",
            secret=app_secret,
            automatically_after=Duration.days(spec.secret_rotation_days),
            security_group=network.security_group,
            vpc_subnets=network.subnets,
        )
        acknowledge(
            instance,
            "The instance is private (isolated subnets, no public address) and its security "
            "group admits only the km2pg functions, so a non-default port adds nothing; "
            "dbPort changes it.",
            "AwsSolutions-RDS11",
        )
        if not spec.multi_az:
            acknowledge(
                instance,
                "Single-AZ by choice (dbMultiAz: false): a load interrupted by a failover is "
                "retried from the queue, and automated backups restore the data.",
                "AwsSolutions-RDS3",
            )
        if not spec.deletion_protection:
            acknowledge(
                instance,
                "Deletion protection turned off on purpose by context (dbDeletionProtection: "
                "false), e.g. for a test stack.",
                "AwsSolutions-RDS10",
            )
        acknowledge(
            instance.node.find_child("Secret"),
            "The master user's secret is read once, by the setup function at deploy, to "
            "create km2pg_app; the functions never get it. The secret they use (km2pg_app's) "
            "rotates (multi-user, every dbSecretRotationDays).",
            "AwsSolutions-SMG4",
        )
        return app_secret.secret_arn
