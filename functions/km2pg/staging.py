"""Turn parsed lines into PostgreSQL COPY text for the staging table, counting as it goes.

One staging row per line, property and reject (``rec`` tells which), so a whole file streams
into PostgreSQL through a single COPY while Python parses the next lines.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from km2pg.export import Line, LineKind, Reject

# Characters COPY's text format gives a meaning to, escaped; NUL removed (text cannot hold it).
_COPY_ESCAPES: Final = str.maketrans(
    {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\x00": None}
)
NULL: Final = "\\N"
CHUNK_CHARS: Final = 256 * 1024

STAGE_COLUMNS: Final = "rec, lineno, p, p2, t, name, value"
REC_PROPERTY: Final = "k"
REC_REJECT: Final = "r"


def copy_text(value: str) -> str:
    """Escape one value for COPY text format."""
    return value.translate(_COPY_ESCAPES)


@dataclass
class StageStats:
    """What the staged stream held; filled in while the COPY runs."""

    lines: int = 0
    accepted: int = 0
    rejects: int = 0
    events: int = 0
    property_sets: int = 0
    aliases: int = 0
    properties: int = 0
    min_t: int | None = None
    max_t: int | None = None
    months: set[tuple[int, int]] = field(default_factory=set)

    @property
    def parsed(self) -> int:
        """Non-blank lines: the base of the reject share."""
        return self.accepted + self.rejects

    def reject_share(self) -> float:
        return self.rejects / self.parsed if self.parsed else 0.0

    def min_time(self) -> datetime | None:
        return None if self.min_t is None else datetime.fromtimestamp(self.min_t, UTC)

    def max_time(self) -> datetime | None:
        return None if self.max_t is None else datetime.fromtimestamp(self.max_t, UTC)


def copy_rows(
    parsed: Iterable[Line | Reject],
    stats: StageStats,
    on_progress: Callable[[int], None] | None = None,
) -> Iterator[str]:
    """Yield COPY text in chunks of about 256 KiB for the staging table, updating ``stats``.

    Memory is bounded by one chunk, whatever the file's size.
    """
    esc = copy_text
    buffer: list[str] = []
    size = 0
    reported = 0
    min_t = max_t = None
    months = stats.months
    seen_seconds_month: dict[int, tuple[int, int]] = {}
    for item in parsed:
        if isinstance(item, Reject):
            stats.rejects += 1
            row = f"r\t{item.lineno}\t\\N\t\\N\t\\N\t{esc(item.reason)}\t{esc(item.raw)}\n"
            buffer.append(row)
            size += len(row)
            stats.lines = item.lineno
            continue
        stats.accepted += 1
        stats.lines = item.lineno
        t = item.t
        if min_t is None or t < min_t:
            min_t = t
        if max_t is None or t > max_t:
            max_t = t
        # A month per distinct day is plenty to find the months; avoid datetime per line.
        day = t // 86400
        if day not in seen_seconds_month:
            moment = datetime.fromtimestamp(day * 86400, UTC)
            seen_seconds_month[day] = (moment.year, moment.month)
            months.add((moment.year, moment.month))
        kind = item.kind
        if kind is LineKind.ALIAS:
            stats.aliases += 1
            row = f"a\t{item.lineno}\t{esc(item.person)}\t{esc(item.alias or '')}\t{t}\t\\N\t\\N\n"
        else:
            if kind is LineKind.EVENT:
                stats.events += 1
                row = f"e\t{item.lineno}\t{esc(item.person)}\t\\N\t{t}\t{esc(item.name or '')}\t\\N\n"
            else:
                stats.property_sets += 1
                row = f"p\t{item.lineno}\t{esc(item.person)}\t\\N\t{t}\t\\N\t\\N\n"
            if item.properties:
                lineno = item.lineno
                stats.properties += len(item.properties)
                row += "".join(
                    f"k\t{lineno}\t\\N\t\\N\t\\N\t{esc(key)}\t{esc(value)}\n"
                    for key, value in item.properties
                )
        buffer.append(row)
        size += len(row)
        if size >= CHUNK_CHARS:
            yield "".join(buffer)
            buffer.clear()
            size = 0
            if on_progress is not None:
                on_progress(stats.lines - reported)
                reported = stats.lines
            stats.min_t, stats.max_t = min_t, max_t
    stats.min_t, stats.max_t = min_t, max_t
    if buffer:
        yield "".join(buffer)
    if on_progress is not None and stats.lines > reported:
        on_progress(stats.lines - reported)


class GuardedStream:
    """Wraps a chunk iterator so an error while reading stops the COPY cleanly.

    pg8000 cannot abort a COPY from the client side; an exception raised inside its loop would
    leave the connection mid-protocol. So the error is kept, the COPY ends, and the caller rolls
    back and re-raises it.
    """

    def __init__(self, chunks: Iterator[str]) -> None:
        self._chunks = chunks
        self.error: BaseException | None = None

    def __iter__(self) -> Iterator[str]:
        try:
            yield from self._chunks
        except Exception as error:  # re-raised by the caller after the COPY ends
            self.error = error
