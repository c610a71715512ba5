"""The km2pg CDK app. Run from the repository root: ``npx cdk synth`` (see cdk.json).

All settings are context values (cdk.json, or ``-c key=value``); see README.md, "Deploy to AWS".
The stack is environment-agnostic and looks nothing up, so synth needs no AWS credentials and no
network.
cdk-nag's AWS Solutions checks run on every synth; a finding not acknowledged fails it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

# jsii warns loudly on every start under Node 20; the CDK works with it (Node 22+ is advised).
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

from aws_cdk import App, Validations
from cdk_nag import AwsSolutionsChecks

from infra.settings import Settings, SettingsError
from infra.stack import Km2pgStack

DESCRIPTION = "km2pg: load Kissmetrics raw-data exports from S3 into PostgreSQL"


def build_app(
    context: Mapping[str, Any] | None = None, outdir: str | None = None
) -> tuple[App, Km2pgStack]:
    """The app with its one stack and cdk-nag registered (context as the CLI would give it)."""
    app = App(context=dict(context) if context is not None else None, outdir=outdir)
    settings = Settings.from_context(app.node.get_all_context())
    stack = Km2pgStack(app, settings.stack_name, settings=settings, description=DESCRIPTION)
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app, stack


def main() -> None:
    try:
        app, _ = build_app()
    except SettingsError as error:  # a setting to fix: its message, not a traceback
        sys.exit(f"km2pg: {error}")
    app.synth()


if __name__ == "__main__":
    main()
