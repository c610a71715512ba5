"""Synthesize the km2pg stack once per configuration (per test session) and share the result.

Every configuration starts from cdk.json's context (the same feature flags and examples the CLI
uses) plus ``aws:cdk:bundling-stacks: []``, so CDK skips the layer's pip bundling; one slow test
in test_layer.py bundles for real. cdk-nag runs in every synth, as in the app.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# Before aws_cdk is first imported anywhere: jsii warns on every start under Node 20.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

# aws-cdk-lib and cdk-nag come with the dev extra: plain imports (infra.app imports cdk_nag),
# so without them these tests fail, never skip.
from aws_cdk.assertions import Template
from infra.app import build_app
from infra.stack import Km2pgStack

ROOT = Path(__file__).resolve().parents[2]
CDK_JSON = ROOT / "cdk.json"
NO_BUNDLING: dict[str, list[str]] = {"aws:cdk:bundling-stacks": []}

SECRET_ARN = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:km2pg/prod-Ab12Cd"
SECRET_KEY_ARN = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
EXPORT_BUCKET = "acme-kissmetrics-export"
VPC = {
    "vpcId": "vpc-0123456789abcdef0",
    "availabilityZones": ["eu-west-1a", "eu-west-1b"],
    "privateSubnetIds": ["subnet-0aaaaaaaaaaaaaaa1", "subnet-0bbbbbbbbbbbbbbb2"],
    "privateRouteTableIds": ["rtb-0aaaaaaaaaaaaaaa1", "rtb-0bbbbbbbbbbbbbbb2"],
}
DB_SECURITY_GROUP = "sg-0123456789abcdef0"

CONFIGURATIONS: dict[str, dict[str, Any]] = {
    # cdk.json as shipped: a new export bucket, an existing database, no VPC.
    "default": {},
    # An existing bucket and VPC without NAT: every endpoint; context given as CLI strings.
    "existing_vpc": {
        **VPC,
        "dbSecretArn": SECRET_ARN,
        "dbSecurityGroupId": DB_SECURITY_GROUP,
        "exportBucketName": EXPORT_BUCKET,
        "loaderTimeoutSeconds": "300",
        "loaderMaxConcurrency": "3",
        "maxRejectShare": "0.05",
        "dbSslMode": "verify-full",
        "dbSslRootCert": "/var/task/certs/global-bundle.pem",
    },
    # An existing bucket announced through EventBridge; subnets with NAT; ingress added.
    "vpc_nat": {
        **VPC,
        "dbSecretArn": SECRET_ARN,
        "dbSecurityGroupId": DB_SECURITY_GROUP,
        "exportBucketName": EXPORT_BUCKET,
        "eventBridge": "true",
        "natGateway": "true",
        "addDbIngress": "true",
        "pruneSchedule": "cron(30 3 * * ? *)",
        "reconcileSchedule": "rate(30 minutes)",
        "alarmEmail": "ops@example.com",
        "stalledHours": "12",
        "dbSecretKmsKeyArn": SECRET_KEY_ARN,
    },
    # A new database in a new isolated VPC; a new bucket announced through EventBridge.
    "new_database": {
        "dbSecretArn": "",
        "createDatabase": True,
        "eventBridge": True,
        "dbDeletionProtection": False,
    },
    # A new database in an existing VPC, Multi-AZ, with only some endpoints (others exist).
    "new_database_in_vpc": {
        **VPC,
        "dbSecretArn": "",
        "createDatabase": True,
        "dbMultiAz": True,
        "dbEngineVersion": "16",
        "vpcEndpoints": ["secretsmanager", "xray"],
    },
}


def cdk_json_context() -> dict[str, Any]:
    context: dict[str, Any] = json.loads(CDK_JSON.read_text())["context"]
    return context


@dataclass(frozen=True)
class Synth:
    """One synthesized configuration."""

    name: str
    stack: Km2pgStack
    outdir: Path
    template: dict[str, Any]

    @property
    def assertions(self) -> Template:
        return Template.from_json(self.template)

    @property
    def template_path(self) -> Path:
        return self.outdir / f"{self.stack.stack_name}.template.json"

    def resources(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {
            logical_id: resource
            for logical_id, resource in self.template["Resources"].items()
            if resource["Type"] == resource_type
        }

    def only(self, resource_type: str) -> dict[str, Any]:
        found = list(self.resources(resource_type).values())
        assert len(found) == 1, f"{len(found)} resources of type {resource_type}"
        return found[0]

    def logical_id(self, construct: Any) -> str:
        """The template's logical id of a construct's CloudFormation resource."""
        cfn = getattr(construct, "node", construct).default_child or construct
        return str(self.stack.resolve(self.stack.get_logical_id(cfn)))

    def metadata(self) -> dict[str, list[dict[str, Any]]]:
        """Construct path -> metadata entries (warnings, acknowledgments, ...) of the stack."""
        manifest = json.loads((self.outdir / "manifest.json").read_text())
        artifact = manifest["artifacts"][self.stack.artifact_id]
        metadata: dict[str, list[dict[str, Any]]] = {}
        for path, entries in artifact.get("metadata", {}).items():
            metadata.setdefault(path, []).extend(entries)
        if "additionalMetadataFile" in artifact:
            extra = json.loads((self.outdir / artifact["additionalMetadataFile"]).read_text())
            for path, entries in extra.items():
                metadata.setdefault(path, []).extend(entries)
        return metadata


def synthesize(
    name: str, overrides: Mapping[str, Any], *, bundling: bool = False, outdir: Path | None = None
) -> Synth:
    context = {**cdk_json_context(), **overrides}
    if not bundling:
        context.update(NO_BUNDLING)
    target = outdir or Path(tempfile.mkdtemp(prefix=f"{name}-", dir=_scratch()))
    app, stack = build_app(context, outdir=str(target))
    app.synth()
    template = json.loads((target / f"{stack.stack_name}.template.json").read_text())
    return Synth(name=name, stack=stack, outdir=target, template=template)


_CACHE: dict[str, Synth] = {}
_SCRATCH: list[Path] = []


def _scratch() -> Path:
    """One folder for this session's cloud assemblies, removed when the session ends."""
    if not _SCRATCH:
        folder = Path(tempfile.mkdtemp(prefix="km2pg-cdk-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        _SCRATCH.append(folder)
    return _SCRATCH[0]


def configuration(name: str) -> Synth:
    """The synthesized configuration ``name`` (synthesized on first use, then shared)."""
    if name not in _CACHE:
        _CACHE[name] = synthesize(name, CONFIGURATIONS[name])
    return _CACHE[name]


@pytest.fixture(scope="session")
def synth_config() -> Callable[[str], Synth]:
    return configuration


@pytest.fixture(scope="session")
def default() -> Synth:
    return configuration("default")


@pytest.fixture(scope="session")
def existing_vpc() -> Synth:
    return configuration("existing_vpc")


@pytest.fixture(scope="session")
def vpc_nat() -> Synth:
    return configuration("vpc_nat")


@pytest.fixture(scope="session")
def new_database() -> Synth:
    return configuration("new_database")


@pytest.fixture(scope="session")
def new_database_in_vpc() -> Synth:
    return configuration("new_database_in_vpc")


@pytest.fixture(scope="session", params=list(CONFIGURATIONS))
def every_configuration(request: pytest.FixtureRequest) -> Synth:
    return configuration(str(request.param))
