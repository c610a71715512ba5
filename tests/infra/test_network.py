"""VPC placement per configuration: none, an existing VPC (endpoints or NAT), a new one."""

from __future__ import annotations

from typing import Any

from .conftest import DB_SECURITY_GROUP, VPC, Synth
from .test_pipeline import km2pg_functions


def endpoint_services(synth: Synth) -> dict[str, dict[str, Any]]:
    """VPC endpoints by service suffix (s3, secretsmanager, ...)."""
    found = {}
    for endpoint in synth.resources("AWS::EC2::VPCEndpoint").values():
        props = endpoint["Properties"]
        service = props["ServiceName"]["Fn::Join"][1][-1].lstrip(".")
        found[service] = props
    return found


def function_group(synth: Synth) -> dict[str, Any]:
    network = synth.stack.network
    assert network is not None
    resource: dict[str, Any] = synth.template["Resources"][synth.logical_id(network.security_group)]
    return resource


def group_id(synth: Synth, construct: Any) -> dict[str, list[str]]:
    return {"Fn::GetAtt": [synth.logical_id(construct), "GroupId"]}


def test_without_vpc_functions_run_outside_any_vpc(default: Synth) -> None:
    for props in km2pg_functions(default).values():
        assert "VpcConfig" not in props
    default.assertions.resource_count_is("AWS::EC2::SecurityGroup", 0)
    default.assertions.resource_count_is("AWS::EC2::VPCEndpoint", 0)
    default.assertions.resource_count_is("AWS::EC2::VPC", 0)


def test_existing_vpc_places_functions_in_its_private_subnets(existing_vpc: Synth) -> None:
    assert existing_vpc.stack.network is not None
    expected = {
        "SubnetIds": VPC["privateSubnetIds"],
        "SecurityGroupIds": [group_id(existing_vpc, existing_vpc.stack.network.security_group)],
    }
    for props in km2pg_functions(existing_vpc).values():
        assert props["VpcConfig"] == expected
    existing_vpc.assertions.resource_count_is("AWS::EC2::VPC", 0)  # imported, not created


def test_function_group_allows_out_only_https_and_the_database_port(existing_vpc: Synth) -> None:
    group = function_group(existing_vpc)["Properties"]
    assert group["VpcId"] == VPC["vpcId"]
    egress = sorted(group["SecurityGroupEgress"], key=lambda rule: rule["FromPort"])
    assert [(r["FromPort"], r["ToPort"], r["IpProtocol"]) for r in egress] == [
        (443, 443, "tcp"),
        (5432, 5432, "tcp"),
    ]
    assert egress[0]["CidrIp"] == "0.0.0.0/0"
    assert egress[1]["DestinationSecurityGroupId"] == DB_SECURITY_GROUP
    assert "SecurityGroupIngress" not in group


def test_without_nat_the_stack_adds_s3_gateway_and_interface_endpoints(existing_vpc: Synth) -> None:
    endpoints = endpoint_services(existing_vpc)
    assert set(endpoints) == {"s3", "secretsmanager", "sqs", "xray"}
    assert endpoints["s3"]["VpcEndpointType"] == "Gateway"
    assert endpoints["s3"]["RouteTableIds"] == VPC["privateRouteTableIds"]
    network = existing_vpc.stack.network
    assert network is not None
    for service in ("secretsmanager", "sqs", "xray"):
        props = endpoints[service]
        assert props["VpcEndpointType"] == "Interface"
        assert props["PrivateDnsEnabled"] is True
        assert props["SubnetIds"] == VPC["privateSubnetIds"]
    # Interface endpoints admit HTTPS from the functions' group only.
    (endpoint_group,) = {
        props["SecurityGroupIds"][0]["Fn::GetAtt"][0]
        for props in (endpoints[s] for s in ("secretsmanager", "sqs", "xray"))
    }
    ingress = [
        r["Properties"]
        for r in existing_vpc.resources("AWS::EC2::SecurityGroupIngress").values()
        if r["Properties"]["GroupId"] == {"Fn::GetAtt": [endpoint_group, "GroupId"]}
    ]
    assert ingress == [
        {
            "Description": "HTTPS from the km2pg functions",
            "FromPort": 443,
            "GroupId": {"Fn::GetAtt": [endpoint_group, "GroupId"]},
            "IpProtocol": "tcp",
            "SourceSecurityGroupId": group_id(existing_vpc, network.security_group),
            "ToPort": 443,
        }
    ]


def test_without_ingress_flag_the_database_rule_is_left_to_the_user(existing_vpc: Synth) -> None:
    for rule in existing_vpc.resources("AWS::EC2::SecurityGroupIngress").values():
        assert rule["Properties"]["GroupId"] != DB_SECURITY_GROUP
    command = existing_vpc.template["Outputs"]["DatabaseIngressCommand"]["Value"]["Fn::Join"][1]
    assert command[0].startswith(
        f"aws ec2 authorize-security-group-ingress --group-id {DB_SECURITY_GROUP} "
        "--protocol tcp --port 5432 --source-group "
    )


def test_with_nat_no_endpoints_are_made(vpc_nat: Synth) -> None:
    vpc_nat.assertions.resource_count_is("AWS::EC2::VPCEndpoint", 0)
    for props in km2pg_functions(vpc_nat).values():
        assert props["VpcConfig"]["SubnetIds"] == VPC["privateSubnetIds"]


def test_ingress_flag_adds_the_rule_on_the_database_group(vpc_nat: Synth) -> None:
    network = vpc_nat.stack.network
    assert network is not None
    rules = [
        r["Properties"]
        for r in vpc_nat.resources("AWS::EC2::SecurityGroupIngress").values()
        if r["Properties"]["GroupId"] == DB_SECURITY_GROUP
    ]
    assert rules == [
        {
            "Description": "km2pg functions to PostgreSQL",
            "FromPort": 5432,
            "GroupId": DB_SECURITY_GROUP,
            "IpProtocol": "tcp",
            "SourceSecurityGroupId": group_id(vpc_nat, network.security_group),
            "ToPort": 5432,
        }
    ]
    assert "DatabaseIngressCommand" not in vpc_nat.template["Outputs"]


def test_new_database_gets_a_new_isolated_vpc_without_nat(new_database: Synth) -> None:
    new_database.assertions.resource_count_is("AWS::EC2::VPC", 1)
    new_database.assertions.resource_count_is("AWS::EC2::NatGateway", 0)
    new_database.assertions.resource_count_is("AWS::EC2::InternetGateway", 0)
    subnets = new_database.resources("AWS::EC2::Subnet")
    assert len(subnets) == 2
    for subnet in subnets.values():
        assert subnet["Properties"]["MapPublicIpOnLaunch"] is False
    assert set(endpoint_services(new_database)) == {"s3", "secretsmanager", "sqs", "xray"}
    new_database.assertions.resource_count_is("AWS::EC2::FlowLog", 1)
    for props in km2pg_functions(new_database).values():
        assert sorted(s["Ref"] for s in props["VpcConfig"]["SubnetIds"]) == sorted(subnets)


def test_only_the_endpoints_asked_for_are_made(new_database_in_vpc: Synth) -> None:
    assert set(endpoint_services(new_database_in_vpc)) == {"secretsmanager", "xray"}
