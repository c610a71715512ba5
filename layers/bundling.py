"""Build the dependency layer without Docker: pip downloads Linux arm64 wheels for Python 3.12.

CDK asks :class:`PipLayerBundling` first (local bundling); it installs ``requirements.txt`` into
``<output>/python`` with binary wheels only, for the Lambda platform rather than this machine's,
so any Linux, macOS or Windows host with Python and pip builds the same layer. The Docker image in
the bundling options is a fallback CDK would use only if local bundling declined, which it never
does: a failure raises instead, with pip's own message.

pip needs the package index (PyPI, or the one pip is configured for). For a synth with no network
at all, download the wheels once into a folder (``pip download`` with the same platform options
and ``-d DIR``) and set ``KM2PG_LAYER_WHEELS=DIR``: pip then reads only that folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, ILocalBundling
from aws_cdk import aws_lambda as lambda_

LAYER_DIR: Final = Path(__file__).resolve().parent
REQUIREMENTS: Final = LAYER_DIR / "requirements.txt"
PYTHON_VERSION: Final = "3.12"
PLATFORMS: Final = ("manylinux2014_aarch64", "manylinux_2_28_aarch64")
"""glibc-based aarch64 wheels; the Lambda Python 3.12 runtime (Amazon Linux 2023) has glibc 2.34."""
DOCKER_IMAGE: Final = "public.ecr.aws/sam/build-python3.12:latest-arm64"
WHEELS_ENV: Final = "KM2PG_LAYER_WHEELS"


def pip_command(
    output_dir: str | Path, python: str = sys.executable, wheels: str | None = None
) -> list[str]:
    """The pip invocation that fills ``<output_dir>/python`` for Python 3.12 on arm64 Linux.

    With ``wheels`` (default: ``$KM2PG_LAYER_WHEELS``), pip reads only that folder, no index.
    """
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    wheels = os.environ.get(WHEELS_ENV) if wheels is None else wheels
    source = ["--no-index", "--find-links", wheels] if wheels else []
    return [
        python,
        "-m",
        "pip",
        "install",
        "--requirement",
        str(REQUIREMENTS),
        "--target",
        str(Path(output_dir) / "python"),
        *platforms,
        "--implementation",
        "cp",
        "--python-version",
        PYTHON_VERSION,
        "--only-binary=:all:",
        "--no-deps",  # requirements.txt pins every package, transitive ones included
        "--no-compile",  # byte code made by this machine's Python would not match 3.12
        "--disable-pip-version-check",
        "--no-input",
        "--quiet",
        *source,
    ]


@jsii.implements(ILocalBundling)
class PipLayerBundling:
    """CDK local bundling: pip on this machine, never Docker."""

    def try_bundle(self, output_dir: str, options: Any = None, **_: Any) -> bool:
        build_layer(Path(output_dir))
        return True


def build_layer(output_dir: Path) -> Path:
    """Install the layer's packages under ``output_dir/python``; returns that folder."""
    target = output_dir / "python"
    if target.exists():
        shutil.rmtree(target)
    result = subprocess.run(pip_command(output_dir), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()[-20:]
        raise RuntimeError("building the dependency layer with pip failed:\n" + "\n".join(detail))
    return target


def layer_code() -> lambda_.AssetCode:
    """The layer's code asset: this folder's requirements, bundled by pip (see module doc)."""
    return lambda_.Code.from_asset(
        str(LAYER_DIR),
        asset_hash_type=AssetHashType.SOURCE,
        exclude=["__pycache__", "*.pyc"],
        bundling=BundlingOptions(
            image=DockerImage.from_registry(DOCKER_IMAGE),
            command=[
                "bash",
                "-c",
                "pip install --requirement requirements.txt --no-deps --only-binary=:all: "
                "--no-compile --target /asset-output/python",
            ],
            local=PipLayerBundling(),
        ),
    )
