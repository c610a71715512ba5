"""``make scale`` in its quick mode, so the script cannot rot between full runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_scale_quick_prints_every_row():
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_scale.py"), "--quick"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    out = run.stdout
    for case in (
        "small file, .json",
        "big file, .json ",
        "big file, .json.gz",
        "12 months, before",
        "km2pg prune",
        "DELETE (same cutoff)",
        "then VACUUM",
        "min..max of 3 samples",
    ):
        assert case in out, case
    assert "wall time" in out
