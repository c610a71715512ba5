"""Parse a large file with two cores: this process and one worker process share its lines.

Parsing is CPU-bound Python (one core per process, whatever the threads), and while a file is
parsed and COPYed the database is mostly idle. So the lines are cut into batches: whenever the
worker is free it gets the next batch, else this process parses it; each batch's COPY text goes
to the database as soon as it is ready. Staging rows carry their line numbers, so the order they
arrive in does not matter. Memory stays bounded: one batch in the worker, one here, one result.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from multiprocessing.connection import Connection as Pipe
from typing import Final

from km2pg.errors import WorkerFailed
from km2pg.staging import StageStats, copy_export

BATCH_LINES: Final = 20_000
"""Lines per batch: a few MB of text, enough to make a message's cost vanish."""

WORKER_TIMEOUT_SECONDS: Final = 600


def copy_export_parallel(
    raw_lines: Iterable[tuple[int, bytes]],
    latest: int,
    stats: StageStats,
    on_progress: Callable[[int], None] | None = None,
) -> Iterator[str | bytes]:
    """:func:`copy_export` with a worker process: the same rows and ``stats``, in batch order
    of whoever finished first."""
    context = multiprocessing.get_context("spawn")  # not fork: this process holds a live socket
    ours, theirs = context.Pipe()
    worker = context.Process(target=_work, args=(theirs, latest), name="km2pg-parse", daemon=True)
    worker.start()
    theirs.close()
    in_worker = 0  # lines of the batch the worker holds, 0 when it is free
    try:
        for first, lines in _batches(raw_lines):
            if in_worker and ours.poll():
                yield _collect(ours, worker, stats)
                _report(on_progress, in_worker)
                in_worker = 0
            if not in_worker:
                _send(ours, worker, _pack(first, lines))
                in_worker = len(lines)
                continue
            part = StageStats()
            yield from copy_export(enumerate(lines, first), latest, part)
            stats.add(part)
            _report(on_progress, len(lines))
        if in_worker:
            yield _collect(ours, worker, stats)
            _report(on_progress, in_worker)
        _send(ours, worker, b"")  # done: the worker ends
        worker.join(WORKER_TIMEOUT_SECONDS)
    finally:
        ours.close()
        if worker.is_alive():
            worker.kill()
            worker.join()


def _report(on_progress: Callable[[int], None] | None, lines: int) -> None:
    if on_progress is not None:
        on_progress(lines)


def _batches(raw_lines: Iterable[tuple[int, bytes]]) -> Iterator[tuple[int, list[bytes]]]:
    """Consecutive lines in batches: (first line number, lines)."""
    numbered = iter(raw_lines)
    while batch := list(islice(numbered, BATCH_LINES)):
        yield batch[0][0], [raw for _, raw in batch]


def _send(ours: Pipe, worker: multiprocessing.process.BaseProcess, message: bytes) -> None:
    try:
        ours.send_bytes(message)
    except OSError as error:
        raise WorkerFailed(f"the parse worker stopped (exit code {worker.exitcode})") from error


def _pack(first: int, lines: list[bytes]) -> bytes:
    # A raw line never holds a newline (lines are split on it), so one joins them back.
    return b"%d\n" % first + b"\n".join(lines)


def _unpack(message: bytes) -> tuple[int, list[bytes]]:
    head, _, body = message.partition(b"\n")
    return int(head), body.split(b"\n")


def _collect(ours: Pipe, worker: multiprocessing.process.BaseProcess, stats: StageStats) -> bytes:
    """The worker's result for the batch it holds, its counts added to ``stats``."""
    try:
        if not ours.poll(WORKER_TIMEOUT_SECONDS):
            raise WorkerFailed("the parse worker gave no answer")
        text = ours.recv_bytes()
        part: StageStats | str = ours.recv()
    except (EOFError, OSError) as error:
        raise WorkerFailed(f"the parse worker stopped (exit code {worker.exitcode})") from error
    if isinstance(part, str):
        raise WorkerFailed(f"the parse worker failed: {part}")
    stats.add(part)
    return text


def _work(pipe: Pipe, latest: int) -> None:
    """The worker: parse each batch it is sent, answer with its COPY text (UTF-8) and counts."""
    while True:
        try:
            message = pipe.recv_bytes()
        except EOFError:  # the loader is gone
            return
        if not message:
            break
        first, lines = _unpack(message)
        part = StageStats()
        try:
            text = "".join(copy_export(enumerate(lines, first), latest, part)).encode()
        except Exception as error:  # reported to the loader, which stops
            pipe.send_bytes(b"")
            pipe.send(f"{type(error).__name__}: {error}")
            continue
        pipe.send_bytes(text)
        pipe.send(part)
    pipe.close()
