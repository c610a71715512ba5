"""``make lint``'s independent scan: synthesize every test configuration, run checkov on each.

Usage: ``python -m tests.infra.checkov_scan``. Exit status 0 when checkov finds nothing that
``.checkov.yaml`` does not skip (with its reason). Synthesized without the layer's pip bundling
(the layer's contents are not what checkov reads), into a folder removed afterwards.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.infra.conftest import CONFIGURATIONS, ROOT, synthesize

CHECKOV = Path(sys.executable).parent / "checkov"
CONFIG = ROOT / ".checkov.yaml"


def main() -> int:
    folder = Path(tempfile.mkdtemp(prefix="km2pg-checkov-"))
    try:
        templates = []
        for name, overrides in CONFIGURATIONS.items():
            synth = synthesize(name, overrides, outdir=folder / name)
            templates += ["-f", str(synth.template_path)]
        command = [str(CHECKOV), "--config-file", str(CONFIG), *templates]
        return subprocess.run(command, check=False).returncode
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
