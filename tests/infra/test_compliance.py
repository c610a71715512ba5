"""cdk-nag in every synth with zero open findings, cfn-lint clean, encryption and TLS everywhere."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import aws_sqs as sqs
from cfnlint.api import ManualArgs, lint_file  # type: ignore[import-untyped]
from infra.app import build_app
from infra.functions import FUNCTIONS_DIR, CaBundleMissing, check_ca_bundle

from km2pg.contract import RDS_CA_BUNDLE

from .conftest import NO_BUNDLING, USER_VALUES, Synth, cdk_json_context

LINT_REGIONS = ["us-east-1", "eu-west-1"]


def test_cdk_nag_leaves_no_open_finding(every_configuration: Synth) -> None:
    report = json.loads((every_configuration.outdir / "validation-report.json").read_text())
    violations = [
        (violation["ruleName"], construct["constructPath"])
        for plugin in report["pluginReports"]
        for violation in plugin.get("violations", [])
        for construct in violation["violatingConstructs"]
    ]
    if every_configuration.stack.settings.db_ssl_mode != "verify-full":
        # CDK lists warnings in the report too (they do not fail the synth): this one is meant.
        violations.remove(("Annotation::km2pg:dbSslModeUnverified", "Km2pg/Database"))
    assert violations == []


def test_every_acknowledged_finding_has_a_reason(every_configuration: Synth) -> None:
    acknowledged = {
        (path, rule): reason
        for path, entries in every_configuration.metadata().items()
        for entry in entries
        if entry["type"] == "aws:cdk:acknowledged-rules"
        for rule, reason in entry["data"].items()
    }
    ours = {key: reason for key, reason in acknowledged.items() if key[1].startswith("AwsSol")}
    assert ours, "the stack acknowledges at least the X-Ray wildcard"
    for (path, rule), reason in ours.items():
        assert rule.startswith("AwsSolutions::AwsSolutions-"), (path, rule)
        assert len(reason) >= 40, (path, rule, reason)
    # CDK's own constructs acknowledge a few of its built-in template checks, with reasons.
    assert all(acknowledged.values())


def test_no_warnings_or_errors_from_cdk_but_for_an_unverified_database(
    every_configuration: Synth,
) -> None:
    messages = [
        (path, entry["type"], entry["data"])
        for path, entries in every_configuration.metadata().items()
        for entry in entries
        if entry["type"] in ("aws:cdk:warning", "aws:cdk:error")
    ]
    if every_configuration.stack.settings.db_ssl_mode == "verify-full":
        assert messages == []
        return
    ((path, kind, text),) = messages
    assert (path, kind) == ("/Km2pg/Database", "aws:cdk:warning")
    assert text.startswith(
        "dbSslMode require: the functions do not check the database server's identity"
    )
    assert text.endswith("[ack: km2pg:dbSslModeUnverified]")


def test_synth_fails_without_the_rds_ca_bundle(tmp_path: Path) -> None:
    with pytest.raises(CaBundleMissing, match="is missing or holds no certificate"):
        check_ca_bundle(tmp_path)
    bundle = tmp_path / RDS_CA_BUNDLE
    bundle.parent.mkdir(parents=True)
    bundle.write_text("")
    with pytest.raises(CaBundleMissing, match="make rds-ca"):
        check_ca_bundle(tmp_path)
    assert check_ca_bundle() == FUNCTIONS_DIR / RDS_CA_BUNDLE


def test_cdk_nag_runs_in_every_synth_and_fails_it_on_an_open_finding(tmp_path: Path) -> None:
    app, stack = build_app(
        {**cdk_json_context(), **USER_VALUES, **NO_BUNDLING}, outdir=str(tmp_path)
    )
    sqs.Queue(stack, "PlainQueue", encryption=sqs.QueueEncryption.SQS_MANAGED)  # no TLS rule
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    rules = {v["ruleName"] for p in report["pluginReports"] for v in p["violations"]}
    assert rules == {"AwsSolutions-SQS4", "AwsSolutions-SQS3"}


def test_cfn_lint_finds_no_errors(every_configuration: Synth) -> None:
    matches = lint_file(every_configuration.template_path, config=ManualArgs(regions=LINT_REGIONS))
    errors = [f"{m.rule.id} {m.message}" for m in matches if m.rule.id.startswith("E")]
    assert errors == []


def queue_policies(synth: Synth) -> list[dict[str, Any]]:
    return [p["Properties"] for p in synth.resources("AWS::SQS::QueuePolicy").values()]


def test_queues_are_encrypted_and_refuse_plain_http(every_configuration: Synth) -> None:
    synth = every_configuration
    queues = synth.resources("AWS::SQS::Queue")
    # The load queue, its dead-letter queue, and with eventBridge the rule's dead-letter queue.
    assert len(queues) == (3 if synth.stack.settings.event_bridge else 2)
    for logical_id, queue in queues.items():
        assert queue["Properties"]["SqsManagedSseEnabled"] is True
        policy = next(p for p in queue_policies(synth) if p["Queues"] == [{"Ref": logical_id}])
        assert {
            "Action": "sqs:*",
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            "Effect": "Deny",
            "Principal": {"AWS": "*"},
            "Resource": {"Fn::GetAtt": [logical_id, "Arn"]},
        } in policy["PolicyDocument"]["Statement"]


def test_new_buckets_block_public_access_encrypt_log_and_refuse_plain_http(
    default: Synth,
) -> None:
    buckets = default.resources("AWS::S3::Bucket")
    assert len(buckets) == 2  # the export bucket and its access-log bucket
    export_id = default.logical_id(default.stack.exports.bucket)
    for logical_id, bucket in buckets.items():
        props = bucket["Properties"]
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }
        assert props["BucketEncryption"] == {
            "ServerSideEncryptionConfiguration": [
                {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
            ]
        }
        assert bucket["DeletionPolicy"] == "Retain"
        policy = next(
            p["Properties"]
            for p in default.resources("AWS::S3::BucketPolicy").values()
            if p["Properties"]["Bucket"] == {"Ref": logical_id}
        )
        deny = policy["PolicyDocument"]["Statement"][0]
        assert deny["Effect"] == "Deny"
        assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    logging = buckets[export_id]["Properties"]["LoggingConfiguration"]
    (log_bucket,) = set(buckets) - {export_id}
    assert logging == {
        "DestinationBucketName": {"Ref": log_bucket},
        "LogFilePrefix": "export-bucket/",
    }


def test_function_code_is_the_functions_folder_without_byte_code(default: Synth) -> None:
    assets = json.loads((default.outdir / f"{default.stack.stack_name}.assets.json").read_text())
    staged = [
        default.outdir / asset["source"]["path"]
        for asset in assets["files"].values()
        if (default.outdir / asset["source"]["path"] / "km2pg").is_dir()
    ]
    assert len(staged) == 1
    files = [p.relative_to(staged[0]).as_posix() for p in staged[0].rglob("*") if p.is_file()]
    assert "km2pg/handlers/loader.py" in files
    assert "km2pg/schema/0001_initial.sql" in files
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc") or "egg-info" in f]
