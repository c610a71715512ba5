"""Pieces the benchmarks share: a throwaway embedded PostgreSQL, child runs with their peak RSS,
fresh databases, and small formatting helpers.

The benchmarks run as scripts (``python benchmarks/bench_*.py``), so this module is imported as
``common`` from the script's own folder.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import psutil  # type: ignore[import-untyped]

from km2pg import db
from km2pg.cli import local
from km2pg.dsn import ConnectionSettings

ROOT: Final = Path(__file__).resolve().parents[1]
# The benchmarks run as scripts from this folder; the repository root on the path lets them use
# the tests' fakes (tests/lambda_context.py) rather than a copy of their own.
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

RSS_POLL_SECONDS: Final = 0.02
MB: Final = 1024 * 1024


@dataclass(frozen=True)
class ChildRun:
    seconds: float
    exit_code: int
    peak_rss_mb: float
    """The sum of the peaks of the child and of every process it started (parse workers)."""


def run_child(argv: list[str]) -> ChildRun:
    """Run ``argv`` to its end: wall time, exit code and its peak RSS, workers included.

    A peak is a process's VmHWM (the high-water mark of its own memory since it started its
    program), read while it runs. Not wait4's ru_maxrss: that also counts this process's memory,
    which the child shares between fork and exec, so it would report this process's size for
    any child smaller than it.
    """
    started = time.perf_counter()
    child = subprocess.Popen(argv)
    peaks: dict[int, int] = {}
    while child.poll() is None:
        for pid in _process_tree(child.pid):
            peaks[pid] = max(peaks.get(pid, 0), _high_water_kb(pid))
        time.sleep(RSS_POLL_SECONDS)
    seconds = time.perf_counter() - started
    return ChildRun(seconds, child.returncode, sum(peaks.values()) / 1024)


def _high_water_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass  # it just ended: its last reading stands
    return 0


def _process_tree(pid: int) -> list[int]:
    try:
        return [pid, *(p.pid for p in psutil.Process(pid).children(recursive=True))]
    except psutil.Error:
        return [pid]


def run_load(path: Path, dsn: str, *, jobs: int = 1) -> ChildRun:
    """``km2pg load PATH --dsn ... --quiet [--jobs N]`` in a child process, as a user runs it."""
    argv = [sys.executable, "-m", "km2pg.cli", "load", str(path), "--dsn", dsn, "--quiet"]
    return run_child(argv if jobs == 1 else [*argv, "--jobs", str(jobs)])


@contextmanager
def work_folder(prefix: str, *, keep: bool = False) -> Iterator[Path]:
    """A temporary folder for generated files, deleted afterwards unless ``keep``."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield folder
    finally:
        if keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def embedded_server(
    folder: Path, settings: dict[str, str] | None = None
) -> Iterator[local.EmbeddedServer]:
    """A throwaway embedded PostgreSQL with the durable settings a user gets (not the tests'
    fsync=off ones: the figures must be what a user would see): km2pg's ``LOCAL_SETTINGS`` by
    default, or ``settings`` (``{}``: PostgreSQL's own defaults)."""
    started = time.perf_counter()
    chosen = local.LOCAL_SETTINGS if settings is None else settings
    server = local.start(folder / "pgdata", chosen, temporary=True)
    print(f"embedded PostgreSQL ready in {time.perf_counter() - started:.1f} s")
    try:
        yield server
    finally:
        server.handle.cleanup()


def checkpoint(settings: ConnectionSettings) -> None:
    """Start each measured phase from a clean slate: no dirty buffers left by the last one."""
    with db.connection(settings) as con:
        con.run("CHECKPOINT")


def clone_database(server: local.EmbeddedServer, template: str, name: str) -> ConnectionSettings:
    """A new database copied from ``template`` (which nobody may be connected to)."""
    with db.connection(server.settings("postgres")) as con:
        con.run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        # FILE_COPY copies the files at once instead of WAL-logging every block: much faster for
        # a big template, and the clone is the same bytes.
        con.run(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY')
        con.run(f'ALTER DATABASE "{name}" SET search_path = km2pg, public')
    return server.settings(name)


def drop_database(server: local.EmbeddedServer, name: str) -> None:
    with db.connection(server.settings("postgres")) as con:
        con.run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def rate(count: int, seconds: float) -> str:
    """``count`` per second, with thousands separators; ``-`` when no time was measured."""
    return f"{count / seconds:,.0f}" if seconds > 0 else "-"
