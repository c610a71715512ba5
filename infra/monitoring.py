"""Alarms (to one SNS topic) and a CloudWatch dashboard for the pipeline."""

from __future__ import annotations

from typing import Final

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from infra.functions import LoaderFunction, PrunerFunction, ReconcilerFunction, ScheduledFunction
from infra.queue import LoadQueue
from infra.settings import Settings
from km2pg.contract import METRIC_NAMESPACE, SERVICE, Metric

DIMENSIONS: Final = {"service": SERVICE}
FIVE_MINUTES: Final = Duration.minutes(5)
ONE_HOUR: Final = Duration.hours(1)
MAX_QUEUE_AGE_SECONDS: Final = 3600


def km2pg_metric(
    name: str, statistic: str = "Sum", period: Duration = FIVE_MINUTES, label: str | None = None
) -> cw.Metric:
    """A metric the functions emit (EMF, namespace km2pg, dimension service=km2pg)."""
    return cw.Metric(
        namespace=METRIC_NAMESPACE,
        metric_name=name,
        dimensions_map=DIMENSIONS,
        statistic=statistic,
        period=period,
        label=label,
    )


class Alarms(Construct):
    """Every alarm of the pipeline, each notifying one KMS-encrypted SNS topic (alarm and OK).

    - loader, pruner, reconciler errors (Errors > 0 in 5 minutes);
    - dead-letter queue not empty; oldest load-queue message older than an hour;
    - files failed (the loader's FilesFailed > 0);
    - export stalled: no FilesLoaded for ``stalledHours`` hours (missing data breaches);
    - missed runs: pruner or reconciler invoked less than once in its schedule's period
      (missing data breaches).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: Settings,
        queue: LoadQueue,
        loader: LoaderFunction,
        pruner: PrunerFunction,
        reconciler: ReconcilerFunction,
    ) -> None:
        super().__init__(scope, construct_id)
        self.key = kms.Key(
            self,
            "TopicKey",
            description="km2pg alarm topic",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CloudWatchAlarmsPublish",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
                conditions={"StringEquals": {"aws:SourceAccount": Stack.of(self).account}},
            )
        )
        self.topic = sns.Topic(
            self, "Topic", display_name="km2pg alarms", master_key=self.key, enforce_ssl=True
        )
        if settings.alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(settings.alarm_email))
        self._action = cw_actions.SnsAction(self.topic)
        self.alarms: list[cw.Alarm] = []

        self.loader_errors = self._errors("LoaderErrors", loader)
        self.pruner_errors = self._errors("PrunerErrors", pruner)
        self.reconciler_errors = self._errors("ReconcilerErrors", reconciler)
        self.dead_letters = self._add(
            "DeadLetterQueueNotEmpty",
            queue.dead_letter_queue.metric_approximate_number_of_messages_visible(
                statistic="Maximum", period=FIVE_MINUTES
            ),
            description="Messages in the dead-letter queue: files that failed every retry. "
            "Inspect, fix, then redrive them to the load queue.",
            threshold=0,
            comparison=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
            missing=cw.TreatMissingData.NOT_BREACHING,
        )
        self.queue_age = self._add(
            "OldestMessageTooOld",
            queue.queue.metric_approximate_age_of_oldest_message(
                statistic="Maximum", period=FIVE_MINUTES
            ),
            description="A load-queue message waits for over an hour: the loader is failing, "
            "throttled or too slow.",
            threshold=MAX_QUEUE_AGE_SECONDS,
            comparison=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
            missing=cw.TreatMissingData.NOT_BREACHING,
        )
        self.files_failed = self._add(
            "FilesFailed",
            km2pg_metric(Metric.FILES_FAILED),
            description="An export file failed to load (too many bad lines, or unreadable); "
            "see the loader's logs and km2pg status.",
            threshold=0,
            comparison=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
            missing=cw.TreatMissingData.NOT_BREACHING,
        )
        self.export_stalled = self._add(
            "ExportStalled",
            km2pg_metric(Metric.FILES_LOADED, period=ONE_HOUR),
            description=f"No export file loaded for {settings.stalled_hours} hours: Kissmetrics "
            "stopped exporting, notifications stopped, or the loader is failing.",
            threshold=1,
            comparison=cw.ComparisonOperator.LESS_THAN_THRESHOLD,
            missing=cw.TreatMissingData.BREACHING,
            periods=settings.stalled_hours,
        )
        self.pruner_missed = self._missed_run("PrunerMissedRun", pruner)
        self.reconciler_missed = self._missed_run("ReconcilerMissedRun", reconciler)

    def _errors(self, construct_id: str, fn: LoaderFunction | ScheduledFunction) -> cw.Alarm:
        return self._add(
            construct_id,
            fn.function.metric_errors(statistic="Sum", period=FIVE_MINUTES),
            description=f"The km2pg {fn.node.id.lower()} function failed; see its logs.",
            threshold=0,
            comparison=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
            missing=cw.TreatMissingData.NOT_BREACHING,
        )

    def _missed_run(self, construct_id: str, fn: ScheduledFunction) -> cw.Alarm:
        return self._add(
            construct_id,
            fn.function.metric_invocations(
                statistic="Sum", period=Duration.seconds(fn.schedule.period_seconds)
            ),
            description=f"The km2pg {fn.node.id.lower()} function did not run in its schedule's "
            f"period ({fn.schedule.expression}).",
            threshold=1,
            comparison=cw.ComparisonOperator.LESS_THAN_THRESHOLD,
            missing=cw.TreatMissingData.BREACHING,
        )

    def _add(
        self,
        construct_id: str,
        metric: cw.IMetric,
        *,
        description: str,
        threshold: float,
        comparison: cw.ComparisonOperator,
        missing: cw.TreatMissingData,
        periods: int = 1,
    ) -> cw.Alarm:
        alarm = cw.Alarm(
            self,
            construct_id,
            alarm_description=description,
            metric=metric,
            threshold=threshold,
            comparison_operator=comparison,
            evaluation_periods=periods,
            datapoints_to_alarm=periods,
            treat_missing_data=missing,
        )
        alarm.add_alarm_action(self._action)
        alarm.add_ok_action(self._action)
        self.alarms.append(alarm)
        return alarm


class Dashboard(Construct):
    """One CloudWatch dashboard: alarms, files, lines, lag, errors, durations, the queues."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        alarms: Alarms,
        queue: LoadQueue,
        loader: LoaderFunction,
        pruner: PrunerFunction,
        reconciler: ReconcilerFunction,
    ) -> None:
        super().__init__(scope, construct_id)
        functions = {"loader": loader, "pruner": pruner, "reconciler": reconciler}
        self.dashboard = cw.Dashboard(self, "Dashboard", default_interval=Duration.days(7))
        self.dashboard.add_widgets(
            cw.AlarmStatusWidget(title="Alarms", alarms=list(alarms.alarms), width=24, height=4)
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="Files",
                left=[
                    km2pg_metric(Metric.FILES_LOADED, label="loaded"),
                    km2pg_metric(Metric.FILES_SKIPPED, label="skipped"),
                    km2pg_metric(Metric.FILES_FAILED, label="failed"),
                ],
                width=8,
            ),
            cw.GraphWidget(
                title="Lines",
                left=[km2pg_metric(Metric.LINES_LOADED, label="loaded")],
                right=[km2pg_metric(Metric.LINES_REJECTED, label="rejected")],
                width=8,
            ),
            cw.GraphWidget(
                title="Export lag and load time (seconds)",
                left=[km2pg_metric(Metric.EXPORT_LAG_SECONDS, "Maximum", label="export lag (max)")],
                right=[
                    km2pg_metric(Metric.LOAD_SECONDS, "Average", label="load (avg)"),
                    km2pg_metric(Metric.LOAD_SECONDS, "Maximum", label="load (max)"),
                ],
                width=8,
            ),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="Errors",
                left=[
                    fn.function.metric_errors(statistic="Sum", label=name)
                    for name, fn in functions.items()
                ],
                width=8,
            ),
            cw.GraphWidget(
                title="Durations (ms)",
                left=[
                    fn.function.metric_duration(statistic="Average", label=f"{name} (avg)")
                    for name, fn in functions.items()
                ],
                right=[
                    fn.function.metric_duration(statistic="Maximum", label=f"{name} (max)")
                    for name, fn in functions.items()
                ],
                width=8,
            ),
            cw.GraphWidget(
                title="Invocations and throttles",
                left=[
                    fn.function.metric_invocations(statistic="Sum", label=name)
                    for name, fn in functions.items()
                ],
                right=[loader.function.metric_throttles(statistic="Sum", label="loader throttles")],
                width=8,
            ),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="Queue depth",
                left=[
                    queue.queue.metric_approximate_number_of_messages_visible(
                        statistic="Maximum", label="waiting"
                    ),
                    queue.queue.metric_approximate_number_of_messages_not_visible(
                        statistic="Maximum", label="in flight"
                    ),
                ],
                right=[
                    queue.dead_letter_queue.metric_approximate_number_of_messages_visible(
                        statistic="Maximum", label="dead letters"
                    )
                ],
                width=8,
            ),
            cw.GraphWidget(
                title="Oldest message age (seconds)",
                left=[
                    queue.queue.metric_approximate_age_of_oldest_message(
                        statistic="Maximum", label="load queue"
                    ),
                    queue.dead_letter_queue.metric_approximate_age_of_oldest_message(
                        statistic="Maximum", label="dead-letter queue"
                    ),
                ],
                left_annotations=[
                    cw.HorizontalAnnotation(value=MAX_QUEUE_AGE_SECONDS, label="alarm")
                ],
                width=8,
            ),
            cw.GraphWidget(
                title="Reconciler and pruner",
                left=[km2pg_metric(Metric.FILES_ENQUEUED, period=ONE_HOUR, label="files enqueued")],
                right=[
                    km2pg_metric(Metric.PRUNED_ROWS, period=Duration.days(1), label="rows pruned"),
                    km2pg_metric(
                        Metric.PRUNED_PARTITIONS, period=Duration.days(1), label="partitions pruned"
                    ),
                ],
                width=8,
            ),
        )
