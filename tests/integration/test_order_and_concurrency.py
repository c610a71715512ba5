"""Any files, in any order, by any number of loaders at once: the same database."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from km2pg import db
from tests.conftest import create_database, drop_database
from tests.helpers import (
    dump_differences,
    dump_of,
    load_serially,
    overlapping_export,
    run_loaders,
)
from tests.oracle import oracle_dump_of_paths


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A messy export of 12 files whose identities, aliases and times overlap, plus copies of
    two files (a line repeated in another file counts once)."""
    return overlapping_export(
        tmp_path_factory.mktemp("export"), lines=24_000, files=12, seed=11, copies=2
    )


@pytest.fixture(scope="module")
def serial_dump(pg_admin, template_database, export):
    settings = create_database(pg_admin, template_database)
    try:
        load_serially(settings, export)
        return dump_of(settings)
    finally:
        drop_database(pg_admin, settings)


def test_a_serial_load_matches_the_independent_oracle(export, serial_dump):
    """The reference every test here compares with is itself right."""
    want = oracle_dump_of_paths(export)
    assert serial_dump == want, dump_differences(serial_dump, want)


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


def test_concurrent_loaders_on_overlapping_files_never_deadlock_and_match_a_serial_load(
    pg_admin, template_database, export, serial_dump, tmp_path
):
    settings = create_database(pg_admin, template_database)
    try:
        # Four processes; every file is loaded by at least two of them, in different orders.
        shares = [export[0::2] + export[1::3], export[1::2] + export[0::3], export, export[::-1]]
        run_loaders(settings, shares, tmp_path / "reports")
        assert dump_of(settings) == serial_dump
        with db.connection(settings) as con:
            loaded = db.scalar(con, "select count(*) from km2pg.files where status = 'loaded'")
        assert loaded == len(export)
    finally:
        drop_database(pg_admin, settings)
