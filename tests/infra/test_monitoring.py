"""Every alarm (metric, threshold, missing-data rule) notifies one encrypted topic; a dashboard."""

from __future__ import annotations

import json
from typing import Any

from .conftest import Synth

KM2PG_DIMENSIONS = [{"Name": "service", "Value": "km2pg"}]


def alarms(synth: Synth) -> dict[str, dict[str, Any]]:
    """Alarm properties by their construct id (LoaderErrors, ExportStalled, ...)."""
    return {
        alarm.node.id: synth.template["Resources"][synth.logical_id(alarm)]["Properties"]
        for alarm in synth.stack.alarms.alarms
    }


def summary(props: dict[str, Any]) -> tuple[Any, ...]:
    return (
        props["Namespace"],
        props["MetricName"],
        props["Statistic"],
        props["Period"],
        props["ComparisonOperator"],
        props["Threshold"],
        props["EvaluationPeriods"],
        props["TreatMissingData"],
    )


def function_dimension(synth: Synth, fn: Any) -> list[dict[str, Any]]:
    return [{"Name": "FunctionName", "Value": {"Ref": synth.logical_id(fn.function)}}]


def test_every_alarm_and_its_metric_and_threshold(default: Synth) -> None:
    found = {name: summary(props) for name, props in alarms(default).items()}
    gt, lt = "GreaterThanThreshold", "LessThanThreshold"
    assert found == {
        "LoaderErrors": ("AWS/Lambda", "Errors", "Sum", 300, gt, 0, 1, "notBreaching"),
        "PrunerErrors": ("AWS/Lambda", "Errors", "Sum", 300, gt, 0, 1, "notBreaching"),
        "ReconcilerErrors": ("AWS/Lambda", "Errors", "Sum", 300, gt, 0, 1, "notBreaching"),
        "DeadLetterQueueNotEmpty": (
            "AWS/SQS", "ApproximateNumberOfMessagesVisible", "Maximum", 300, gt, 0, 1,
            "notBreaching",
        ),
        "OldestMessageTooOld": (
            "AWS/SQS", "ApproximateAgeOfOldestMessage", "Maximum", 300, gt, 3600, 1,
            "notBreaching",
        ),
        "FilesFailed": ("km2pg", "FilesFailed", "Sum", 300, gt, 0, 1, "notBreaching"),
        "ExportStalled": ("km2pg", "FilesLoaded", "Sum", 3600, lt, 1, 6, "breaching"),
        "PrunerMissedRun": ("AWS/Lambda", "Invocations", "Sum", 86_400, lt, 1, 1, "breaching"),
        "ReconcilerMissedRun": ("AWS/Lambda", "Invocations", "Sum", 3600, lt, 1, 1, "breaching"),
        "MessagesFailed": ("km2pg", "MessagesFailed", "Sum", 60, gt, 0, 2, "notBreaching"),
        "DatabaseUnavailable": (
            "km2pg", "DatabaseUnavailable", "Sum", 60, gt, 0, 2, "notBreaching",
        ),
        "ConfigErrors": ("km2pg", "ConfigErrors", "Sum", 60, gt, 0, 2, "notBreaching"),
        "LoaderThrottles": ("AWS/Lambda", "Throttles", "Sum", 60, gt, 0, 2, "notBreaching"),
        "FilesOverdue": ("km2pg", "FilesOverdue", "Maximum", 3600, gt, 0, 1, "notBreaching"),
    }  # fmt: skip


def test_failures_alarm_within_two_minutes(default: Synth) -> None:
    found = alarms(default)
    for name in ("MessagesFailed", "DatabaseUnavailable", "ConfigErrors", "LoaderThrottles"):
        props = found[name]
        assert props["Period"] * props["EvaluationPeriods"] <= 300, name
        assert (props["Period"], props["EvaluationPeriods"], props["DatapointsToAlarm"]) == (
            60,
            2,
            1,
        ), name
    assert found["LoaderThrottles"]["Dimensions"] == function_dimension(
        default, default.stack.loader
    )
    assert found["FilesOverdue"]["Dimensions"] == KM2PG_DIMENSIONS


def test_eventbridge_delivery_has_retries_a_dead_letter_queue_and_its_alarm(
    vpc_nat: Synth, default: Synth
) -> None:
    dlq = vpc_nat.stack.exports.event_dead_letter_queue
    assert dlq is not None
    dlq_id = vpc_nat.logical_id(dlq)
    rule = vpc_nat.stack.exports.rule
    assert rule is not None
    (target,) = vpc_nat.template["Resources"][vpc_nat.logical_id(rule)]["Properties"]["Targets"]
    assert target["RetryPolicy"] == {"MaximumEventAgeInSeconds": 86_400, "MaximumRetryAttempts": 10}
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [dlq_id, "Arn"]}}
    alarm = alarms(vpc_nat)["EventDeadLetterQueueNotEmpty"]
    assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert alarm["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq_id, "QueueName"]}}
    ]
    assert "EventDeadLetterQueueNotEmpty" not in alarms(default)


def test_alarms_watch_the_right_resources(default: Synth) -> None:
    found = alarms(default)
    stack = default.stack
    assert found["LoaderErrors"]["Dimensions"] == function_dimension(default, stack.loader)
    assert found["PrunerErrors"]["Dimensions"] == function_dimension(default, stack.pruner)
    assert found["ReconcilerErrors"]["Dimensions"] == function_dimension(default, stack.reconciler)
    assert found["PrunerMissedRun"]["Dimensions"] == function_dimension(default, stack.pruner)
    assert found["ReconcilerMissedRun"]["Dimensions"] == function_dimension(
        default, stack.reconciler
    )
    dlq = stack.load_queue.dead_letter_queue
    queue = stack.load_queue.queue
    assert found["DeadLetterQueueNotEmpty"]["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": [default.logical_id(dlq), "QueueName"]}}
    ]
    assert found["OldestMessageTooOld"]["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": [default.logical_id(queue), "QueueName"]}}
    ]
    assert found["FilesFailed"]["Dimensions"] == KM2PG_DIMENSIONS
    assert found["ExportStalled"]["Dimensions"] == KM2PG_DIMENSIONS


def test_stalled_hours_and_schedule_periods_follow_context(vpc_nat: Synth) -> None:
    found = alarms(vpc_nat)
    assert found["ExportStalled"]["EvaluationPeriods"] == 12
    assert found["ExportStalled"]["DatapointsToAlarm"] == 12
    assert found["ReconcilerMissedRun"]["Period"] == 1800  # rate(30 minutes)
    assert found["FilesOverdue"]["Period"] == 1800
    assert found["PrunerMissedRun"]["Period"] == 86_400  # a cron schedule: daily


def test_every_alarm_notifies_the_topic_on_alarm_and_recovery(every_configuration: Synth) -> None:
    topic = {"Ref": every_configuration.logical_id(every_configuration.stack.alarms.topic)}
    props = every_configuration.resources("AWS::CloudWatch::Alarm").values()
    assert len(props) == len(every_configuration.stack.alarms.alarms)
    assert len(props) == (15 if every_configuration.stack.settings.event_bridge else 14)
    for alarm in props:
        assert alarm["Properties"]["AlarmActions"] == [topic]
        assert alarm["Properties"]["OKActions"] == [topic]


def test_topic_is_kms_encrypted_tls_only_and_cloudwatch_may_use_the_key(default: Synth) -> None:
    alarms_construct = default.stack.alarms
    topic = default.template["Resources"][default.logical_id(alarms_construct.topic)]
    key_id = default.logical_id(alarms_construct.key)
    assert topic["Properties"]["KmsMasterKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}
    key = default.template["Resources"][key_id]["Properties"]
    assert key["EnableKeyRotation"] is True
    cloudwatch = [
        s for s in key["KeyPolicy"]["Statement"]
        if s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}
    ]  # fmt: skip
    assert cloudwatch[0]["Action"] == ["kms:Decrypt", "kms:GenerateDataKey*"]
    policy = default.only("AWS::SNS::TopicPolicy")["Properties"]["PolicyDocument"]
    assert {
        "Action": "sns:Publish",
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        "Effect": "Deny",
        "Principal": "*",
        "Resource": {"Ref": default.logical_id(alarms_construct.topic)},
        "Sid": "AllowPublishThroughSSLOnly",
    } in policy["Statement"]


def test_alarm_email_subscribes_unless_opted_out(new_database: Synth, vpc_nat: Synth) -> None:
    new_database.assertions.resource_count_is("AWS::SNS::Subscription", 0)
    subscription = vpc_nat.only("AWS::SNS::Subscription")["Properties"]
    assert subscription["Protocol"] == "email"
    assert subscription["Endpoint"] == "alerts@example.org"


def test_dashboard_shows_files_lines_lag_errors_durations_and_queues(default: Synth) -> None:
    body = default.only("AWS::CloudWatch::Dashboard")["Properties"]["DashboardBody"]
    text = json.dumps(body)
    titles = [
        "Alarms",
        "Files",
        "Lines",
        "Export lag and load time (seconds)",
        "Errors",
        "Durations (ms)",
        "Queue depth",
        "Oldest message age (seconds)",
        "Failures (per minute)",
        "Files loaded in the period (0: no file from Kissmetrics yet)",
    ]
    for title in titles:
        assert f'\\"title\\":\\"{title}\\"' in text, title
    for metric in (
        "FilesLoaded", "FilesSkipped", "FilesFailed", "LinesLoaded", "LinesRejected",
        "ExportLagSeconds", "LoadSeconds", "FilesEnqueued", "PrunedRows", "PrunedPartitions",
        "Errors", "Duration", "ApproximateNumberOfMessagesVisible",
        "ApproximateAgeOfOldestMessage", "MessagesFailed", "MessagesDeferred",
        "DatabaseUnavailable", "ConfigErrors", "FilesOverdue",
    ):  # fmt: skip
        assert f'\\"{metric}\\"' in text, metric
