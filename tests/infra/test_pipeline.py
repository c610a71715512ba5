"""S3 -> queue -> loader, the schedules, and what the functions are given."""

from __future__ import annotations

import json
from typing import Any

from aws_cdk.assertions import Match
from infra.settings import KISSMETRICS_CANONICAL_USER

from .conftest import EXPORT_BUCKET, SECRET_ARN, Synth

HANDLERS = {
    "km2pg.handlers.loader.handler",
    "km2pg.handlers.pruner.handler",
    "km2pg.handlers.reconciler.handler",
    "km2pg.handlers.forgetter.handler",
}


def km2pg_functions(synth: Synth) -> dict[str, dict[str, Any]]:
    """The km2pg functions by handler (CDK's own helper functions left out)."""
    found = {
        resource["Properties"]["Handler"]: resource["Properties"]
        for resource in synth.resources("AWS::Lambda::Function").values()
        if resource["Properties"].get("Handler", "").startswith("km2pg.")
    }
    setup = {"km2pg.handlers.setup.handler"} if synth.stack.settings.create_database else set()
    assert set(found) == HANDLERS | setup
    return found


def ref(synth: Synth, construct: Any) -> dict[str, str]:
    return {"Ref": synth.logical_id(construct)}


def arn(synth: Synth, construct: Any) -> dict[str, list[str]]:
    return {"Fn::GetAtt": [synth.logical_id(construct), "Arn"]}


def test_new_bucket_notifies_the_queue_of_new_json_files_under_revisions(default: Synth) -> None:
    notifications = default.only("Custom::S3BucketNotifications")["Properties"]
    assert notifications["BucketName"] == ref(default, default.stack.exports.bucket)
    (configuration,) = notifications["NotificationConfiguration"]["QueueConfigurations"]
    assert configuration["Events"] == ["s3:ObjectCreated:*"]
    assert configuration["QueueArn"] == arn(default, default.stack.load_queue.queue)
    rules = configuration["Filter"]["Key"]["FilterRules"]
    assert sorted(rules, key=lambda rule: rule["Name"]) == [
        {"Name": "prefix", "Value": "revisions/"},
        {"Name": "suffix", "Value": ".json"},
    ]
    assert notifications["Managed"] is True
    # No EventBridge rule but the two schedules.
    assert not default.resources("AWS::Events::Rule").keys() - {
        default.logical_id(default.stack.pruner.rule),
        default.logical_id(default.stack.reconciler.rule),
    }


def test_existing_bucket_gets_notifications_merged_not_replaced(existing_vpc: Synth) -> None:
    existing_vpc.assertions.has_resource_properties(
        "Custom::S3BucketNotifications",
        {
            "BucketName": EXPORT_BUCKET,
            "Managed": False,
            "NotificationConfiguration": {
                "QueueConfigurations": [
                    Match.object_like(
                        {"QueueArn": arn(existing_vpc, existing_vpc.stack.load_queue.queue)}
                    )
                ]
            },
        },
    )
    existing_vpc.assertions.resource_count_is("AWS::S3::Bucket", 0)


def test_only_s3_may_send_notifications_to_the_queue(default: Synth) -> None:
    default.assertions.has_resource_properties(
        "AWS::SQS::QueuePolicy",
        {
            "Queues": [ref(default, default.stack.load_queue.queue)],
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Allow",
                                "Principal": {"Service": "s3.amazonaws.com"},
                                "Action": Match.array_with(["sqs:SendMessage"]),
                                "Condition": {
                                    "ArnLike": {
                                        "aws:SourceArn": arn(default, default.stack.exports.bucket)
                                    }
                                },
                            }
                        )
                    ]
                )
            },
        },
    )


def test_eventbridge_object_created_events_under_revisions_go_to_the_queue(vpc_nat: Synth) -> None:
    rule = vpc_nat.stack.exports.rule
    assert rule is not None
    rule_resource = vpc_nat.template["Resources"][vpc_nat.logical_id(rule)]["Properties"]
    assert rule_resource["EventPattern"] == {
        "source": ["aws.s3"],
        "detail-type": ["Object Created"],
        "detail": {
            "bucket": {"name": [EXPORT_BUCKET]},
            "object": {"key": [{"prefix": "revisions/"}]},
        },
    }
    assert rule_resource["Targets"][0]["Arn"] == arn(vpc_nat, vpc_nat.stack.load_queue.queue)
    # The existing bucket is switched to EventBridge delivery, and gets no direct notification.
    vpc_nat.assertions.has_resource_properties(
        "Custom::S3BucketNotifications",
        {
            "BucketName": EXPORT_BUCKET,
            "Managed": False,
            "NotificationConfiguration": {"EventBridgeConfiguration": {}},
        },
    )
    vpc_nat.assertions.has_resource_properties(
        "AWS::SQS::QueuePolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Principal": {"Service": "events.amazonaws.com"},
                                "Action": Match.array_with(["sqs:SendMessage"]),
                                "Condition": {"ArnEquals": {"aws:SourceArn": arn(vpc_nat, rule)}},
                            }
                        )
                    ]
                )
            }
        },
    )


def test_new_bucket_with_eventbridge_turns_it_on_in_the_bucket(new_database: Synth) -> None:
    new_database.assertions.has_resource_properties(
        "Custom::S3BucketNotifications",
        {"Managed": True, "NotificationConfiguration": {"EventBridgeConfiguration": {}}},
    )
    new_database.assertions.has_resource_properties(
        "AWS::Events::Rule",
        {"EventPattern": Match.object_like({"detail-type": ["Object Created"]})},
    )


def test_loader_consumes_the_queue_with_partial_batches_bounded_concurrency(default: Synth) -> None:
    mapping = default.only("AWS::Lambda::EventSourceMapping")["Properties"]
    assert mapping["EventSourceArn"] == arn(default, default.stack.load_queue.queue)
    assert mapping["FunctionName"] == ref(default, default.stack.loader.function)
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["BatchSize"] == 10
    assert mapping["MaximumBatchingWindowInSeconds"] == 5
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": 5}


def test_loader_concurrency_follows_context(existing_vpc: Synth) -> None:
    mapping = existing_vpc.only("AWS::Lambda::EventSourceMapping")["Properties"]
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": 3}


def test_queue_redrives_to_dlq_and_hides_messages_six_loader_timeouts(
    every_configuration: Synth,
) -> None:
    synth = every_configuration
    queue = synth.template["Resources"][synth.logical_id(synth.stack.load_queue.queue)]
    dlq = synth.template["Resources"][synth.logical_id(synth.stack.load_queue.dead_letter_queue)]
    loader = km2pg_functions(synth)["km2pg.handlers.loader.handler"]
    assert queue["Properties"]["VisibilityTimeout"] >= 6 * loader["Timeout"]
    assert queue["Properties"]["RedrivePolicy"] == {
        "deadLetterTargetArn": arn(synth, synth.stack.load_queue.dead_letter_queue),
        "maxReceiveCount": 5,
    }
    assert dlq["Properties"]["MessageRetentionPeriod"] == 14 * 86_400


def test_visibility_timeout_follows_the_loader_timeout(existing_vpc: Synth) -> None:
    queue = existing_vpc.template["Resources"][
        existing_vpc.logical_id(existing_vpc.stack.load_queue.queue)
    ]
    assert queue["Properties"]["VisibilityTimeout"] == 6 * 300


def test_pruner_runs_daily_and_reconciler_hourly_by_default(default: Synth) -> None:
    for fn, expression in (
        (default.stack.pruner, "rate(1 day)"),
        (default.stack.reconciler, "rate(1 hour)"),
    ):
        rule = default.template["Resources"][default.logical_id(fn.rule)]["Properties"]
        assert rule["ScheduleExpression"] == expression
        assert rule["Targets"][0]["Arn"] == arn(default, fn.function)


def test_schedules_follow_context(vpc_nat: Synth) -> None:
    rules = {
        name: vpc_nat.template["Resources"][vpc_nat.logical_id(fn.rule)]["Properties"]
        for name, fn in (("pruner", vpc_nat.stack.pruner), ("reconciler", vpc_nat.stack.reconciler))
    }
    assert rules["pruner"]["ScheduleExpression"] == "cron(30 3 * * ? *)"
    assert rules["reconciler"]["ScheduleExpression"] == "rate(30 minutes)"


def test_functions_are_python312_arm64_traced_with_the_layer(every_configuration: Synth) -> None:
    layer = {
        "Ref": every_configuration.logical_id(
            every_configuration.stack.node.find_child("DependencyLayer").node.find_child("Layer")
        )
    }
    for props in km2pg_functions(every_configuration).values():
        assert props["Runtime"] == "python3.12"
        assert props["Architectures"] == ["arm64"]
        assert props["TracingConfig"] == {"Mode": "Active"}
        assert props["Layers"] == [layer]
        assert "LogGroup" in props["LoggingConfig"]


def test_memory_timeout_and_concurrency_limits(default: Synth) -> None:
    functions = km2pg_functions(default)
    sizes = {
        handler.split(".")[2]: (
            p["MemorySize"],
            p["Timeout"],
            p.get("ReservedConcurrentExecutions"),
        )
        for handler, p in functions.items()
    }
    assert sizes == {
        "loader": (1024, 600, None),  # bounded by the event source's maximum concurrency
        "pruner": (512, 900, 1),
        "reconciler": (512, 300, 1),
        "forgetter": (512, 900, None),
    }


def test_layer_is_for_python312_on_arm64(default: Synth) -> None:
    layer = default.only("AWS::Lambda::LayerVersion")["Properties"]
    assert layer["CompatibleRuntimes"] == ["python3.12"]
    assert layer["CompatibleArchitectures"] == ["arm64"]


def test_log_groups_keep_logs_for_the_retention_period(default: Synth) -> None:
    for fn in (default.stack.loader, default.stack.pruner, default.stack.reconciler):
        log_group = default.template["Resources"][default.logical_id(fn.log_group)]
        assert log_group["Properties"]["RetentionInDays"] == 90


def test_environment_of_each_function(default: Synth) -> None:
    env = {
        handler.split(".")[2]: props["Environment"]["Variables"]
        for handler, props in km2pg_functions(default).items()
    }
    common = {
        "KM2PG_DB_SECRET_ARN": default.stack.settings.db_secret_arn,
        "KM2PG_DB_SSLMODE": "verify-full",
        "KM2PG_DB_SSLROOTCERT": "rds",
        "POWERTOOLS_SERVICE_NAME": "km2pg",
        "POWERTOOLS_METRICS_NAMESPACE": "km2pg",
        "POWERTOOLS_LOG_LEVEL": "INFO",
    }
    assert env["loader"] == {**common, "KM2PG_LOADER_TIME_MARGIN_SECONDS": "120"}
    assert env["pruner"] == {**common, "KM2PG_RETENTION_DAYS": "400"}
    assert env["reconciler"] == {
        **common,
        "KM2PG_QUEUE_URL": ref(default, default.stack.load_queue.queue),
        "KM2PG_EXPORT_BUCKET": ref(default, default.stack.exports.bucket),
        "KM2PG_EXPORT_PREFIX": "revisions/",
        "KM2PG_QUEUE_VISIBILITY_SECONDS": "3600",
    }


def test_optional_environment_follows_context(existing_vpc: Synth) -> None:
    env = {
        handler.split(".")[2]: props["Environment"]["Variables"]
        for handler, props in km2pg_functions(existing_vpc).items()
    }
    assert env["loader"]["KM2PG_MAX_REJECT_SHARE"] == "0.05"
    for variables in env.values():
        assert variables["KM2PG_DB_SECRET_ARN"] == SECRET_ARN
        assert variables["KM2PG_DB_SSLMODE"] == "verify-full"
        assert variables["KM2PG_DB_SSLROOTCERT"] == "/var/task/certs/global-bundle.pem"
    assert env["reconciler"]["KM2PG_EXPORT_BUCKET"] == EXPORT_BUCKET


def test_new_bucket_lets_kissmetrics_write_through_its_policy(default: Synth) -> None:
    bucket = default.stack.exports.bucket
    kissmetrics = {"CanonicalUser": KISSMETRICS_CANONICAL_USER}
    default.assertions.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "Bucket": ref(default, bucket),
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Allow",
                                "Principal": kissmetrics,
                                "Action": ["s3:GetBucketAcl", "s3:ListBucket"],
                                "Resource": arn(default, bucket),
                            }
                        ),
                        Match.object_like(
                            {
                                "Effect": "Allow",
                                "Principal": kissmetrics,
                                "Action": ["s3:DeleteObject", "s3:PutObject"],
                                "Resource": {"Fn::Join": ["", [arn(default, bucket), "/*"]]},
                            }
                        ),
                    ]
                )
            },
        },
    )
    # ACLs stay disabled: whoever writes, the bucket owner owns every object.
    props = default.template["Resources"][default.logical_id(bucket)]["Properties"]
    assert props["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}


def joined(value: Any) -> str:
    """An Fn::Join's literal parts, with each reference written as <ref>."""
    return "".join(part if isinstance(part, str) else "<ref>" for part in value["Fn::Join"][1])


def test_kissmetrics_access_acl_grants_by_the_bucket_acl_and_keeps_objects_the_owners(
    new_database: Synth, default: Synth
) -> None:
    exports = new_database.stack.exports
    bucket = new_database.template["Resources"][new_database.logical_id(exports.bucket)]
    assert bucket["Properties"]["OwnershipControls"] == {
        "Rules": [{"ObjectOwnership": "BucketOwnerPreferred"}]
    }
    default_bucket = default.template["Resources"][default.logical_id(default.stack.exports.bucket)]
    assert default_bucket["Properties"]["OwnershipControls"] == {
        "Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]
    }
    calls = {
        json.loads(joined(props["Properties"]["Create"]).replace("<ref>", "REF"))["action"]: props
        for props in new_database.resources("Custom::AWS").values()
    }
    assert set(calls) == {"getBucketAcl", "putBucketAcl"}
    put = json.loads(joined(calls["putBucketAcl"]["Properties"]["Create"]).replace("<ref>", "REF"))
    kissmetrics = f"id={KISSMETRICS_CANONICAL_USER}"
    assert put["parameters"] == {
        "Bucket": "REF",
        "GrantFullControl": "id=REF",  # the owner's canonical id, read by getBucketAcl
        "GrantRead": kissmetrics,  # List
        "GrantWrite": kissmetrics,  # Upload/Delete
        "GrantReadACP": kissmetrics,  # View Permissions
    }
    assert (
        calls["putBucketAcl"]["Properties"]["Update"]
        == calls["putBucketAcl"]["Properties"]["Create"]
    )
    policy = next(
        p["Properties"]["PolicyDocument"]["Statement"]
        for p in new_database.resources("AWS::S3::BucketPolicy").values()
        if p["Properties"]["Bucket"] == ref(new_database, exports.bucket)
    )
    sids = {statement.get("Sid") for statement in policy}
    assert "KissmetricsUploadAndDelete" not in sids
    (owners,) = [s for s in policy if s.get("Sid") == "EveryObjectIsTheBucketOwners"]
    assert owners["Effect"] == "Deny"
    assert owners["Action"] == "s3:PutObject"
    assert owners["Condition"]["StringNotEquals"] == {"s3:x-amz-acl": "bucket-owner-full-control"}
    # The deploy-time function may read and write this bucket's ACL, nothing else.
    rights = [
        statement
        for p in new_database.resources("AWS::IAM::Policy").values()
        for statement in p["Properties"]["PolicyDocument"]["Statement"]
        if "s3:PutBucketAcl" in statement["Action"]
    ]
    assert rights
    for statement in rights:
        assert statement["Action"] == ["s3:GetBucketAcl", "s3:PutBucketAcl"]
        assert statement["Resource"] == arn(new_database, exports.bucket)
    assert default.resources("Custom::AWS") == {}
