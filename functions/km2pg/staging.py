"""Turn parsed lines into PostgreSQL COPY text for the staging table, counting as it goes.

One staging row per line, property and reject (``rec`` tells which), so a whole file streams
into PostgreSQL through a single COPY while Python parses the next lines; after them, one row per
(identity, key) pair with the first and the latest of its settings (see :class:`StageStats`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import Final

from km2pg.export import Reject, parse_line, parse_usual

# Characters COPY's text format gives a meaning to are escaped (the parser already removed NUL).
_SPECIAL: Final = re.compile(r"[\\\t\n\r]")
NULL: Final = "\\N"
CHUNK_CHARS: Final = 256 * 1024

STAGE_LAYOUT: Final = (
    ("rec", '"char" NOT NULL'),  # e event, p property set, a alias, k property, r reject, n ends
    ("lineno", "integer NOT NULL"),  # the line (n: the latest setting's)
    ("p", "text"),  # the identity (_p)
    ("p2", "text"),  # the second identity of an alias (_p2); the first setting's value (n)
    ("t", "bigint"),  # seconds since the epoch (n: the first setting's)
    ("name", "text"),  # the action (e), the property's key (k, n) or the reason (r)
    ("value", "text"),  # the property's value (k), the latest setting's (n) or the rejected line
    ("first", "integer"),  # the first setting's line (n); null otherwise
)
"""The staging table's columns, in the order :func:`copy_export` writes them; the table's DDL
and the COPY's column list are made from this. An ends row (n) is a pair's latest setting as a
property row (k) is, its line's row holding the identity; p2, t and first are null when its first
setting is that same one (most pairs of a file of new visitors)."""
STAGE_COLUMNS: Final = ", ".join(column for column, _ in STAGE_LAYOUT)
STAGE_COLUMNS_DDL: Final = ",\n    ".join(f"{column:<6} {kind}" for column, kind in STAGE_LAYOUT)
MAX_NAMES: Final = 100_000
"""Distinct action or key names remembered per file; past that they are found in SQL."""
MAX_ENDS: Final = 200_000
"""(identity, key) pairs whose ends are kept per file (a few tens of MB); past that the server
finds them from the rows it writes (a real hourly file holds a few thousand)."""
ENDS_JUDGED_AFTER: Final = 5_000
ENDS_PER_SETTING: Final = 0.25
"""Past ENDS_JUDGED_AFTER property settings, the parser keeps the ends only while the pairs are
at most this share of the settings. Their rows cost the server's COPY about what they save: on
the synthetic files (0.6 pairs per setting from the first thousands on) the ends rows made the
stage step as much slower as the properties step got faster, and the parser's CPU 50% more; on
the real sample's shape (0.04 to 0.08) they save most of the window's sort."""
ENDS_PER_CHUNK: Final = 4096
"""Ends rows per chunk of COPY text (about 256 KiB)."""
LINE_BITS: Final = 31
"""A setting's place in a file packs its second above this many bits of its line number, so that
places compare as (second, line); line numbers are integers below 2^31."""
LINES: Final = (1 << LINE_BITS) - 1

End = tuple[int, int, str, int, str]
"""(first second, first place, first value, latest place, latest value), values as staged. A tuple
of atomic values, which the garbage collector stops tracking: lists made the parser's collections
walk every pair, costing more than keeping them."""
Ends = dict[tuple[str, str], End]
"""Per (identity, key), as staged (COPY-escaped)."""


def _same(value: str) -> str:
    return value


def copy_text(value: str) -> str:
    """Escape one value for COPY text format (fast when, as usual, there is nothing to escape)."""
    if _SPECIAL.search(value) is None:
        return value
    return (
        value.replace("\\", "\\\\")
        .replace("\t", "\\t")
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\x00", "")
    )


@dataclass
class StagedNames:
    """The distinct action and property names of a file, or None when there were too many."""

    actions: set[str] | None = field(default_factory=set)
    keys: set[str] | None = field(default_factory=set)

    def add(self, other: StagedNames) -> None:
        """Take in another part's names (a part that gave up on a set makes this one give up)."""
        self.actions = (
            None
            if self.actions is None or other.actions is None
            else (self.actions | other.actions)
        )
        self.keys = None if self.keys is None or other.keys is None else self.keys | other.keys
        self.bound()

    def bound(self) -> tuple[set[str] | None, set[str] | None]:
        """Give up on a set that grew past MAX_NAMES; returns both (checked once per chunk)."""
        if self.actions is not None and len(self.actions) > MAX_NAMES:
            self.actions = None
        if self.keys is not None and len(self.keys) > MAX_NAMES:
            self.keys = None
        return self.actions, self.keys


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
    names: StagedNames = field(default_factory=StagedNames)
    ends: Ends | None = field(default_factory=dict)
    """Each (identity, key)'s first and latest setting, as the server writes them from the staged
    rows (one row per identity, second and key: the line's last), for person_properties' upkeep;
    None past MAX_ENDS pairs. Latest: the greatest (second, line); first: the least second, and
    of its lines the last."""

    @property
    def parsed(self) -> int:
        """Non-blank lines: the base of the reject share."""
        return self.accepted + self.rejects

    def reject_share(self) -> float:
        return self.rejects / self.parsed if self.parsed else 0.0

    def add(self, part: StageStats) -> None:
        """Add the counts of another part of the same file (parsed elsewhere) to these."""
        self.lines = max(self.lines, part.lines)
        self.accepted += part.accepted
        self.rejects += part.rejects
        self.events += part.events
        self.property_sets += part.property_sets
        self.aliases += part.aliases
        self.properties += part.properties
        times = [t for t in (self.min_t, self.max_t, part.min_t, part.max_t) if t is not None]
        self.min_t, self.max_t = (min(times), max(times)) if times else (None, None)
        self.months |= part.months
        self.names.add(part.names)
        self.ends = _worth_keeping(_merge_ends(self.ends, part.ends), self.properties)

    def min_time(self) -> datetime | None:
        return None if self.min_t is None else datetime.fromtimestamp(self.min_t, UTC)

    def max_time(self) -> datetime | None:
        return None if self.max_t is None else datetime.fromtimestamp(self.max_t, UTC)


def _worth_keeping(ends: Ends | None, settings: int) -> Ends | None:
    """The ends, or None when there are too many pairs: past MAX_ENDS, or too many for the
    settings (see ENDS_PER_SETTING)."""
    if ends is None or len(ends) > MAX_ENDS:
        return None
    if settings > ENDS_JUDGED_AFTER and len(ends) > settings * ENDS_PER_SETTING:
        return None
    return ends


def _merge_ends(ends: Ends | None, part: Ends | None) -> Ends | None:
    """``part``'s ends taken into ``ends`` (lines of either in any order); None if either gave
    up (the caller judges the sum: :func:`_worth_keeping`)."""
    if ends is None or part is None:
        return None
    for pair, theirs in part.items():
        end = ends.get(pair)
        if end is None:
            ends[pair] = theirs
            continue
        t, place, value, last, last_value = end
        if theirs[3] > last:
            last, last_value = theirs[3], theirs[4]
        # At the same second the later line's row is the one written.
        if theirs[0] < t or (theirs[0] == t and theirs[1] > place):
            t, place, value = theirs[:3]
        ends[pair] = (t, place, value, last, last_value)
    return ends


def ends_chunks(ends: Ends | None) -> Iterator[str]:
    """The staging rows (rec n) of each pair's ends, in chunks; none when the parser gave up."""
    if not ends:
        return
    rows = (
        f"n\t{last & LINES}\t\\N\t\\N\t\\N\t{key}\t{last_value}\t\\N\n"
        if place == last
        else f"n\t{last & LINES}\t\\N\t{value}\t{t}\t{key}\t{last_value}\t{place & LINES}\n"
        for (_, key), (t, place, value, last, last_value) in ends.items()
    )
    while chunk := "".join(islice(rows, ENDS_PER_CHUNK)):
        yield chunk


def copy_export(  # noqa: PLR0912, PLR0915 - the hot loop, kept flat for speed
    raw_lines: Iterable[tuple[int, bytes]],
    latest: int,
    stats: StageStats,
    on_progress: Callable[[int], None] | None = None,
    *,
    with_ends: bool = True,
) -> Iterator[str]:
    """Parse numbered raw lines and yield COPY text in chunks of about 256 KiB, filling ``stats``.

    The usual line goes from :func:`export.parse_usual` straight to its rows; any other goes
    through :func:`export.parse_line`, and both are written by the same code. Memory is bounded
    by one chunk (and the pairs' ends, see MAX_ENDS), whatever the file's size. The ends rows come
    last (``with_ends`` False: kept in ``stats`` only, for a caller that merges parts). Lines
    come in line number order, which the ends rely on: a pair's later setting is the later line.
    """
    esc = copy_text
    usual = parse_usual
    buffer: list[str] = []
    size = reported = 0
    # Counters are locals in the loop (attribute updates per line cost), saved per chunk.
    lines = accepted = rejects = events = property_sets = aliases = properties = 0
    min_t = max_t = None
    months = stats.months
    names = stats.names
    action_names, key_names = names.actions, names.keys
    ends = stats.ends
    days_seen: set[int] = set()

    def save() -> None:
        stats.lines, stats.accepted, stats.rejects = lines, accepted, rejects
        stats.events, stats.property_sets, stats.aliases = events, property_sets, aliases
        stats.properties, stats.min_t, stats.max_t = properties, min_t, max_t

    for lineno, raw in raw_lines:
        fields = usual(raw, latest)
        plain = True
        alias = None
        if fields is None:
            item = parse_line(lineno, raw, latest)
            if item is None:  # blank
                continue
            if isinstance(item, Reject):
                lines = lineno
                rejects += 1
                row = f"r\t{lineno}\t\\N\t\\N\t\\N\t{esc(item.reason)}\t{esc(item.raw)}\t\\N\n"
                buffer.append(row)
                size += len(row)
                continue
            plain, alias = item.plain, item.alias
            fields = (item.person, item.t, item.name, dict(item.properties))
        lines = lineno
        accepted += 1
        person, t, name, pairs = fields
        if min_t is None or t < min_t:
            min_t = t
        if max_t is None or t > max_t:
            max_t = t
        day = t // 86400
        if day not in days_seen:
            days_seen.add(day)
            moment = datetime.fromtimestamp(day * 86400, UTC)
            months.add((moment.year, moment.month))
        # A plain line has nothing to escape (see Line.plain): skip the work.
        e = _same if plain else esc
        person = e(person)
        if alias is not None:
            aliases += 1
            row = f"a\t{lineno}\t{person}\t{e(alias)}\t{t}\t\\N\t\\N\t\\N\n"
        else:
            if name is not None:
                events += 1
                if action_names is not None:
                    action_names.add(name)
                row = f"e\t{lineno}\t{person}\t\\N\t{t}\t{e(name)}\t\\N\t\\N\n"
            else:
                property_sets += 1
                row = f"p\t{lineno}\t{person}\t\\N\t{t}\t\\N\t\\N\t\\N\n"
            if pairs:
                properties += len(pairs)
                if key_names is not None:
                    key_names.update(pairs)
                items: Iterable[tuple[str, str]] = (
                    pairs.items() if plain else [(esc(k), esc(v)) for k, v in pairs.items()]
                )
                # A property row names its line, whose row holds the identity, time and action.
                prefix = f"k\t{lineno}\t\\N\t\\N\t\\N\t"
                suffix = "\t\\N\n"
                row += "".join([f"{prefix}{key}\t{value}{suffix}" for key, value in items])
                if ends is not None:
                    # _merge_ends' rule, inlined (the hot loop), where lines come in order.
                    place = (t << LINE_BITS) | lineno
                    for key, value in items:
                        pair = (person, key)
                        end = ends.get(pair)
                        if end is None:
                            ends[pair] = (t, place, value, place, value)
                            continue
                        first_t, first_place, first_value, last, last_value = end
                        if place > last:
                            last, last_value = place, value
                        if t <= first_t:  # the same second: this later line's row is written
                            first_t, first_place, first_value = t, place, value
                        ends[pair] = (first_t, first_place, first_value, last, last_value)
        buffer.append(row)
        size += len(row)
        if size >= CHUNK_CHARS:
            save()
            action_names, key_names = names.bound()
            stats.ends = ends = _worth_keeping(ends, properties)
            yield "".join(buffer)
            buffer.clear()
            size = 0
            if on_progress is not None:
                on_progress(lines - reported)
                reported = lines
    save()
    names.bound()
    stats.ends = ends = _worth_keeping(ends, properties)
    if buffer:
        yield "".join(buffer)
    if with_ends:
        yield from ends_chunks(ends)
    if on_progress is not None and lines > reported:
        on_progress(lines - reported)


class GuardedStream:
    """Wraps a chunk iterator so an error while reading stops the COPY cleanly.

    pg8000 cannot abort a COPY from the client side; an exception raised inside its loop would
    leave the connection mid-protocol. So the error is kept, the COPY ends, and the caller rolls
    back and re-raises it.
    """

    def __init__(self, chunks: Iterator[str | bytes]) -> None:
        self._chunks = chunks
        self.error: BaseException | None = None

    def __iter__(self) -> Iterator[str | bytes]:
        try:
            yield from self._chunks
        except Exception as error:  # re-raised by the caller after the COPY ends
            self.error = error
