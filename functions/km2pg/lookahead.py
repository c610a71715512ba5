"""Parse the next file of a batch while the database applies this one.

A loader has two kinds of work per file: parsing it (Python, one core) and the server's SQL
steps that move the staged rows into place (the server's core). Done in turn, each side waits
for the other about half the time. So, once a file is staged, a thread parses the next file of
the batch into a spool (its COPY text in a temporary file on disk, gone when closed) while the
server applies this one; the next file's turn then COPYs it from the spool. pg8000 releases the
GIL while it waits for the server, so the thread has the interpreter nearly to itself.

Nothing of the next file reaches the database before its turn: the ledger, exactly-once and
all-or-nothing work as without it. An error met while parsing ahead (an unreadable source, a
bug) is raised at the file's turn, as it would have been then. Memory stays bounded: the spool
holds at most :data:`SPOOL_BYTES` on disk, and a larger file's rest is parsed at its turn.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import IO, Final

from km2pg.export import iter_raw_lines
from km2pg.sources import ContentStream, ExportFile
from km2pg.staging import StageStats, copy_export

SPOOL_BYTES: Final = 128 * 1024 * 1024
"""The spool's limit on disk. COPY text is about 1.25 times the file (16 MB for an hourly file
of 100,000 lines); a Lambda function's /tmp holds 512 MB at the least."""
READ_BYTES: Final = 1024 * 1024
"""Spool read back in blocks of this size for the COPY."""


class _Progress:
    """Lines parsed ahead are counted until the file's turn, then reported to the caller's
    callback (the CLI's progress bar is not called from the thread)."""

    def __init__(self) -> None:
        self.pending = 0
        self.target: Callable[[int], None] | None = None

    def __call__(self, lines: int) -> None:
        if self.target is None:
            self.pending += lines
        else:
            self.target(lines)

    def hand_to(self, target: Callable[[int], None] | None) -> None:
        if target is not None and self.pending:
            target(self.pending)
        self.pending = 0
        self.target = target


class Ahead:
    """One file parsed ahead by a thread: its spool, its counts, and the parse's paused rest."""

    def __init__(self, file: ExportFile, latest: int) -> None:
        self.file = file
        self.latest = latest
        self.stats = StageStats()
        self.content: ContentStream | None = None
        self.error: BaseException | None = None
        self._spool: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self._rest: Iterator[str] | None = None
        self._progress = _Progress()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._parse, name="km2pg-ahead", daemon=True)
        self._thread.start()

    def _parse(self) -> None:
        """The thread: parse into the spool until the file ends or the spool is full."""
        try:
            self.content = ContentStream(self.file)
            parse = copy_export(
                iter_raw_lines(self.content.stream), self.latest, self.stats, self._progress
            )
            written = 0
            for chunk in parse:
                data = chunk.encode()
                self._spool.write(data)
                written += len(data)
                if written >= SPOOL_BYTES or self._stop.is_set():
                    self._rest = parse  # paused: its turn parses the rest
                    break
        except BaseException as error:  # raised at the file's turn (see chunks)
            self.error = error

    def wait(self) -> None:
        self._thread.join()

    def chunks(self, on_progress: Callable[[int], None] | None) -> Iterator[str | bytes]:
        """The file's COPY text at its turn (after :meth:`wait`): the spool, then the rest.

        An error the thread met is raised here, where the live parse would have raised it.
        """
        self._progress.hand_to(on_progress)
        self._spool.seek(0)
        while block := self._spool.read(READ_BYTES):
            yield block
        if self.error is not None:
            raise self.error
        if self._rest is not None:
            yield from self._rest

    def content_read(self) -> ContentStream:
        """The file's content as read (its hash and size), once its chunks were all taken."""
        if self.content is None:  # chunks() raised the thread's error before this
            raise RuntimeError(f"{self.file.label} was not read")
        return self.content

    def close(self) -> None:
        """Stop the thread (at its next chunk), drop the spool, close the source."""
        self._stop.set()
        self._thread.join()
        self._spool.close()
        if self.content is not None:
            self.content.close()


class Lookahead:
    """At most one file parsed ahead, for a loader that loads files one after another on one
    connection. Use as a context manager: leaving it drops a file parsed ahead and not taken."""

    def __init__(self) -> None:
        self._ahead: Ahead | None = None

    def start(self, file: ExportFile, latest: int) -> None:
        """Parse ``file`` ahead, in a thread, from now (dropping any other file parsed ahead)."""
        self.close()
        self._ahead = Ahead(file, latest)

    def take(self, file: ExportFile) -> Ahead | None:
        """The file parsed ahead if it is ``file`` (its thread finished); any other is dropped.
        The caller closes what it takes."""
        ahead, self._ahead = self._ahead, None
        if ahead is None:
            return None
        if ahead.file != file:
            ahead.close()
            return None
        ahead.wait()
        return ahead

    def close(self) -> None:
        if self._ahead is not None:
            self._ahead.close()
            self._ahead = None

    def __enter__(self) -> Lookahead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
