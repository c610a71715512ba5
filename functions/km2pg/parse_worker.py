"""Parse a large file in worker processes while this one reads it and feeds the COPY.

Parsing is CPU-bound Python (one core per process, whatever the threads), and while a file is
parsed and COPYed the database is mostly idle. So this process only reads lines and cuts them
into batches (parsing them itself only until a worker has started); each batch goes to whichever
worker is free, and each worker's COPY text goes to the database as soon as it is ready. Staging
rows carry their line numbers, so the order batches arrive in does not matter. Memory stays
bounded: one batch per worker, plus one in hand. Each batch's counts come back with its pairs'
ends (see StageStats.ends), merged here; their rows follow the last batch's.
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
from km2pg.staging import StageStats, copy_export, ends_chunks

BATCH_LINES: Final = 20_000
"""Lines per batch: a few MB of text, enough to make a message's cost vanish."""

WORKERS: Final = 2
WORKER_TIMEOUT_SECONDS: Final = 600
STOP_TIMEOUT_SECONDS: Final = 5


_STARTING: Final = -1
_GONE: Final = -2
_READY: Final = b"ready"


class _Worker:
    """One parse process and this side of its pipe. ``lines`` is the size of the batch it holds:
    0 when free, _STARTING until it says it is ready, _GONE if it never was."""

    def __init__(self, latest: int) -> None:
        context = multiprocessing.get_context("spawn")  # not fork: this process holds a socket
        self.pipe, theirs = context.Pipe()
        self.process: BaseProcess = context.Process(
            target=_work, args=(theirs, latest), name="km2pg-parse", daemon=True
        )
        self.process.start()
        theirs.close()
        self.lines = _STARTING

    @property
    def busy(self) -> bool:
        return self.lines > 0

    def check_started(self) -> None:
        """Without waiting: a worker that has started is free; one that died starting is gone
        (the file is then parsed without it: it was only ever a way to go faster)."""
        if self.lines != _STARTING or not self.pipe.poll():
            return
        try:
            self.lines = 0 if self.pipe.recv_bytes() == _READY else _GONE
        except (EOFError, OSError):
            self.lines = _GONE

    def send(self, first: int, lines: list[bytes]) -> None:
        try:
            self.pipe.send_bytes(_pack(first, lines))
        except OSError as error:
            raise self._stopped() from error
        self.lines = len(lines)

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
        """End the worker: a free one is told to, any other is killed (a busy one's answer is no
        longer wanted, and it could wait forever to send it)."""
        try:
            if self.lines == 0:
                self.pipe.send_bytes(b"")
            else:
                self.process.kill()
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
) -> Iterator[str | bytes]:
    """:func:`copy_export` by ``workers`` processes: the same rows and ``stats``, in batches.

    Until a worker has started (a fraction of a second), or if none can, this process parses.
    """
    pool = [_Worker(latest) for _ in range(workers)]
    try:
        for first, lines in _batches(raw_lines):
            for worker in pool:
                worker.check_started()
            free = [w for w in pool if w.lines == 0]
            if not free and any(w.busy for w in pool):
                yield from _finished(pool, stats, on_progress)
                free = [w for w in pool if w.lines == 0]
            if free:
                free[0].send(first, lines)
                continue
            part = StageStats()  # no worker has started yet
            yield from copy_export(enumerate(lines, first), latest, part, with_ends=False)
            stats.add(part)
            if on_progress is not None:
                on_progress(len(lines))
        while any(w.busy for w in pool):
            yield from _finished(pool, stats, on_progress)
        yield from ends_chunks(stats.ends)
    finally:
        for worker in pool:
            worker.stop()


def _finished(
    pool: list[_Worker], stats: StageStats, on_progress: Callable[[int], None] | None
) -> Iterator[bytes]:
    """Wait for the busy workers that finish first and yield their text: they are free again."""
    busy = {w.pipe: w for w in pool if w.busy}
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
    pipe.send_bytes(_READY)
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
            parse = copy_export(enumerate(lines, first), latest, part, with_ends=False)
            text = "".join(parse).encode()
        except Exception as error:  # reported to the loader, which stops
            pipe.send_bytes(b"")
            pipe.send(f"{type(error).__name__}: {error}")
            continue
        pipe.send_bytes(text)
        pipe.send(part)
    pipe.close()
