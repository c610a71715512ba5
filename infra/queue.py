"""The load queue between S3 and the loader, and its dead-letter queue."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.settings import Settings


class LoadQueue(Construct):
    """One message per export file to load (S3 notification, EventBridge event or reconciler).

    Both queues are encrypted (SQS-managed keys, which S3 and EventBridge can send to without a
    key policy) and refuse non-TLS requests. A message's visibility timeout is six times the
    loader's timeout; after ``maxReceiveCount`` failed receives it moves to the dead-letter queue,
    which keeps it 14 days.
    """

    def __init__(self, scope: Construct, construct_id: str, *, settings: Settings) -> None:
        super().__init__(scope, construct_id)
        self.dead_letter_queue = sqs.Queue(
            self,
            "DeadLetterQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        self.queue = sqs.Queue(
            self,
            "Queue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            visibility_timeout=Duration.seconds(settings.queue_visibility_seconds),
            retention_period=Duration.days(4),
            dead_letter_queue=sqs.DeadLetterQueue(
                max_receive_count=settings.max_receive_count, queue=self.dead_letter_queue
            ),
        )
