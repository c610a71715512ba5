"""Where the functions run: an existing VPC (imported offline), a new minimal one, or none."""

from __future__ import annotations

from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.settings import Settings


class FunctionNetwork(Construct):
    """The functions' VPC placement, their security group, and the VPC endpoints they need.

    - An existing VPC (context ``vpcId``, ``availabilityZones``, ``privateSubnetIds``,
      ``privateRouteTableIds``) is imported from its attributes: no lookup, no credentials.
    - Without ``vpcId`` but with ``createDatabase``, a new VPC with two isolated subnets (no NAT,
      no internet) holds the database and the functions.
    - The functions' security group allows out only the database port (to the database's group)
      and HTTPS (AWS APIs through the endpoints, or through the NAT when ``natGateway``).
    - Endpoints (unless ``natGateway``): S3 as a gateway, Secrets Manager, SQS and X-Ray as
      interface endpoints reachable only from the functions' group; ``vpcEndpoints`` leaves out
      those the VPC already has.
    """

    def __init__(self, scope: Construct, construct_id: str, *, settings: Settings) -> None:
        super().__init__(scope, construct_id)
        if settings.network is not None:
            net = settings.network
            self.vpc: ec2.IVpc = ec2.Vpc.from_vpc_attributes(
                self,
                "Vpc",
                vpc_id=net.vpc_id,
                availability_zones=list(net.availability_zones),
                private_subnet_ids=list(net.private_subnet_ids),
                private_subnet_route_table_ids=list(net.private_route_table_ids) or None,
            )
            self.subnets = ec2.SubnetSelection(subnets=self.vpc.private_subnets)
        else:
            flow_logs = logs.LogGroup(self, "FlowLogs", retention=logs.RetentionDays.THREE_MONTHS)
            self.vpc = ec2.Vpc(
                self,
                "Vpc",
                max_azs=2,
                nat_gateways=0,
                subnet_configuration=[
                    ec2.SubnetConfiguration(
                        name="Private", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=24
                    )
                ],
                flow_logs={
                    "FlowLogs": ec2.FlowLogOptions(
                        destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs),
                        traffic_type=ec2.FlowLogTrafficType.REJECT,
                    )
                },
            )
            self.subnets = ec2.SubnetSelection(subnets=self.vpc.isolated_subnets)

        self.security_group = ec2.SecurityGroup(
            self,
            "FunctionSecurityGroup",
            vpc=self.vpc,
            description="km2pg functions: out to the database port and HTTPS only",
            allow_all_outbound=False,
        )
        self.security_group.add_egress_rule(
            ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "HTTPS to AWS APIs (S3, Secrets Manager, SQS)"
        )
        self._add_endpoints(settings)

    def _add_endpoints(self, settings: Settings) -> None:
        endpoints = settings.endpoints
        if "s3" in endpoints:
            self.vpc.add_gateway_endpoint(
                "S3Endpoint", service=ec2.GatewayVpcEndpointAwsService.S3, subnets=[self.subnets]
            )
        services = ec2.InterfaceVpcEndpointAwsService
        interfaces = {
            "secretsmanager": ("SecretsManagerEndpoint", services.SECRETS_MANAGER),
            "sqs": ("SqsEndpoint", services.SQS),
            "xray": ("XRayEndpoint", services.XRAY),
        }
        wanted = [interfaces[name] for name in endpoints if name in interfaces]
        if not wanted:
            return
        endpoint_group = ec2.SecurityGroup(
            self,
            "EndpointSecurityGroup",
            vpc=self.vpc,
            description="km2pg interface endpoints: HTTPS from the km2pg functions only",
            allow_all_outbound=False,
        )
        endpoint_group.add_ingress_rule(
            self.security_group, ec2.Port.tcp(443), "HTTPS from the km2pg functions"
        )
        for construct_id, service in wanted:
            ec2.InterfaceVpcEndpoint(
                self,
                construct_id,
                vpc=self.vpc,
                service=service,
                subnets=ec2.SubnetSelection(subnets=self.subnets.subnets, one_per_az=True),
                security_groups=[endpoint_group],
                open=False,
                private_dns_enabled=True,
            )
