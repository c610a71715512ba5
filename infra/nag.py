"""Acknowledging cdk-nag findings: every acknowledgment names its rule and gives its reason.

cdk-nag 3 runs as a CDK policy-validation plugin; a finding not acknowledged on the resource (or
an ancestor construct) fails the synth. Acknowledgments use CDK's own ``Validations`` API. A rule
about one value of a resource (``AwsSolutions-IAM5[Resource::*]``) is acknowledged for exactly
that value, never for the whole rule.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, Validations
from constructs import IConstruct

PLUGIN = "AwsSolutions"
"""cdk-nag's pack name: the prefix of its findings in CDK's validation report."""


def acknowledge(scope: IConstruct, reason: str, *rule_ids: str) -> None:
    """Acknowledge findings ``rule_ids`` on ``scope`` and everything below it, for ``reason``.

    ``rule_ids`` are cdk-nag's (``AwsSolutions-L1``, ``AwsSolutions-IAM5[Resource::*]``); they
    are recorded as ``AwsSolutions::<rule id>``, the form the validation report asks for.
    """
    Validations.of(scope).acknowledge(
        *(Acknowledgment(id=f"{PLUGIN}::{rule_id}", reason=reason) for rule_id in rule_ids)
    )
