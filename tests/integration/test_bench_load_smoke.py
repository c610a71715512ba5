"""``make bench`` at a tiny size, so the script cannot rot between full runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_load_at_a_tiny_size_prints_every_case_on_both_servers():
    env = {k: v for k, v in os.environ.items() if k != "KM2PG_BENCH_CITUS_DSN"}
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_load.py"), "--lines", "2000"],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    table = [line for line in run.stdout.splitlines() if line.startswith(("embedded ", "default "))]
    cases = (
        "1 file, km2pg load (CLI)",
        "10 files, one process, no workers (Lambda)",
        "10 files, one process, no person_properties",
        "10 files, km2pg load (CLI)",
        "40 files, km2pg load --jobs 4",
        "10 real-sample-shape files, one process",
    )
    for server in ("embedded", "default"):
        for case in cases:
            rows = [line for line in table if line.startswith(server) and case in line]
            assert len(rows) == 1, (server, case)
    assert "per-step seconds of the one-process case" in run.stdout
    upkeep = [line for line in run.stdout.splitlines() if " lines/s, without " in line]
    assert [line.split()[0] for line in upkeep] == ["embedded", "default"] * 2
    shaped = [line for line in upkeep if "real-sample shape:" in line]
    assert [line.split()[0] for line in shaped] == ["embedded", "default"]
    assert "loading the 1-file export again (skipped)" in run.stdout
    assert "no Citus row" in run.stdout
    assert_where_the_time_goes(run.stdout.splitlines())


def assert_where_the_time_goes(lines: list[str]) -> None:
    """Two blocks, the synthetic files' one-process case and the real-sample-shape files: in each,
    a row per step of the per-step table, and on both servers a number in the floor column of
    every step that writes tables of its own (the stage step's staging table included)."""
    start = lines.index("per-step seconds of the one-process case (summed over its files)")
    end = next(i for i in range(start, len(lines)) if lines[i].split()[:1] == ["total"])
    steps = [line.split()[0] for line in lines[start + 2 : end]]
    heads = [i for i, line in enumerate(lines) if line.startswith("where the time goes")]
    assert [lines[i].split("(")[1].split(")")[0] for i in heads] == [
        "the one-process case",
        "the real-sample-shape files",
    ]
    for head, after in zip(heads, [*heads[1:], len(lines)], strict=True):
        block = lines[head:after]
        rows = {line.split()[0]: line.split() for line in block[2:] if line.startswith("  ")}
        if head == heads[0]:
            assert set(steps) <= set(rows), set(steps) - set(rows)
        floored = [step for step in rows if step in FLOORED_STEPS and rows[step][1] != "-"]
        assert {"stage", "users", "events", "event_properties", "person_properties"} <= set(
            floored
        ), block[0]
        for step in [*floored, "steps"]:
            # the last six: seconds, floor and extra on each of the two servers
            figures = rows[step][-6:]
            assert all(float(figure) >= 0 for figure in figures[:2] + figures[3:5]), rows[step]
        assert_writes_alone(block)
        assert_making_and_writing(block)


FLOORED_STEPS = (
    "stage",
    "users",
    "dictionaries",
    "events",
    "event_actions",
    "event_properties",
    "aliases",
    "person_properties",
)


def assert_writes_alone(lines: list[str]) -> None:
    """On both servers, the least a staged load writes: its parts add up to the sum printed."""
    found = [line for line in lines if "the writes alone (COPY: " in line]
    assert [line.split()[0] for line in found] == ["embedded:", "default:"]
    for line in found:
        parts = line.split("(COPY: ")[1].split(")")[0].split(" + ")
        named = {part.split()[0]: float(part.split()[1]) for part in parts}
        assert set(named) == {"staging", "facts", "upkeep"}, line
        total = float(line.split(")")[1].split()[0])
        assert abs(total - sum(named.values())) < 0.015, line


def assert_making_and_writing(lines: list[str]) -> None:
    """On both servers, the statements that make and write the rows: the three fact tables'
    SELECTs and INSERTs, and each group and the whole add up to the sums printed."""
    found = [line for line in lines if "making and writing the rows" in line]
    assert [line.split()[0] for line in found] == ["embedded:", "default:"]
    for line in found:
        rest = line.split("making them (")[1]
        groups = []
        for _ in range(2):
            inside, rest = rest.split(")", 1)
            parts = {
                part.rsplit(" ", 1)[0]: float(part.rsplit(" ", 1)[1])
                for part in inside.split(" + ")
            }
            assert {name.split()[0] for name in parts} == {
                "events",
                "event_actions",
                "event_properties",
            }, line
            total = float(rest.split()[0])
            assert abs(total - sum(parts.values())) < 0.025, line
            groups.append(total)
            rest = rest.split("(", 1)[1]
        resolving = float(rest.split(")")[1].split()[0])
        whole = float(rest.split("= ")[1].split()[0])
        assert abs(whole - sum(groups) - resolving) < 0.025, line
        assert "the target leaves" in line
