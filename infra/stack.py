"""The km2pg stack: a thin composition of the constructs that say what they build."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from infra.database import Database
from infra.export_bucket import ExportBucket
from infra.functions import (
    ForgetterFunction,
    FunctionCommons,
    LoaderFunction,
    PrunerFunction,
    ReconcilerFunction,
    SetupFunction,
    function_code,
)
from infra.layer import DependencyLayer
from infra.monitoring import Alarms, Dashboard
from infra.nag import acknowledge
from infra.network import FunctionNetwork
from infra.queue import LoadQueue
from infra.settings import Settings

NOTIFICATIONS_HANDLER_PREFIX = "BucketNotificationsHandler"
AWS_CUSTOM_RESOURCE_PROVIDER = "AWS679f53fac002430cb0da5b7982bd2287"
"""The id CDK gives the one function behind every AwsCustomResource (kissmetricsAccess acl)."""


class Km2pgStack(Stack):
    """Kissmetrics exports (S3) -> load queue (SQS) -> loader (Lambda) -> PostgreSQL."""

    def __init__(
        self, scope: Construct, construct_id: str, *, settings: Settings, **kwargs: Any
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.settings = settings
        self.network = (
            FunctionNetwork(self, "FunctionNetwork", settings=settings) if settings.in_vpc else None
        )
        self.database = Database(self, "Database", settings=settings, network=self.network)
        self.load_queue = LoadQueue(self, "LoadQueue", settings=settings)
        self.exports = ExportBucket(
            self, "ExportBucket", settings=settings, queue=self.load_queue.queue
        )
        layer = DependencyLayer(self, "DependencyLayer").layer
        code = function_code()
        commons = FunctionCommons(
            settings=settings,
            code=code,
            layer=layer,
            database=self.database,
            network=self.network,
        )
        self.loader = LoaderFunction(
            self, "Loader", commons=commons, queue=self.load_queue, exports=self.exports
        )
        self.pruner = PrunerFunction(self, "Pruner", commons=commons)
        self.reconciler = ReconcilerFunction(
            self, "Reconciler", commons=commons, queue=self.load_queue, exports=self.exports
        )
        self.forgetter = ForgetterFunction(self, "Forgetter", commons=commons)
        self.setup: SetupFunction | None = None
        if self.database.master_secret_arn is not None:
            self.setup = SetupFunction(
                self,
                "Setup",
                commons=commons,
                master_secret_arn=self.database.master_secret_arn,
                before=[self.loader, self.pruner, self.reconciler, self.forgetter],
            )
            assert self.database.rotation is not None
            self.database.rotation.node.add_dependency(self.setup.trigger)
        monitored: dict[str, Any] = {
            "queue": self.load_queue,
            "loader": self.loader,
            "pruner": self.pruner,
            "reconciler": self.reconciler,
        }
        self.alarms = Alarms(self, "Alarms", settings=settings, exports=self.exports, **monitored)
        self.dashboard = Dashboard(self, "Dashboard", alarms=self.alarms, **monitored)
        self._outputs()
        self._acknowledge_cdk_helpers()

    def _outputs(self) -> None:
        CfnOutput(self, "ExportBucketName", value=self.exports.bucket.bucket_name)
        CfnOutput(self, "LoadQueueUrl", value=self.load_queue.queue.queue_url)
        CfnOutput(self, "DeadLetterQueueUrl", value=self.load_queue.dead_letter_queue.queue_url)
        CfnOutput(self, "DatabaseSecretArn", value=self.database.secret_arn)
        CfnOutput(self, "AlarmTopicArn", value=self.alarms.topic.topic_arn)
        CfnOutput(self, "LoaderFunctionName", value=self.loader.function.function_name)
        CfnOutput(self, "PrunerFunctionName", value=self.pruner.function.function_name)
        CfnOutput(self, "ReconcilerFunctionName", value=self.reconciler.function.function_name)
        CfnOutput(self, "ForgetterFunctionName", value=self.forgetter.function.function_name)
        CfnOutput(self, "DashboardName", value=self.dashboard.dashboard.dashboard_name)
        if self.network is not None:
            CfnOutput(
                self,
                "FunctionSecurityGroupId",
                value=self.network.security_group.security_group_id,
            )
        if self.database.instance is not None:
            CfnOutput(
                self,
                "DatabaseEndpoint",
                value=self.database.instance.db_instance_endpoint_address,
            )

    def _acknowledge_cdk_helpers(self) -> None:
        """Findings on the helper functions CDK itself adds (not km2pg's own code)."""
        for child in self.node.children:
            if child.node.id == AWS_CUSTOM_RESOURCE_PROVIDER:
                acknowledge(
                    child,
                    "CDK's own AwsCustomResource function (run at deploy time only, to set the "
                    "export bucket's ACL) has the AWS-managed basic execution role, which CDK "
                    "does not let us replace; its S3 rights are scoped to the bucket's ACL.",
                    "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/"
                    "service-role/AWSLambdaBasicExecutionRole]",
                )
            if child.node.id.startswith(NOTIFICATIONS_HANDLER_PREFIX):
                acknowledge(
                    child,
                    "CDK's own bucket-notifications helper (a custom resource run at deploy "
                    "time only) has the AWS-managed basic execution role, which CDK does not "
                    "let us replace; its S3 permission is scoped to the bucket.",
                    "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/"
                    "service-role/AWSLambdaBasicExecutionRole]",
                )
