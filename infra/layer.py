"""The dependency layer shared by the three functions (built by layers/bundling.py)."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_lambda as lambda_
from constructs import Construct
from layers.bundling import layer_code

RUNTIME = lambda_.Runtime.PYTHON_3_12
ARCHITECTURE = lambda_.Architecture.ARM_64


class DependencyLayer(Construct):
    """pg8000, orjson, Powertools and the X-Ray SDK for Python 3.12 on arm64 (not boto3)."""

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.layer = lambda_.LayerVersion(
            self,
            "Layer",
            code=layer_code(),
            compatible_runtimes=[RUNTIME],
            compatible_architectures=[ARCHITECTURE],
            description="km2pg dependencies: pg8000, orjson, aws-lambda-powertools, aws-xray-sdk",
            removal_policy=RemovalPolicy.DESTROY,
        )
