"""Load many files: one after another on one connection, or N at once in N processes.

A file that fails (bad data, unreadable) is recorded and the others go on. Losing the database
stops the run: every later file would fail the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import replace
from typing import Any

from km2pg import db
from km2pg.dsn import ConnectionSettings
from km2pg.errors import DatabaseUnavailable, SourceError
from km2pg.load import (
    LoadOptions,
    LoadResult,
    Lookahead,
    load_file,
    prepare_connection,
    record_failure,
)
from km2pg.sources import ExportFile


def load_files(
    settings: ConnectionSettings,
    files: Iterable[ExportFile],
    *,
    jobs: int = 1,
    options: LoadOptions | None = None,
) -> Iterator[LoadResult]:
    """Load files, yielding each result as it finishes (in completion order when ``jobs > 1``)."""
    options = options or LoadOptions()
    if jobs <= 1:
        yield from _serial(settings, files, options)
    else:
        yield from _parallel(settings, list(files), jobs, replace(options, on_progress=None))


def _serial(
    settings: ConnectionSettings, files: Iterable[ExportFile], options: LoadOptions
) -> Iterator[LoadResult]:
    with db.connection(settings) as con, Lookahead() as lookahead:
        prepare_connection(con, options)
        queue = iter(files)
        file = next(queue, None)
        while file is not None:
            # Each file's load parses the next one while the server applies it.
            following = next(queue, None)
            yield _load_one(con, file, options, lookahead, following)
            file = following


def _load_one(
    con: db.Connection,
    file: ExportFile,
    options: LoadOptions,
    lookahead: Lookahead | None = None,
    following: ExportFile | None = None,
) -> LoadResult:
    try:
        return load_file(con, file, options, lookahead=lookahead, next_file=following)
    except DatabaseUnavailable as error:
        # It stops the run: say which file it cut short (nothing of it is left behind).
        raise type(error)(f"{error} (while loading {file.label})") from error
    except SourceError as error:
        record_failure(con, file, error)
        return LoadResult(
            label=file.label, export_key=file.export_key, status="failed", error=str(error)
        )


# ---------------------------------------------------------------------------------------------
# Several processes: parsing is CPU-bound Python, so threads would share one core.

_worker: dict[str, Any] = {}


def _init_worker(settings: ConnectionSettings, options: LoadOptions) -> None:
    con = db.connect(settings)
    prepare_connection(con, options)
    _worker["con"], _worker["options"] = con, options


def _worker_load(file: ExportFile) -> LoadResult:
    return _load_one(_worker["con"], file, _worker["options"])


def _parallel(
    settings: ConnectionSettings, files: list[ExportFile], jobs: int, options: LoadOptions
) -> Iterator[LoadResult]:
    # Migrate once up front, so workers do not queue on the migration lock.
    with db.connection(settings) as con:
        db.ensure_schema(con)
    pending: set[Future[LoadResult]] = set()
    queue = iter(files)
    with ProcessPoolExecutor(
        max_workers=jobs, initializer=_init_worker, initargs=(settings, options)
    ) as pool:
        try:
            for file in queue:
                pending.add(pool.submit(_worker_load, file))
                if len(pending) >= jobs * 2:
                    break
            while pending:
                done, pending = _wait_some(pending)
                for future in done:
                    yield future.result()
                    nxt = next(queue, None)
                    if nxt is not None:
                        pending.add(pool.submit(_worker_load, nxt))
        except BaseException:
            for future in pending:
                future.cancel()
            raise


def _wait_some(
    pending: set[Future[LoadResult]],
) -> tuple[set[Future[LoadResult]], set[Future[LoadResult]]]:
    done, rest = wait(pending, return_when=FIRST_COMPLETED)
    return set(done), set(rest)
