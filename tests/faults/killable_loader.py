"""A loader to be killed: km2pg's serial load of a folder, as ``km2pg load FOLDER`` does it (one
connection, ``load.load_file`` for each file in order, the next one parsed ahead), that stops at
a chosen point of one file's load, says where on stdout, and waits there for its SIGKILL.

    python -m tests.faults.killable_loader DSN FOLDER count
        load everything; print "count INDEX STATEMENTS COPY COMMIT" for each file's load (COPY,
        COMMIT: the numbers of the statements that stage its rows and commit it)
    python -m tests.faults.killable_loader DSN FOLDER INDEX STATEMENT before|sent
        stop in the load of the INDEX-th file (from 0) just before sending its STATEMENT-th
        statement (from 1), or once that statement has been sent (the server runs it, its
        result is never read; for a COPY, once its first chunk of rows has been sent); past
        the load's last statement, stop once it returned.
        Prints "STATEMENT WRITTEN COMMITTED SQL": WRITTEN is 1 once the load transaction had
        written its ledger row, COMMITTED once its commit had returned.

The connection is real; only its ``run`` and socket stream are wrapped, to count and to stop.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

from km2pg import db, load
from km2pg.dsn import parse_dsn
from km2pg.sources import discover_local


class _Wire:
    """The connection's socket stream: tells each flush, and whether it sent a statement to run
    (a Query or Execute message) or something else (a COPY's rows...)."""

    def __init__(self, inner: Any, on_flush: Any) -> None:
        self._inner = inner
        self._on_flush = on_flush
        self._executing = False

    def write(self, data: bytes) -> int:
        if data[:1] in (b"Q", b"E") and int.from_bytes(data[1:5], "big") == len(data) - 1:
            self._executing = True
        return int(self._inner.write(data))

    def flush(self) -> None:
        self._inner.flush()
        executing, self._executing = self._executing, False
        self._on_flush(executing)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _Stopper:
    def __init__(self, target: int | None, statement: int, mode: str) -> None:
        self.target, self.statement, self.mode = target, statement, mode
        self.index = -1
        self.count = 0
        self.sql = ""
        self.streaming = self.running = False
        self.ledger_written = self.committed = False
        self.commit = self.copy = 0

    @property
    def armed(self) -> bool:
        return self.index == self.target

    def start_file(self, index: int) -> None:
        self.index, self.count = index, 0
        self.ledger_written = self.committed = False

    def before(self, sql: str, streaming: bool) -> None:
        self.count += 1
        self.sql = " ".join(sql.split())
        self.streaming, self.running = streaming, False
        if self.armed and self.count == self.statement and self.mode == "before":
            self.stop()

    def flushed(self, executing: bool) -> None:
        if not (self.armed and self.count == self.statement and self.mode == "sent"):
            return
        if executing and not self.streaming:
            self.stop()
        elif executing:
            self.running = True
        elif self.running:  # a COPY's first chunk of rows
            self.stop()

    def after(self) -> None:
        if self.sql.startswith("COPY pg_temp.km2pg_stage"):
            self.copy = self.count
        elif self.sql.startswith("INSERT INTO km2pg.files"):
            self.ledger_written = True
        elif self.sql == "COMMIT" and self.ledger_written and not self.committed:
            self.committed = True
            self.commit = self.count

    def end_file(self) -> None:
        if self.target is None:
            print(f"count {self.index} {self.count} {self.copy} {self.commit}", flush=True)
        elif self.armed:
            self.count, self.sql = self.count + 1, "(the load returned)"
            self.ledger_written = self.committed = True
            self.stop()

    def stop(self) -> None:
        flags = f"{int(self.ledger_written)} {int(self.committed)}"
        print(f"{self.count} {flags} {self.sql[:80]}", flush=True)
        while True:
            signal.pause()  # until the SIGKILL


def main(argv: list[str]) -> None:
    dsn, folder, *where = argv
    if where == ["count"]:
        stopper = _Stopper(None, 0, "")
    else:
        stopper = _Stopper(int(where[0]), int(where[1]), where[2])
    con = db.connect(parse_dsn(dsn))
    load.prepare_connection(con)
    run = con.run

    def counted_run(sql: str, stream: Any = None, **params: Any) -> Any:
        stopper.before(sql, stream is not None)
        rows = run(sql, stream=stream, **params)
        stopper.after()
        return rows

    con.run = counted_run
    con._sock = _Wire(con._sock, stopper.flushed)
    files = discover_local(Path(folder))
    with load.Lookahead() as lookahead:
        for index, file in enumerate(files):
            stopper.start_file(index)
            following = files[index + 1] if index + 1 < len(files) else None
            load.load_file(con, file, lookahead=lookahead, next_file=following)
            stopper.end_file()
    con.close()


if __name__ == "__main__":
    main(sys.argv[1:])
