"""The S3 bucket Kissmetrics exports into, and how new export files reach the load queue."""

from __future__ import annotations

from aws_cdk import CfnElement, Duration, RemovalPolicy, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_sqs as sqs
from aws_cdk import custom_resources as cr
from constructs import Construct

from infra.nag import acknowledge
from infra.settings import KISSMETRICS_CANONICAL_USER, Settings

EXPORT_SUFFIX = ".json"
INDEX_KEY = "index.csv"
EVENT_RETRY_ATTEMPTS = 10


class ExportBucket(Construct):
    """The export bucket (existing, by name, or new) wired to the load queue.

    A new bucket blocks public access, refuses non-TLS requests, encrypts with S3-managed keys
    (SSE-S3, which a writer from another account needs no key grant for), logs access to a
    second bucket, keeps ACLs disabled (every object is owned by the bucket owner) and lets
    Kissmetrics' canonical user list, write and delete objects and read the bucket ACL through
    its bucket policy. Both buckets are retained when the stack is deleted.

    New export files reach the queue as S3 event notifications (ObjectCreated, ``exportPrefix``,
    ``.json``) or, with ``eventBridge``, as EventBridge "Object Created" events matched by a rule.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, settings: Settings, queue: sqs.IQueue
    ) -> None:
        super().__init__(scope, construct_id)
        self.prefix = settings.export_prefix
        self.created = settings.export_bucket_name is None
        if settings.export_bucket_name is not None:
            self.bucket: s3.IBucket = s3.Bucket.from_bucket_name(
                self, "Bucket", settings.export_bucket_name
            )
            if settings.event_bridge:
                self.bucket.enable_event_bridge_notification()
        else:
            self.bucket = self._create(settings)
        self.event_dead_letter_queue: sqs.Queue | None = None
        if settings.event_bridge:
            # Events EventBridge could not deliver after its retries land here (alarmed), so a
            # notification is never dropped silently; the reconciler also heals the gap.
            self.event_dead_letter_queue = sqs.Queue(
                self,
                "EventDeadLetterQueue",
                encryption=sqs.QueueEncryption.SQS_MANAGED,
                enforce_ssl=True,
                retention_period=Duration.days(14),
            )
            acknowledge(
                self.event_dead_letter_queue,
                "This is the dead-letter queue of the EventBridge rule's target; a dead-letter "
                "queue of its own would have nothing to catch.",
                "AwsSolutions-SQS3",
            )
            self.rule: events.Rule | None = events.Rule(
                self,
                "ObjectCreatedRule",
                description=f"km2pg: new objects under {self.prefix} to the load queue",
                event_pattern=events.EventPattern(
                    source=["aws.s3"],
                    detail_type=["Object Created"],
                    detail={
                        "bucket": {"name": [self.bucket.bucket_name]},
                        "object": {"key": [{"prefix": self.prefix}]},
                    },
                ),
                targets=[
                    targets.SqsQueue(
                        queue,
                        retry_attempts=EVENT_RETRY_ATTEMPTS,
                        max_event_age=Duration.hours(24),
                        dead_letter_queue=self.event_dead_letter_queue,
                    )
                ],
            )
        else:
            self.rule = None
            self.bucket.add_event_notification(
                s3.EventType.OBJECT_CREATED,
                s3n.SqsDestination(queue),
                s3.NotificationKeyFilter(prefix=self.prefix, suffix=EXPORT_SUFFIX),
            )

    @property
    def exports_arn(self) -> str:
        """ARN of every object under the export prefix."""
        return self.bucket.arn_for_objects(f"{self.prefix}*")

    @property
    def exports_nag_id(self) -> str:
        """The cdk-nag finding for a grant on every object under the prefix (a wildcard)."""
        if self.created:
            cfn = self.bucket.node.default_child
            assert isinstance(cfn, CfnElement)
            stack = Stack.of(self)
            arn = f"<{stack.resolve(stack.get_logical_id(cfn))}.Arn>"
        else:
            arn = f"arn:<AWS::Partition>:s3:::{self.bucket.bucket_name}"
        return f"AwsSolutions-IAM5[Resource::{arn}/{self.prefix}*]"

    def grant_read_exports(self, role: iam.Role) -> None:
        """s3:GetObject on the export prefix only."""
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="ReadExportFiles", actions=["s3:GetObject"], resources=[self.exports_arn]
            )
        )
        acknowledge(
            role,
            "Reads only the export files: every object under the export prefix, which is "
            "what Kissmetrics writes (revisions/N.json, one per hour, names not known ahead).",
            self.exports_nag_id,
        )

    def grant_list_exports(self, role: iam.Role) -> None:
        """s3:ListBucket for the export prefix only, and s3:GetObject on index.csv."""
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="ListExportFiles",
                actions=["s3:ListBucket"],
                resources=[self.bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{self.prefix}*"]}},
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="ReadExportIndex",
                actions=["s3:GetObject"],
                resources=[self.bucket.arn_for_objects(INDEX_KEY)],
            )
        )

    def _create(self, settings: Settings) -> s3.Bucket:
        access_logs = s3.Bucket(
            self,
            "AccessLogs",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(365))],
        )
        acknowledge(
            access_logs,
            "This is the access-log bucket of the export bucket; logging its own access would "
            "log endlessly.",
            "AwsSolutions-S1",
        )
        by_acl = settings.kissmetrics_access == "acl"
        bucket = s3.Bucket(
            self,
            "Bucket",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            # With an ACL grant, ACLs must be on; "preferred" still makes an object written with
            # bucket-owner-full-control the bucket owner's (the policy below requires that).
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_PREFERRED
            if by_acl
            else s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=access_logs,
            server_access_logs_prefix="export-bucket/",
            event_bridge_enabled=settings.event_bridge,
            removal_policy=RemovalPolicy.RETAIN,
        )
        if by_acl:
            self._admit_kissmetrics_by_acl(bucket)
        else:
            self._admit_kissmetrics_by_policy(bucket)
        return bucket

    def _admit_kissmetrics_by_policy(self, bucket: s3.Bucket) -> None:
        """List and View Permissions on the bucket, Upload/Delete on its objects."""
        kissmetrics = iam.CanonicalUserPrincipal(KISSMETRICS_CANONICAL_USER)
        bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="KissmetricsListAndViewPermissions",
                principals=[kissmetrics],
                actions=["s3:ListBucket", "s3:GetBucketAcl"],
                resources=[bucket.bucket_arn],
            )
        )
        bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="KissmetricsUploadAndDelete",
                principals=[kissmetrics],
                actions=["s3:PutObject", "s3:DeleteObject"],
                resources=[bucket.arn_for_objects("*")],
            )
        )

    def _admit_kissmetrics_by_acl(self, bucket: s3.Bucket) -> None:
        """The grant Kissmetrics' setup page asks for, in the bucket ACL: List (READ),
        Upload/Delete (WRITE), View Permissions (READ_ACP); the owner keeps FULL_CONTROL.

        CloudFormation sets only canned ACLs, so a deploy-time call does it: GetBucketAcl gives
        the owner's canonical id, PutBucketAcl writes the whole ACL. A bucket policy refuses
        any upload that would not be the bucket owner's (without bucket-owner-full-control).
        """
        acl_rights = iam.PolicyStatement(
            actions=["s3:GetBucketAcl", "s3:PutBucketAcl"], resources=[bucket.bucket_arn]
        )
        policy = cr.AwsCustomResourcePolicy.from_statements([acl_rights])
        owner = cr.AwsCustomResource(
            self,
            "BucketOwner",
            on_create=cr.AwsSdkCall(
                service="S3",
                action="getBucketAcl",
                parameters={"Bucket": bucket.bucket_name},
                output_paths=["Owner.ID"],
                physical_resource_id=cr.PhysicalResourceId.of("export-bucket-owner"),
            ),
            policy=policy,
            install_latest_aws_sdk=False,
        )
        owner_id = owner.get_response_field("Owner.ID")
        put_acl = cr.AwsSdkCall(
            service="S3",
            action="putBucketAcl",
            parameters={
                "Bucket": bucket.bucket_name,
                "GrantFullControl": f"id={owner_id}",
                "GrantRead": f"id={KISSMETRICS_CANONICAL_USER}",
                "GrantWrite": f"id={KISSMETRICS_CANONICAL_USER}",
                "GrantReadACP": f"id={KISSMETRICS_CANONICAL_USER}",
            },
            physical_resource_id=cr.PhysicalResourceId.of("export-bucket-kissmetrics-acl"),
        )
        self.kissmetrics_acl = cr.AwsCustomResource(
            self,
            "KissmetricsAcl",
            on_create=put_acl,
            on_update=put_acl,
            policy=policy,
            install_latest_aws_sdk=False,
        )
        bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="EveryObjectIsTheBucketOwners",
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=["s3:PutObject"],
                resources=[bucket.arn_for_objects("*")],
                conditions={
                    "StringNotEquals": {"s3:x-amz-acl": "bucket-owner-full-control"},
                    "StringNotEqualsIfExists": {"aws:PrincipalAccount": Stack.of(self).account},
                },
            )
        )
