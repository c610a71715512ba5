"""checkov, an independent scanner, on every synthesized configuration: nothing open, and every
skip in .checkov.yaml still needed (a fixed finding's skip must go)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from .checkov_scan import CHECKOV, CONFIG
from .conftest import CONFIGURATIONS, ROOT, configuration


def checkov(*options: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    templates = [
        arg for name in CONFIGURATIONS for arg in ("-f", str(configuration(name).template_path))
    ]
    return subprocess.run(
        [str(CHECKOV), *options, *templates],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=cwd,
    )


def test_checkov_finds_nothing_the_config_does_not_skip_and_every_skip_is_needed(
    tmp_path: Path,
) -> None:
    configured = checkov("--config-file", str(CONFIG))
    assert configured.returncode == 0, configured.stdout[-3000:]
    # Elsewhere than the root: checkov reads ./.checkov.yaml on its own.
    bare = checkov("--framework", "cloudformation", "--skip-download", "-o", "json", cwd=tmp_path)
    reports: Any = json.loads(bare.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = {
        check["check_id"] for report in reports for check in report["results"]["failed_checks"]
    }
    skipped = set(re.findall(r"^  - (CKV_\w+)$", CONFIG.read_text(), flags=re.MULTILINE))
    assert len(skipped) == 13
    assert failed == skipped
