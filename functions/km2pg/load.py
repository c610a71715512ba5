"""Load one export file: stream it into staging, then apply it in one all-or-nothing transaction.

The steps, and why:
1. Recognize a file already loaded (same export key and content) without parsing it, when its
   content hash is cheap to know (a local file, or an S3 ETag): ``skipped``.
2. Parse and COPY the whole file into a temporary staging table (one streaming pass; memory is
   bounded by a chunk, not the file). A file parsed ahead while the previous one was applied
   (see :mod:`km2pg.lookahead`) is COPYed from its spool.
3. Too many rejects: ledger ``failed`` with the reason; nothing is loaded.
4. Create the months' partitions the file needs, in a short transaction of its own.
5. One transaction: dictionaries, events, actions, properties, aliases, the ledger row and the
   rejects, then the identity merge and person_properties' upkeep. A crash anywhere leaves
   nothing behind.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Final

from pg8000.exceptions import DatabaseError, InterfaceError

from km2pg import db, store
from km2pg.db import Connection
from km2pg.errors import DatabaseUnavailable, Km2pgError
from km2pg.export import FUTURE_SLACK_SECONDS, iter_raw_lines
from km2pg.lookahead import Ahead, Lookahead
from km2pg.parse_worker import copy_export_parallel
from km2pg.sources import READ_ERRORS, ContentStream, ExportFile, content_md5, read_error
from km2pg.staging import GuardedStream, StageStats, copy_export

DEFAULT_MAX_REJECT_SHARE: Final = 0.10
PARSE_IN_WORKERS_MIN_BYTES: Final = 16 * 1024 * 1024
"""Files from this size up are parsed by worker processes when allowed (smaller ones are parsed
faster than workers start)."""
_PARTITION_RACE_RETRIES: Final = 3


@dataclass(frozen=True)
class LoadOptions:
    max_reject_share: float = DEFAULT_MAX_REJECT_SHARE
    statement_timeout_ms: int | None = None
    parse_in_workers: bool = False
    """Parse large files in worker processes (a CLI on a machine with cores to spare; not a
    Lambda function, whose share of a CPU more processes would only split)."""
    on_progress: Callable[[int], None] | None = field(default=None, compare=False)
    person_properties: bool = True
    """A benchmark's switch, never off in use: False leaves out person_properties' upkeep (the
    table is then wrong), so that ``make bench`` shows the load with and without it."""


@dataclass(frozen=True, kw_only=True)
class LoadResult(store.RowCounts):
    """What happened to one file, with the rows it added. ``status`` is ``loaded``, ``skipped``
    or ``failed``."""

    label: str
    export_key: str
    status: str
    fileid: int | None = None
    seconds: float = 0.0
    error: str | None = None
    bytes: int = 0
    timings: dict[str, float] = field(default_factory=dict, compare=False)

    @property
    def failed(self) -> bool:
        return self.status == "failed"


def prepare_connection(con: Connection, options: LoadOptions | None = None) -> None:
    """Once per connection: the schema is current, the staging table exists."""
    db.ensure_schema(con)
    store.setup_session(con)
    timeout = options.statement_timeout_ms if options else None
    if timeout:
        con.run(f"SET statement_timeout = {int(timeout)}")


def load_file(
    con: Connection,
    file: ExportFile,
    options: LoadOptions | None = None,
    *,
    lookahead: Lookahead | None = None,
    next_file: ExportFile | None = None,
) -> LoadResult:
    """Load one export file exactly once. Data problems give a ``failed`` result; a lost or
    refused database raises :class:`DatabaseUnavailable`; an unreadable source raises
    :class:`SourceError`.

    A loader that loads files one after another passes its ``lookahead`` and the ``next_file``
    it will load: that file is then parsed in a thread while the server applies this one, and
    its own load takes it from there (see :mod:`km2pg.lookahead`).
    """
    options = options or LoadOptions()
    started = time.monotonic()
    entry = store.LedgerEntry.for_file(file)
    ahead = lookahead.take(file) if lookahead is not None else None
    try:
        return _load(con, file, entry, options, started, ahead, _Next(lookahead, next_file))
    except (DatabaseError, InterfaceError, OSError) as error:
        db.rollback_quietly(con)
        raise db.translate(error, con=con) from error
    finally:
        if ahead is not None:
            ahead.close()


@dataclass(frozen=True)
class _Next:
    """The file a serial loader loads next, and where to parse it ahead."""

    lookahead: Lookahead | None
    file: ExportFile | None

    def start(self, con: Connection, options: LoadOptions) -> None:
        """Parse the next file ahead, unless it looks like a reload (then its turn decides
        without parsing) or its turn would parse it in worker processes."""
        file = self.file
        if self.lookahead is None or file is None or _parse_in_workers(file, options):
            return
        md5 = file.known_md5
        if md5 is not None and store.loaded_fileid(con, file.export_key, md5) is not None:
            return
        if md5 is None and file.local and store.was_loaded(con, file.export_key):
            return
        self.lookahead.start(file, int(time.time()) + FUTURE_SLACK_SECONDS)


def _load(
    con: Connection,
    file: ExportFile,
    entry: store.LedgerEntry,
    options: LoadOptions,
    started: float,
    ahead: Ahead | None,
    following: _Next,
) -> LoadResult:
    md5 = file.known_md5
    if md5 is None and file.local and store.was_loaded(con, file.export_key):
        # Worth a read of its own only when it may be a reload: a new file is hashed as parsed.
        md5 = content_md5(file)
    if md5 is not None:
        entry = replace(entry, content_md5=md5)
        if store.loaded_fileid(con, file.export_key, md5) is not None:
            return _skip(con, file, entry, started)

    timings: dict[str, float] = {"hash": time.monotonic() - started}
    if ahead is not None:
        stats = ahead.stats
        _stage(con, file, ahead.chunks(options.on_progress))
        content = ahead.content_read()
    else:
        stats = StageStats()
        latest = int(time.time()) + FUTURE_SLACK_SECONDS
        with ContentStream(file) as stream:
            parse = copy_export_parallel if _parse_in_workers(file, options) else copy_export
            lines = iter_raw_lines(stream.stream)
            _stage(con, file, parse(lines, latest, stats, options.on_progress))
            content = stream
    entry = replace(entry, content_md5=content.md5, size=file.size or content.bytes_read)
    timings["stage"] = time.monotonic() - started - timings["hash"]

    try:
        # While the server applies this file, the next one is parsed.
        following.start(con, options)
        if md5 is None and store.loaded_fileid(con, file.export_key, content.md5) is not None:
            return _skip(con, file, entry, started, stats)

        if stats.rejects and stats.reject_share() > options.max_reject_share:
            reason = (
                f"{stats.rejects} of {stats.parsed} lines rejected "
                f"({stats.reject_share():.1%}, over the {options.max_reject_share:.0%} limit)"
            )
            return _fail(con, file, entry, stats, reason, started)

        return _apply(con, file, entry, stats, started, timings, options.person_properties)
    finally:
        store.clear_stage(con)


def _stage(con: Connection, file: ExportFile, chunks: Iterator[str | bytes]) -> None:
    """COPY a file's chunks into the staging table; an error met reading them is raised after
    the COPY ends (see GuardedStream)."""
    guarded = GuardedStream(chunks)
    with db.transaction(con):
        store.stage(con, guarded)
        if isinstance(guarded.error, READ_ERRORS):
            raise read_error(file, guarded.error)
        if guarded.error is not None:
            raise guarded.error


def _parse_in_workers(file: ExportFile, options: LoadOptions) -> bool:
    return options.parse_in_workers and (file.size or 0) >= PARSE_IN_WORKERS_MIN_BYTES


def _apply(
    con: Connection,
    file: ExportFile,
    entry: store.LedgerEntry,
    stats: StageStats,
    started: float,
    timings: dict[str, float],
    person_properties: bool = True,
) -> LoadResult:
    for _attempt in range(_PARTITION_RACE_RETRIES):
        store.create_partitions(con, store.missing_partitions(con, stats.months))
        try:
            with db.transaction(con):
                store.lock_for_load(con, file.export_key)
                if store.missing_partitions(con, stats.months):
                    # Pruned between creating and locking: roll back and create them again.
                    raise _PartitionsGone
                if store.loaded_fileid(con, file.export_key, entry.content_md5 or "") is not None:
                    # Another loader finished the same file while we parsed it.
                    raise _AlreadyLoaded
                # Asked under the load's lock: a forget that committed first is seen.
                suppressing = store.suppressions_exist(con)
                rejects_gone = store.suppress_rejects(con) if suppressing else 0
                added = store.insert_facts(
                    con,
                    file.revision,
                    stats.names,
                    timings,
                    suppress=suppressing,
                    keep_settings=person_properties,
                    ends_staged=stats.ends is not None,
                )
                counts = _counts(stats, added, rejects_gone)
                fileid = store.record(con, entry, "loaded", counts)
                store.keep_rejects(con, fileid)
                store.update_people(
                    con,
                    file.revision,
                    added,
                    aliases=bool(stats.aliases),
                    timings=timings,
                    person_properties=person_properties,
                )
                mark = time.monotonic()
        except _PartitionsGone:
            continue
        except _AlreadyLoaded:
            return _skip(con, file, entry, started, stats)
        timings["commit"] = time.monotonic() - mark
        return _result(file, "loaded", fileid, counts, started, entry.size, timings=timings)
    raise DatabaseUnavailable("month partitions kept disappearing during the load (pruning?)")


class _PartitionsGone(Exception):
    pass


class _AlreadyLoaded(Exception):
    pass


def _skip(
    con: Connection,
    file: ExportFile,
    entry: store.LedgerEntry,
    started: float,
    stats: StageStats | None = None,
) -> LoadResult:
    counts = store.RowCounts(lines=stats.lines if stats else 0)
    with db.transaction(con):
        fileid = store.record(con, entry, "skipped", counts)
    return _result(file, "skipped", fileid, counts, started, entry.size)


def _fail(
    con: Connection,
    file: ExportFile,
    entry: store.LedgerEntry,
    stats: StageStats,
    reason: str,
    started: float,
) -> LoadResult:
    with db.transaction(con):
        rejects_gone = store.suppress_rejects(con) if store.suppressions_exist(con) else 0
        counts = _counts(stats, store.RowCounts(), rejects_gone)
        fileid = store.record(con, entry, "failed", counts, error=reason)
        store.keep_rejects(con, fileid, limit=store.MAX_FAILED_REJECTS)
    return _result(file, "failed", fileid, counts, started, entry.size, error=reason)


def record_failure(con: Connection, file: ExportFile, error: Km2pgError) -> None:
    """Best effort: note a file that failed for a reason other than its data (unreadable...)."""
    entry = store.LedgerEntry.for_file(file)
    try:
        with db.transaction(con):
            store.record(con, entry, "failed", store.RowCounts(), error=str(error))
    except (DatabaseError, InterfaceError, OSError):
        pass


def _counts(stats: StageStats, added: store.RowCounts, rejects_gone: int = 0) -> store.RowCounts:
    """The ledger's counts; rejected lines of forgotten identities count as suppressed."""
    return store.RowCounts(
        lines=stats.lines,
        events=added.events,
        actions=added.actions,
        properties=added.properties,
        aliases=added.aliases,
        rejects=stats.rejects - rejects_gone,
        suppressed=added.suppressed + rejects_gone,
        min_t=stats.min_time(),
        max_t=stats.max_time(),
    )


def _result(
    file: ExportFile,
    status: str,
    fileid: int,
    counts: store.RowCounts,
    started: float,
    size: int | None,
    error: str | None = None,
    timings: dict[str, float] | None = None,
) -> LoadResult:
    return LoadResult(
        label=file.label,
        export_key=file.export_key,
        status=status,
        fileid=fileid,
        **asdict(counts),
        seconds=time.monotonic() - started,
        error=error,
        bytes=size or 0,
        timings=timings or {},
    )


__all__ = ["LoadOptions", "LoadResult", "Lookahead", "load_file", "prepare_connection"]
