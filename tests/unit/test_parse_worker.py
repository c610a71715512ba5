"""Parsing in worker processes: the same staging rows and counts as one process, or a clear
failure when a worker dies."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import time
from collections import Counter
from pathlib import Path

import pytest

from km2pg import parse_worker, staging
from km2pg.cli.synth import generate_export
from km2pg.errors import WorkerFailed
from km2pg.export import iter_raw_lines
from km2pg.parse_worker import copy_export_parallel
from km2pg.staging import StageStats, copy_export

LATEST = int(time.time()) + 86_400


@pytest.fixture(scope="module")
def messy_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("export")
    summary = generate_export(folder, lines=12_000, files=1, seed=5, messy=True)
    with summary.files[0].open("ab") as out:
        out.write(b"\n\nnot json\n" + b'{"_p":"late","_t":1400000000,"_n":"Last"}')  # no newline
    return summary.files[0]


def rows(chunks: list[str | bytes]) -> Counter[str]:
    text = "".join(c.decode() if isinstance(c, bytes) else c for c in chunks)
    return Counter(text.splitlines())


def test_worker_processes_stage_the_same_rows_and_counts_as_one_process(
    messy_file, monkeypatch
) -> None:
    monkeypatch.setattr(parse_worker, "BATCH_LINES", 2_000)
    monkeypatch.setattr(staging, "ENDS_PER_SETTING", 1.0)  # the ends kept whatever their share
    with messy_file.open("rb") as stream:
        lines = list(iter_raw_lines(stream))
    # Long enough for the workers to start and take most of it, numbered as one file.
    many = [(n, raw) for n, (_, raw) in enumerate(lines * 25, 1)]
    one, two = StageStats(), StageStats()
    progress: list[int] = []
    alone = list(copy_export(iter(many), LATEST, one))
    shared = list(copy_export_parallel(iter(many), LATEST, two, progress.append))
    assert any(isinstance(chunk, bytes) for chunk in shared), "no worker took part"
    assert rows(shared) == rows(alone)
    assert vars(two) == vars(one)
    # Each pair's first and latest setting too, merged from the batches: rows (n) after the lines.
    assert one.ends
    assert sum(row.startswith("n\t") for row in rows(shared).elements()) == len(one.ends)
    # The file is messy enough to mean something.
    assert one.rejects > 0
    assert one.aliases > 0
    assert sum(progress) == len(many)
    assert not [p for p in multiprocessing.active_children() if p.name == "km2pg-parse"]


def test_workers_that_die_fail_the_stage_with_a_clear_error(messy_file, monkeypatch) -> None:
    monkeypatch.setattr(parse_worker, "BATCH_LINES", 2_000)
    with messy_file.open("rb") as stream:
        lines = list(iter_raw_lines(stream))
    # Far more than this process parses while the workers start: they will take batches.
    endless = itertools.chain.from_iterable(itertools.repeat(lines, 100))
    chunks = copy_export_parallel(endless, LATEST, StageStats())
    for chunk in chunks:
        if isinstance(chunk, bytes):  # a worker's answer (this process yields text)
            break
    else:
        pytest.fail("no worker ever answered")
    for child in multiprocessing.active_children():
        if child.name == "km2pg-parse":
            child.kill()
            child.join()
    with pytest.raises(WorkerFailed, match="the parse worker stopped"):
        list(chunks)


def test_an_abandoned_stage_stops_its_workers_at_once(messy_file) -> None:
    # Full-size batches: a busy worker's answer is more than a pipe holds, so it would wait to
    # send it for as long as nobody reads.
    with messy_file.open("rb") as stream:
        lines = list(iter_raw_lines(stream)) * 4  # a few batches of the real size
    chunks = copy_export_parallel(iter(lines), LATEST, StageStats())
    next(chunks)  # a worker has answered; the other holds a batch
    started = time.monotonic()
    chunks.close()  # as when the COPY fails
    assert time.monotonic() - started < 3
    assert not [p for p in multiprocessing.active_children() if p.name == "km2pg-parse"]


def _die_at_start(pipe: object, latest: int) -> None:
    os._exit(3)


def test_a_file_is_still_staged_whole_when_no_worker_can_start(messy_file, monkeypatch) -> None:
    monkeypatch.setattr(parse_worker, "_work", _die_at_start)
    monkeypatch.setattr(parse_worker, "BATCH_LINES", 1_000)
    one, two = StageStats(), StageStats()
    with messy_file.open("rb") as stream:
        alone = list(copy_export(iter_raw_lines(stream), LATEST, one))
    with messy_file.open("rb") as stream:
        shared = list(copy_export_parallel(iter_raw_lines(stream), LATEST, two))
    assert rows(shared) == rows(alone)
    assert vars(two) == vars(one)
    assert not [p for p in multiprocessing.active_children() if p.name == "km2pg-parse"]
