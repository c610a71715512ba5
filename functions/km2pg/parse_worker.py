"""Parse a large file in worker processes while this one reads it and feeds the COPY.

Parsing is CPU-bound Python (one core per process, whatever the threads), and while a file is
parsed and COPYed the database is mostly idle. So this process only reads lines and cuts them
into batches; each batch goes to whichever worker is free, and each worker's COPY text goes to
the database as soon as it is ready. Staging rows carry their line numbers, so the order batches
arrive in does not matter. Memory stays bounded: one batch per worker, plus one in hand.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from multiprocessing.connection import Connection as Pipe
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from typing import Final

from km2pg.errors import WorkerFailed
from km2pg.staging import StageStats, copy_export

BATCH_LINES: Final = 20_000
"""Lines per batch: a few MB of text, enough to make a message's cost vanish."""

WORKERS: Final = 2
WORKER_TIMEOUT_SECONDS: Final = 600
STOP_TIMEOUT_SECONDS: Final = 5


class _Worker:
    """One parse process and this side of its pipe; ``lines`` is the batch it holds (0: free)."""

    def __init__(self, latest: int) -> None:
        context = multiprocessing.get_context("spawn")  # not fork: this process holds a socket
        self.pipe, theirs = context.Pipe()
        self.process: BaseProcess = context.Process(
            target=_work, args=(theirs, latest), name="km2pg-parse", daemon=True
        )
        self.process.start()
        theirs.close()
        self.lines = 0

    def send(self, message: bytes) -> None:
        try:
            self.pipe.send_bytes(message)
        except OSError as error:
            raise self._stopped() from error

    def receive(self, stats: StageStats) -> bytes:
        """The COPY text of the batch this worker holds; its counts are added to ``stats``."""
        try:
            text = self.pipe.recv_bytes()
            part: StageStats | str = self.pipe.recv()
        except (EOFError, OSError) as error:
            raise self._stopped() from error
        if isinstance(part, str):
            raise WorkerFailed(f"the parse worker failed: {part}")
        stats.add(part)
        self.lines = 0
        return text

    def stop(self) -> None:
        """End the worker: a free one is told to, a busy one is killed (its answer is no longer
        wanted, and it could wait forever to send it)."""
        try:
            if self.lines:
                self.process.kill()
            else:
                self.pipe.send_bytes(b"")
        except OSError:
            pass  # it is gone already
        self.process.join(STOP_TIMEOUT_SECONDS)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.pipe.close()

    def _stopped(self) -> WorkerFailed:
        return WorkerFailed(f"the parse worker stopped (exit code {self.process.exitcode})")


def copy_export_parallel(
    raw_lines: Iterable[tuple[int, bytes]],
    latest: int,
    stats: StageStats,
    on_progress: Callable[[int], None] | None = None,
    workers: int = WORKERS,
) -> Iterator[bytes]:
    """:func:`copy_export` by ``workers`` processes: the same rows and ``stats``, in batches."""
    pool = [_Worker(latest) for _ in range(workers)]
    try:
        for first, lines in _batches(raw_lines):
            if all(w.lines for w in pool):
                yield from _finished(pool, stats, on_progress)
            free = next(w for w in pool if not w.lines)
            free.send(_pack(first, lines))
            free.lines = len(lines)
        while any(w.lines for w in pool):
            yield from _finished(pool, stats, on_progress)
    finally:
        for worker in pool:
            worker.stop()


def _finished(
    pool: list[_Worker], stats: StageStats, on_progress: Callable[[int], None] | None
) -> Iterator[bytes]:
    """Wait for the busy workers that finish first and yield their text: they are free again."""
    busy = {w.pipe: w for w in pool if w.lines}
    ready = wait(list(busy), WORKER_TIMEOUT_SECONDS)
    if not ready:
        raise WorkerFailed("the parse workers gave no answer")
    for pipe in ready:
        worker = busy[pipe]  # type: ignore[index]
        lines = worker.lines
        yield worker.receive(stats)
        if on_progress is not None:
            on_progress(lines)


def _batches(raw_lines: Iterable[tuple[int, bytes]]) -> Iterator[tuple[int, list[bytes]]]:
    """Consecutive lines in batches: (first line number, lines)."""
    numbered = iter(raw_lines)
    while batch := list(islice(numbered, BATCH_LINES)):
        yield batch[0][0], [raw for _, raw in batch]


def _pack(first: int, lines: list[bytes]) -> bytes:
    # A raw line never holds a newline (lines are split on it), so one joins them back.
    return b"%d\n" % first + b"\n".join(lines)


def _unpack(message: bytes) -> tuple[int, list[bytes]]:
    head, _, body = message.partition(b"\n")
    return int(head), body.split(b"\n")


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
