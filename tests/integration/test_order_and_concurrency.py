"""Any files, in any order, by any number of loaders at once: the same database."""

from __future__ import annotations

import multiprocessing
import random
import traceback
from pathlib import Path

import pytest

from km2pg import db, load
from km2pg.dsn import ConnectionSettings
from km2pg.sources import discover_local, local_file
from km2pg.synth import generate_export
from tests.conftest import create_database, drop_database
from tests.helpers import canonical_dump, check_invariants


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A messy export of 12 files whose identities, aliases and times overlap, plus copies of
    two files (a line repeated in another file counts once)."""
    folder = tmp_path_factory.mktemp("export")
    generate_export(folder, lines=24_000, files=12, seed=11, messy=True, days=45)
    files = [Path(f.path) for f in discover_local(folder)]
    # The same lines again under other export keys: they must not double anything.
    dup = folder / "copies" / "revisions"
    dup.mkdir(parents=True)
    for n, path in enumerate(files[:2]):
        target = dup / f"{90000 + n}.json"
        target.write_bytes(path.read_bytes())
        files.append(target)
    return files


def load_serially(settings: ConnectionSettings, files: list[Path]) -> None:
    with db.connection(settings) as con:
        load.prepare_connection(con)
        for path in files:
            assert load.load_file(con, local_file(path)).status in ("loaded", "skipped")


def dump_of(settings: ConnectionSettings) -> dict[str, list[tuple[object, ...]]]:
    with db.connection(settings) as con:
        check_invariants(con)
        return canonical_dump(con)


@pytest.fixture(scope="module")
def serial_dump(pg_admin, template_database, export):
    settings = create_database(pg_admin, template_database)
    try:
        load_serially(settings, export)
        return dump_of(settings)
    finally:
        drop_database(pg_admin, settings)


@pytest.mark.parametrize("seed", [1, 2])
def test_shuffled_loads_give_the_same_canonical_dump(
    pg_admin, template_database, export, serial_dump, seed
):
    files = list(export)
    random.Random(seed).shuffle(files)
    settings = create_database(pg_admin, template_database)
    try:
        load_serially(settings, files)
        assert dump_of(settings) == serial_dump
    finally:
        drop_database(pg_admin, settings)


def test_every_file_loaded_twice_in_two_orders_gives_the_same_dump(
    pg_admin, template_database, export, serial_dump
):
    files = list(export) + list(reversed(export))
    settings = create_database(pg_admin, template_database)
    try:
        load_serially(settings, files)
        assert dump_of(settings) == serial_dump
        with db.connection(settings) as con:
            statuses = dict(db.rows(con, "select status, count(*) from km2pg.files group by 1"))
        assert statuses == {"loaded": len(export), "skipped": len(export)}
    finally:
        drop_database(pg_admin, settings)


def _worker(settings: ConnectionSettings, paths: list[str], seed: int, report: str) -> None:
    try:
        _load_shuffled(settings, paths, seed)
    except BaseException:
        # Leave the reason where the test can show it (a child's stderr is easily lost).
        Path(report).write_text(traceback.format_exc())
        raise


def _load_shuffled(settings: ConnectionSettings, paths: list[str], seed: int) -> None:
    files = list(paths)
    random.Random(seed).shuffle(files)
    with db.connection(settings) as con:
        load.prepare_connection(con)
        for path in files:
            result = load.load_file(con, local_file(Path(path)))
            if result.status not in ("loaded", "skipped"):
                raise AssertionError(f"{path}: {result.status} {result.error}")


def test_concurrent_loaders_on_overlapping_files_never_deadlock_and_match_a_serial_load(
    pg_admin, template_database, export, serial_dump, tmp_path
):
    settings = create_database(pg_admin, template_database)
    try:
        paths = [str(p) for p in export]
        # Four processes; every file is loaded by at least two of them, in different orders.
        shares = [paths[0::2] + paths[1::3], paths[1::2] + paths[0::3], paths, paths[::-1]]
        context = multiprocessing.get_context("spawn")
        workers = [
            context.Process(
                target=_worker, args=(settings, share, seed, str(tmp_path / f"worker{seed}.txt"))
            )
            for seed, share in enumerate(shares)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=300)
        reports = [p.read_text() for p in sorted(tmp_path.glob("worker*.txt"))]
        assert [w.exitcode for w in workers] == [0] * len(workers), "\n".join(reports)
        assert dump_of(settings) == serial_dump
        with db.connection(settings) as con:
            loaded = db.scalar(con, "select count(*) from km2pg.files where status = 'loaded'")
        assert loaded == len(export)
    finally:
        drop_database(pg_admin, settings)
