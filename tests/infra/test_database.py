"""createDatabase: an encrypted, private RDS for PostgreSQL instance the functions may reach."""

from __future__ import annotations

import json
from typing import Any

from .conftest import VPC, Synth
from .test_pipeline import km2pg_functions


def instance(synth: Synth) -> dict[str, Any]:
    props: dict[str, Any] = synth.only("AWS::RDS::DBInstance")["Properties"]
    return props


def test_existing_database_creates_no_instance_or_secret(default: Synth) -> None:
    default.assertions.resource_count_is("AWS::RDS::DBInstance", 0)
    default.assertions.resource_count_is("AWS::SecretsManager::Secret", 0)


def test_new_instance_is_postgresql_encrypted_private_and_backed_up(new_database: Synth) -> None:
    props = instance(new_database)
    assert props["Engine"] == "postgres"
    assert props["EngineVersion"] == "17"
    assert props["StorageEncrypted"] is True
    assert props["PubliclyAccessible"] is False
    assert props["BackupRetentionPeriod"] == 7
    assert props["DBInstanceClass"] == "db.t4g.micro"
    assert props["DBName"] == "km2pg"
    assert props["MultiAZ"] is False
    assert props["DeletionProtection"] is False  # turned off by this configuration's context
    resource = new_database.only("AWS::RDS::DBInstance")
    assert resource["DeletionPolicy"] == "Snapshot"


def test_instance_settings_follow_context(new_database_in_vpc: Synth) -> None:
    props = instance(new_database_in_vpc)
    assert props["EngineVersion"] == "16"
    assert props["MultiAZ"] is True
    assert props["DeletionProtection"] is True
    group = new_database_in_vpc.only("AWS::RDS::DBSubnetGroup")["Properties"]
    assert group["SubnetIds"] == VPC["privateSubnetIds"]


def test_the_functions_get_the_app_secret_and_only_the_setup_reads_the_master_secret(
    new_database: Synth,
) -> None:
    stack = new_database.stack
    secrets = new_database.resources("AWS::SecretsManager::Secret")
    assert len(secrets) == 2  # the master user's and km2pg_app's
    app_id = new_database.logical_id(stack.database.app_secret)
    master = stack.database.master_secret_arn
    for handler, props in km2pg_functions(new_database).items():
        variables = props["Environment"]["Variables"]
        assert variables["KM2PG_DB_SECRET_ARN"] == {"Ref": app_id}, handler
        if handler == "km2pg.handlers.setup.handler":
            assert variables["KM2PG_MASTER_SECRET_ARN"] == new_database.stack.resolve(master)
        else:
            assert "KM2PG_MASTER_SECRET_ARN" not in variables, handler
    secret_id = new_database.template["Resources"][app_id]["Properties"]["SecretId"]["Ref"]
    generated = new_database.template["Resources"][secret_id]["Properties"]["GenerateSecretString"]
    # A template joined with the master secret's ARN (masterarn, which the rotation needs).
    assert '\\"username\\":\\"km2pg_app\\"' in json.dumps(generated["SecretStringTemplate"])
    assert '\\"masterarn\\":\\"' in json.dumps(generated["SecretStringTemplate"])


def test_the_app_secret_rotates_alternating_users_in_the_functions_network(
    new_database: Synth,
) -> None:
    stack = new_database.stack
    schedule = new_database.only("AWS::SecretsManager::RotationSchedule")
    assert schedule["Properties"]["RotationRules"] == {"ScheduleExpression": "rate(30 days)"}
    assert schedule["Properties"]["SecretId"] == {
        "Ref": new_database.logical_id(stack.database.app_secret)
    }
    app = new_database.only("AWS::Serverless::Application")["Properties"]
    mapping = new_database.template["Mappings"]
    (sar,) = {m["aws"]["applicationId"] for m in mapping.values() if "aws" in m}
    assert sar.endswith("SecretsManagerRDSPostgreSQLRotationMultiUser")
    assert stack.network is not None
    group = {"Fn::GetAtt": [new_database.logical_id(stack.network.security_group), "GroupId"]}
    assert app["Parameters"]["vpcSecurityGroupIds"] == group
    # The setup runs after the instance, before the functions and before the first rotation.
    resources = new_database.template["Resources"]
    (trigger_id,) = new_database.resources("Custom::Trigger")
    assert new_database.logical_id(stack.database.instance) in resources[trigger_id]["DependsOn"]
    (application_id,) = new_database.resources("AWS::Serverless::Application")
    assert trigger_id in resources[application_id]["DependsOn"]
    for fn in (stack.loader, stack.pruner, stack.reconciler, stack.forgetter):
        assert (
            trigger_id
            in new_database.template["Resources"][new_database.logical_id(fn.function)]["DependsOn"]
        )


def test_instance_admits_only_the_functions_group(new_database: Synth) -> None:
    network = new_database.stack.network
    assert network is not None
    functions = {"Fn::GetAtt": [new_database.logical_id(network.security_group), "GroupId"]}
    db_groups = instance(new_database)["VPCSecurityGroups"]
    ingress = [
        r["Properties"]
        for r in new_database.resources("AWS::EC2::SecurityGroupIngress").values()
        if r["Properties"]["GroupId"] in db_groups
    ]
    assert len(ingress) == 1
    assert ingress[0]["SourceSecurityGroupId"] == functions
    (instance_id,) = new_database.resources("AWS::RDS::DBInstance")
    port = {"Fn::GetAtt": [instance_id, "Endpoint.Port"]}
    assert ingress[0]["FromPort"] == ingress[0]["ToPort"] == port
    assert instance(new_database)["Port"] == "5432"
    egress = [
        r["Properties"]
        for r in new_database.resources("AWS::EC2::SecurityGroupEgress").values()
        if r["Properties"]["GroupId"] == functions
    ]
    assert [(e["DestinationSecurityGroupId"], e["FromPort"]) for e in egress] == [
        (db_groups[0], port)
    ]


def test_a_secret_outside_the_stacks_region_is_refused_before_deploying_in_a_vpc_without_nat(
    existing_vpc: Synth, vpc_nat: Synth, default: Synth
) -> None:
    def ours(synth: Synth) -> list[Any]:
        rules = synth.template.get("Rules", {})
        return [rule for name, rule in rules.items() if "SecretInStackRegion" in name]

    (rule,) = ours(existing_vpc)
    (assertion,) = rule["Assertions"]
    assert assertion["Assert"] == {"Fn::Equals": [{"Ref": "AWS::Region"}, "eu-west-1"]}
    assert assertion["AssertDescription"].startswith("dbSecretArn is in eu-west-1")
    # With NAT, or without a VPC, the functions read the secret from its own region.
    assert ours(vpc_nat) == []
    assert ours(default) == []
