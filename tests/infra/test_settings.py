"""Context becomes settings: cdk.json values and CLI strings alike, checked with clear errors."""

from __future__ import annotations

import re
from typing import Any

import pytest
from infra.settings import ENDPOINTS, Settings, SettingsError

from km2pg.contract import SSLMODES

from .conftest import SECRET_ARN, VPC, cdk_json_context

EXISTING_DB = {"dbSecretArn": SECRET_ARN}


def settings(**context: Any) -> Settings:
    return Settings.from_context(context)


def test_cdk_json_examples_are_valid_settings() -> None:
    s = Settings.from_context(cdk_json_context())
    assert s.export_bucket_name is None
    assert s.network is None
    assert s.new_database is None
    assert s.db_secret_arn == cdk_json_context()["dbSecretArn"]


def test_defaults_match_the_documented_ones() -> None:
    s = settings(**EXISTING_DB)
    assert (s.loader_batch_size, s.loader_batch_window_seconds, s.loader_max_concurrency) == (
        10,
        5,
        5,
    )
    assert s.max_receive_count == 5
    assert s.stalled_hours == 6
    assert s.prune_schedule.expression == "rate(1 day)"
    assert s.reconcile_schedule.expression == "rate(1 hour)"
    assert s.export_prefix == "revisions/"
    assert s.db_ssl_mode == "require"
    assert s.queue_visibility_seconds == 6 * s.loader.timeout_seconds


def test_command_line_strings_are_parsed_like_json_values() -> None:
    s = settings(
        **EXISTING_DB,
        **{key: value for key, value in VPC.items() if key == "vpcId"},
        availabilityZones="eu-west-1a, eu-west-1b",
        privateSubnetIds='["subnet-0aaaaaaaaaaaaaaa1", "subnet-0bbbbbbbbbbbbbbb2"]',
        privateRouteTableIds="rtb-0aaaaaaaaaaaaaaa1,rtb-0bbbbbbbbbbbbbbb2",
        dbSecurityGroupId="sg-0123456789abcdef0",
        natGateway="true",
        loaderMemoryMb="2048",
        maxRejectShare="0.25",
    )
    assert s.network is not None
    assert s.network.availability_zones == ("eu-west-1a", "eu-west-1b")
    assert s.network.private_subnet_ids == ("subnet-0aaaaaaaaaaaaaaa1", "subnet-0bbbbbbbbbbbbbbb2")
    assert s.nat_gateway is True
    assert s.endpoints == ()
    assert s.loader.memory_mb == 2048
    assert s.max_reject_share == 0.25


def test_empty_strings_mean_not_set() -> None:
    s = settings(**EXISTING_DB, exportBucketName="", vpcId="", alarmEmail="", maxRejectShare="")
    assert s.export_bucket_name is None
    assert s.network is None
    assert s.alarm_email is None
    assert s.max_reject_share is None


def test_rate_schedules_give_the_missed_run_period() -> None:
    s = settings(**EXISTING_DB, pruneSchedule="rate(2 days)", reconcileSchedule="rate(15 minutes)")
    assert s.prune_schedule.period_seconds == 2 * 86_400
    assert s.reconcile_schedule.period_seconds == 900


def test_cron_schedules_keep_the_default_period() -> None:
    s = settings(**EXISTING_DB, pruneSchedule="cron(30 3 * * ? *)")
    assert s.prune_schedule.expression == "cron(30 3 * * ? *)"
    assert s.prune_schedule.period_seconds == 86_400


def test_endpoints_are_only_made_for_private_subnets_without_nat() -> None:
    assert settings(**EXISTING_DB).endpoints == ()
    in_vpc = {**VPC, "dbSecurityGroupId": "sg-0123456789abcdef0"}
    assert settings(**EXISTING_DB, **in_vpc).endpoints == ENDPOINTS
    assert settings(**EXISTING_DB, **in_vpc, natGateway=True).endpoints == ()
    assert settings(createDatabase=True).endpoints == ENDPOINTS
    chosen = settings(**EXISTING_DB, **in_vpc, vpcEndpoints="xray,s3")
    assert chosen.endpoints == ("s3", "xray")


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({}, "set dbSecretArn"),
        ({**EXISTING_DB, "createDatabase": True}, "either dbSecretArn"),
        ({**EXISTING_DB, "dbSecretArnn": "x"}, "unknown context keys"),
        (
            {"dbSecretArn": "arn:aws:secretsmanager:eu-west-1:1:secret:x"},
            "dbSecretArn is malformed",
        ),
        ({**EXISTING_DB, "loaderBatchSize": 11}, "loaderBatchSize must be between 1 and 10"),
        ({**EXISTING_DB, "loaderMaxConcurrency": 1}, "loaderMaxConcurrency must be between 2"),
        ({**EXISTING_DB, "loaderTimeoutSeconds": "ten"}, "loaderTimeoutSeconds must be a whole"),
        ({**EXISTING_DB, "logRetentionDays": 100}, "logRetentionDays must be one of"),
        ({**EXISTING_DB, "eventBridge": "maybe"}, "eventBridge must be true or false"),
        ({**EXISTING_DB, "pruneSchedule": "every day"}, "pruneSchedule must be rate"),
        ({**EXISTING_DB, "pruneSchedule": "rate(1 days)"}, "rate(1 day) or rate(N days)"),
        ({**EXISTING_DB, "dbSslMode": "verify-full"}, "needs dbSslRootCert"),
        ({**EXISTING_DB, "dbSslMode": "disable"}, "over the internet"),
        ({**EXISTING_DB, "natGateway": True}, "set vpcId too"),
        ({**EXISTING_DB, "privateSubnetIds": ["subnet-0aaaaaaaaaaaaaaa1"]}, "set vpcId too"),
        ({**EXISTING_DB, "vpcId": VPC["vpcId"]}, "needs privateSubnetIds"),
        ({**EXISTING_DB, **VPC}, "needs dbSecurityGroupId"),
        (
            {**EXISTING_DB, **VPC, "availabilityZones": ["eu-west-1a"]},
            "availabilityZones must name the AZ of each",
        ),
        (
            {
                **EXISTING_DB,
                **VPC,
                "dbSecurityGroupId": "sg-0123456789abcdef0",
                "privateRouteTableIds": [],
            },
            "needs privateRouteTableIds",
        ),
        ({**EXISTING_DB, "vpcEndpoints": ["s3", "ec2"]}, "vpcEndpoints may hold only"),
        (
            {
                "createDatabase": True,
                **VPC,
                "availabilityZones": ["eu-west-1a", "eu-west-1a"],
            },
            "two or more AZs",
        ),
        ({"createDatabase": True, "dbEngineVersion": "15"}, "dbEngineVersion must be one of"),
        ({"createDatabase": True, "dbPort": 80}, "between 1150 and 65535"),
        ({**EXISTING_DB, "alarmEmail": "not-an-address"}, "alarmEmail is malformed"),
        ({**EXISTING_DB, "exportPrefix": "revisions"}, "exportPrefix is malformed"),
    ],
)
def test_bad_or_contradictory_context_is_refused_naming_the_key(
    context: dict[str, Any], message: str
) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)):
        Settings.from_context(context)


@pytest.mark.parametrize(
    ("value", "expected"), [(..., 1), (None, None), ("none", None), ("2", 2), (3, 3)]
)
def test_reserved_concurrency_of_scheduled_functions_can_be_turned_off(
    value: Any, expected: int | None
) -> None:
    context = {} if value is ... else {"scheduledReservedConcurrency": value}
    assert settings(**EXISTING_DB, **context).scheduled_reserved_concurrency == expected


def test_cdk_and_cli_context_keys_are_not_taken_for_typos() -> None:
    s = settings(
        **EXISTING_DB,
        **{
            "@aws-cdk/aws-iam:minimizePolicies": True,
            "aws:cdk:bundling-stacks": [],
            "cli-telemetry": False,
            "acknowledged-issue-numbers": [32775],
            "availability-zones:account=111122223333:region=eu-west-1": ["eu-west-1a"],
        },
    )
    assert s.db_secret_arn == SECRET_ARN


def test_cdk_json_examples_are_the_declared_defaults() -> None:
    """cdk.json shows the defaults (but for the secret, a placeholder): the two cannot drift."""
    context = cdk_json_context()
    examples = Settings.from_context(context)
    defaults = settings(dbSecretArn=context["dbSecretArn"])
    differing = [
        field.alias
        for name, field in Settings.model_fields.items()
        if getattr(examples, name) != getattr(defaults, name)
    ]
    assert differing == [], f"cdk.json's example is not the declared default: {differing}"


@pytest.mark.parametrize(
    ("context", "line"),
    [
        (
            {"exportPrefix": "revisions"},
            "exportPrefix is malformed: 'revisions' (want a key prefix that ends in `/`, "
            "like revisions/)",
        ),
        ({"loaderBatchSize": "11"}, "loaderBatchSize must be between 1 and 10, not 11"),
        ({"stalledHours": 0}, "stalledHours must be between 1 and 168, not 0"),
        ({"maxRejectShare": "lots"}, "maxRejectShare must be a number, not 'lots'"),
        ({"maxRejectShare": 2}, "maxRejectShare must be between 0 and 1, not 2"),
        (
            {"dbSslMode": "tls"},
            "dbSslMode must be one of disable, allow, prefer, require, verify-ca, verify-full, "
            "not 'tls'",
        ),
        (
            {"pruneSchedule": "rate(8 days)"},
            "pruneSchedule must run at least weekly (its missed-run alarm), not 'rate(8 days)'",
        ),
        (
            {**VPC, "availabilityZones": "eu-west-1a,west"},
            "availabilityZones item 2 is malformed: 'west' (want an availability zone name, "
            "like eu-west-1a)",
        ),
        ({"privateSubnetIds": "[subnet-1"}, "privateSubnetIds is not a JSON list: '[subnet-1'"),
        ({"scheduledReservedConcurrency": True}, "scheduledReservedConcurrency must be a whole"),
    ],
)
def test_a_refused_value_is_one_line_naming_the_key_the_value_and_what_is_allowed(
    context: dict[str, Any], line: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        settings(**EXISTING_DB, **context)
    assert str(refused.value).startswith(line)
    assert "\n" not in str(refused.value)


def test_every_refused_value_is_reported_at_once_one_line_each() -> None:
    with pytest.raises(SettingsError) as refused:
        settings(**EXISTING_DB, eventBridge="maybe", loaderMemoryMb=64, alarmEmail="ops")
    lines = str(refused.value).splitlines()
    assert [line.split()[0] for line in lines] == ["eventBridge", "loaderMemoryMb", "alarmEmail"]


def test_new_database_settings_are_read_only_with_create_database() -> None:
    unused = {"dbEngineVersion": "15", "dbAllocatedStorageGb": 5, "dbName": "Bad Name"}
    assert settings(**EXISTING_DB, **unused).new_database is None
    with pytest.raises(SettingsError, match="dbEngineVersion must be one of 16, 17, not '15'"):
        settings(createDatabase="true", **unused)


def test_json_null_means_not_set_unless_the_setting_takes_null() -> None:
    s = settings(**EXISTING_DB, loaderBatchSize=None, eventBridge=None, exportPrefix=None)
    assert (s.loader_batch_size, s.event_bridge, s.export_prefix) == (10, False, "revisions/")
    assert (
        settings(**EXISTING_DB, scheduledReservedConcurrency=None).scheduled_reserved_concurrency
        is None
    )


@pytest.mark.parametrize("mode", SSLMODES)
def test_every_sslmode_the_functions_accept_is_a_setting(mode: str) -> None:
    chosen = settings(createDatabase=True, dbSslMode=mode, dbSslRootCert="/var/task/ca.pem")
    assert chosen.db_ssl_mode == mode
