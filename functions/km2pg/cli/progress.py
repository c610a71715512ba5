"""A one-line progress bar for terminals: files, lines, lines/s. Silent when not a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(
        self, total_files: int, stream: TextIO | None = None, enabled: bool | None = None
    ) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total_files = total_files
        self.files = 0
        self.lines = 0
        self.started = time.monotonic()
        self._last_draw = 0.0

    def add_lines(self, count: int) -> None:
        self.lines += count
        self._draw()

    def file_done(self, lines_not_reported: int = 0) -> None:
        self.files += 1
        self.lines += lines_not_reported
        self._draw(force=True)

    @property
    def elapsed(self) -> float:
        return max(time.monotonic() - self.started, 1e-9)

    @property
    def rate(self) -> float:
        return self.lines / self.elapsed

    def _draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last_draw < 0.1:
            return
        self._last_draw = now
        width = 24
        done = int(width * self.files / self.total_files) if self.total_files else width
        bar = "#" * done + "." * (width - done)
        self.stream.write(
            f"\r[{bar}] {self.files}/{self.total_files} files  {self.lines:,} lines  "
            f"{self.rate:,.0f} lines/s "
        )
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(force=True)
            self.stream.write("\n")
            self.stream.flush()
