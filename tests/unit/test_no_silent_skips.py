"""With KM2PG_REQUIRE_NO_SKIPS=1 (set by .ci/run where ../shared exists) a skip fails the run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_pytest(folder: Path, require_no_skips: bool) -> subprocess.CompletedProcess[str]:
    """pytest on a folder whose conftest takes this suite's hooks, and one test that skips."""
    (folder / "conftest.py").write_text(
        "from tests.conftest import pytest_sessionfinish, pytest_terminal_summary  # noqa: F401\n"
    )
    (folder / "test_one_skip.py").write_text(
        "import pytest\n\n"
        "def test_runs():\n    pass\n\n"
        "def test_skips():\n    pytest.skip('needs something absent')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("KM2PG_REQUIRE_NO_SKIPS", None)
    if require_no_skips:
        env["KM2PG_REQUIRE_NO_SKIPS"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", str(folder), "-ra", "-p", "no:cacheprovider"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(("require_no_skips", "code"), [(False, 0), (True, 1)])
def test_a_skip_is_reported_with_its_reason_and_fails_the_run_only_when_none_is_allowed(
    tmp_path: Path, require_no_skips: bool, code: int
) -> None:
    result = run_pytest(tmp_path, require_no_skips)
    assert result.returncode == code, result.stdout + result.stderr
    assert "SKIPPED [1] test_one_skip.py:7: needs something absent" in result.stdout
    assert "1 passed, 1 skipped" in result.stdout
    message = "KM2PG_REQUIRE_NO_SKIPS=1: 1 skipped, none allowed: this run fails"
    assert (message in result.stdout) is require_no_skips
