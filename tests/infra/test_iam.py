"""Least privilege: each function's role allows exactly what its handler does."""

from __future__ import annotations

from typing import Any

from .conftest import EXPORT_BUCKET, SECRET_ARN, SECRET_KEY_ARN, Synth

XRAY = {"xray:PutTelemetryRecords", "xray:PutTraceSegments"}
ENI = {
    "ec2:AssignPrivateIpAddresses",
    "ec2:CreateNetworkInterface",
    "ec2:DeleteNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:UnassignPrivateIpAddresses",
}
SQS_CONSUME = {
    "sqs:ChangeMessageVisibility",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
    "sqs:GetQueueUrl",
    "sqs:ReceiveMessage",
}


def actions(statement: dict[str, Any]) -> set[str]:
    action = statement["Action"]
    return {action} if isinstance(action, str) else set(action)


def statements(synth: Synth, function: Any) -> list[dict[str, Any]]:
    """Every statement of the policies attached to the function's role."""
    role = {"Ref": synth.logical_id(function.role)}
    found: list[dict[str, Any]] = []
    for policy in synth.resources("AWS::IAM::Policy").values():
        if role in policy["Properties"]["Roles"]:
            found.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    role_props = synth.template["Resources"][synth.logical_id(function.role)]["Properties"]
    assert "ManagedPolicyArns" not in role_props, "no AWS-managed policies on km2pg roles"
    assert "Policies" not in role_props
    return found


def by_action(synth: Synth, function: Any) -> dict[str, list[Any]]:
    """action -> the resources it is allowed on (conditions kept apart by test)."""
    allowed: dict[str, list[Any]] = {}
    for statement in statements(synth, function):
        assert statement["Effect"] == "Allow"
        resources = statement["Resource"]
        for action in actions(statement):
            allowed.setdefault(action, []).extend(
                resources if isinstance(resources, list) else [resources]
            )
    return allowed


def export_objects(synth: Synth, key: str) -> Any:
    bucket = synth.stack.exports.bucket
    if synth.stack.exports.created:
        return {"Fn::Join": ["", [{"Fn::GetAtt": [synth.logical_id(bucket), "Arn"]}, f"/{key}"]]}
    return {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, f":s3:::{EXPORT_BUCKET}/{key}"]]}


def queue_arn(synth: Synth) -> Any:
    return {"Fn::GetAtt": [synth.logical_id(synth.stack.load_queue.queue), "Arn"]}


def log_group_arn(synth: Synth, function: Any) -> Any:
    return {"Fn::GetAtt": [synth.logical_id(function.log_group), "Arn"]}


def test_loader_reads_only_the_export_prefix_its_secret_and_its_queue(default: Synth) -> None:
    loader = default.stack.loader
    allowed = by_action(default, loader)
    assert allowed.pop("s3:GetObject") == [export_objects(default, "revisions/*")]
    assert allowed.pop("secretsmanager:GetSecretValue") == [default.stack.settings.db_secret_arn]
    for action in SQS_CONSUME:
        assert allowed.pop(action) == [queue_arn(default)]
    assert allowed.pop("logs:CreateLogStream") == [log_group_arn(default, loader)]
    assert allowed.pop("logs:PutLogEvents") == [log_group_arn(default, loader)]
    for action in XRAY:
        assert allowed.pop(action) == ["*"]
    assert allowed == {}, "the loader may do nothing else"


def test_pruner_reads_only_its_secret(default: Synth) -> None:
    allowed = by_action(default, default.stack.pruner)
    assert allowed.pop("secretsmanager:GetSecretValue") == [default.stack.settings.db_secret_arn]
    assert set(allowed) == {"logs:CreateLogStream", "logs:PutLogEvents", *XRAY}


def test_forgetter_reads_only_its_secret_and_nothing_invokes_it(default: Synth) -> None:
    forgetter = default.stack.forgetter
    allowed = by_action(default, forgetter)
    assert allowed.pop("secretsmanager:GetSecretValue") == [default.stack.settings.db_secret_arn]
    assert allowed.pop("logs:CreateLogStream") == [log_group_arn(default, forgetter)]
    assert allowed.pop("logs:PutLogEvents") == [log_group_arn(default, forgetter)]
    assert set(allowed) == XRAY
    logical_id = default.logical_id(forgetter.function)
    references = ({"Ref": logical_id}, {"Fn::GetAtt": [logical_id, "Arn"]})
    triggers = [
        resource
        for kind in ("AWS::Lambda::Permission", "AWS::Lambda::EventSourceMapping")
        for resource in default.resources(kind).values()
        if resource["Properties"]["FunctionName"] in references
    ]
    assert triggers == [], "nothing may invoke the forgetter but a person with lambda:Invoke"
    assert "ForgetterFunctionName" in default.template["Outputs"]


def test_a_secret_under_its_own_key_may_be_decrypted_only_through_secrets_manager(
    vpc_nat: Synth,
) -> None:
    for fn in (vpc_nat.stack.loader, vpc_nat.stack.pruner, vpc_nat.stack.reconciler):
        decrypt = [s for s in statements(vpc_nat, fn) if "kms:Decrypt" in actions(s)]
        assert decrypt == [
            {
                "Sid": "DecryptDatabaseSecret",
                "Effect": "Allow",
                "Action": "kms:Decrypt",
                "Resource": SECRET_KEY_ARN,
                "Condition": {
                    "StringEquals": {
                        "kms:ViaService": {
                            "Fn::Join": [
                                "",
                                [
                                    "secretsmanager.",
                                    {"Ref": "AWS::Region"},
                                    ".",
                                    {"Ref": "AWS::URLSuffix"},
                                ],
                            ]
                        }
                    }
                },
            }
        ]


def test_no_kms_rights_without_a_secret_key(default: Synth) -> None:
    for fn in (default.stack.loader, default.stack.pruner, default.stack.reconciler):
        assert not any(a.startswith("kms:") for a in by_action(default, fn))


def test_reconciler_lists_the_prefix_reads_index_and_exports_and_sends_to_queue(
    existing_vpc: Synth,
) -> None:
    reconciler = existing_vpc.stack.reconciler
    listing = [s for s in statements(existing_vpc, reconciler) if "s3:ListBucket" in actions(s)]
    assert listing == [
        {
            "Sid": "ListExportFiles",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": {
                "Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, f":s3:::{EXPORT_BUCKET}"]]
            },
            "Condition": {"StringLike": {"s3:prefix": ["revisions/*"]}},
        }
    ]
    allowed = by_action(existing_vpc, reconciler)
    allowed.pop("s3:ListBucket")
    assert sorted(map(str, allowed.pop("s3:GetObject"))) == sorted(
        [
            str(export_objects(existing_vpc, "index.csv")),
            str(export_objects(existing_vpc, "revisions/*")),
        ]
    )
    assert allowed.pop("secretsmanager:GetSecretValue") == [SECRET_ARN]
    assert allowed.pop("sqs:SendMessage") == [queue_arn(existing_vpc)]
    # Sending also brings what CDK's grant adds for SendMessage callers: nothing beyond the queue.
    for action in [a for a in allowed if a.startswith("sqs:")]:
        assert allowed.pop(action) == [queue_arn(existing_vpc)]
    for action in ENI:
        assert allowed.pop(action) == ["*"]
    assert set(allowed) == {"logs:CreateLogStream", "logs:PutLogEvents", *XRAY}


def test_functions_in_a_vpc_may_manage_their_network_interfaces(existing_vpc: Synth) -> None:
    for fn in (existing_vpc.stack.loader, existing_vpc.stack.pruner, existing_vpc.stack.reconciler):
        allowed = by_action(existing_vpc, fn)
        assert set(allowed) >= ENI


def test_functions_outside_a_vpc_get_no_network_interface_rights(default: Synth) -> None:
    for fn in (default.stack.loader, default.stack.pruner, default.stack.reconciler):
        assert not ENI & set(by_action(default, fn))


def test_new_database_secret_is_the_one_functions_read(new_database: Synth) -> None:
    instance = new_database.stack.database.instance
    assert instance is not None
    app_id = new_database.logical_id(new_database.stack.database.app_secret)
    for fn in (new_database.stack.loader, new_database.stack.pruner, new_database.stack.reconciler):
        allowed = by_action(new_database, fn)
        assert allowed["secretsmanager:GetSecretValue"] == [{"Ref": app_id}]
    setup = new_database.stack.setup
    assert setup is not None
    master = new_database.stack.resolve(new_database.stack.database.master_secret_arn)
    assert sorted(
        by_action(new_database, setup)["secretsmanager:GetSecretValue"], key=str
    ) == sorted([{"Ref": app_id}, master], key=str)


def test_role_trusts_only_lambda(default: Synth) -> None:
    for fn in (default.stack.loader, default.stack.pruner, default.stack.reconciler):
        role = default.template["Resources"][default.logical_id(fn.role)]["Properties"]
        assert role["AssumeRolePolicyDocument"]["Statement"] == [
            {
                "Action": "sts:AssumeRole",
                "Effect": "Allow",
                "Principal": {"Service": "lambda.amazonaws.com"},
            }
        ]
