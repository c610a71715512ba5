"""Loading files from the command line: a progress bar while they load, a summary after."""

from __future__ import annotations

import os
import sys

from km2pg import sources
from km2pg.cli.progress import Progress
from km2pg.cli.runner import load_files
from km2pg.dsn import ConnectionSettings
from km2pg.load import DEFAULT_MAX_REJECT_SHARE, LoadOptions, LoadResult


def load_with_progress(
    settings: ConnectionSettings,
    files: list[sources.ExportFile],
    *,
    jobs: int = 1,
    max_reject_share: float = DEFAULT_MAX_REJECT_SHARE,
    quiet: bool = False,
) -> list[LoadResult]:
    progress = Progress(len(files), enabled=False if quiet else None)
    # One process reports lines as they stream; worker processes report per file.
    # With one file at a time and cores to spare, a large file is parsed by worker processes.
    options = LoadOptions(
        max_reject_share=max_reject_share,
        on_progress=progress.add_lines,
        parse_in_workers=jobs == 1 and (os.cpu_count() or 1) >= 2,
    )
    results: list[LoadResult] = []
    try:
        for result in load_files(settings, files, jobs=jobs, options=options):
            progress.file_done(result.lines if jobs > 1 else 0)
            results.append(result)
            if result.failed:
                _say(progress, f"failed: {result.label}: {result.error}")
    finally:
        progress.close()
    if not quiet:
        print(summary(results, progress.elapsed))
    return results


def _say(progress: Progress, message: str) -> None:
    if progress.enabled:
        progress.stream.write("\r\033[K")
    print(f"km2pg: {message}", file=sys.stderr)


def summary(results: list[LoadResult], seconds: float) -> str:
    counts = {
        state: sum(r.status == state for r in results) for state in ("loaded", "skipped", "failed")
    }
    loaded = [r for r in results if r.status == "loaded"]
    lines = sum(r.lines for r in loaded)
    rejects = sum(r.rejects for r in results if r.status != "skipped")
    rate = lines / seconds if seconds > 0 else 0.0
    return (
        f"{counts['loaded']} loaded, {counts['skipped']} skipped, {counts['failed']} failed; "
        f"{lines:,} lines ({rejects:,} rejected), "
        f"{sum(r.events for r in loaded):,} new events in {seconds:.1f} s ({rate:,.0f} lines/s)"
    )
