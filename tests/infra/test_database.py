"""createDatabase: an encrypted, private RDS for PostgreSQL instance the functions may reach."""

from __future__ import annotations

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


def test_generated_secret_is_attached_and_given_to_the_functions(new_database: Synth) -> None:
    new_database.assertions.resource_count_is("AWS::SecretsManager::Secret", 1)
    (attachment_id,) = new_database.resources("AWS::SecretsManager::SecretTargetAttachment")
    for props in km2pg_functions(new_database).values():
        assert props["Environment"]["Variables"]["KM2PG_DB_SECRET_ARN"] == {"Ref": attachment_id}


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
