"""Many loaders at once, and any order of loads: the same database as one serial load."""

from __future__ import annotations

import random

from km2pg import db
from tests.conftest import create_database, drop_database
from tests.faults.support import Reference
from tests.helpers import dump_differences, dump_of, load_serially, run_loaders
from tests.oracle import oracle_dump_of_paths

LOADERS = 8


def test_the_clean_serial_load_every_fault_test_compares_with_matches_the_oracle(
    reference: Reference,
):
    want = oracle_dump_of_paths(reference.files)
    assert reference.dump == want, dump_differences(reference.dump, want)


def test_eight_concurrent_loaders_on_overlapping_files_never_deadlock_and_match_a_serial_load(
    pg_admin, template_database, reference: Reference, tmp_path
):
    """Eight processes start loading at the same moment, each its own shuffled share of the
    files; every file is in several shares, and the files share identities, aliases and times
    (two are byte copies of others). None fails (no deadlock, no unique violation), each file
    is loaded exactly once, and the dump is a serial load's."""
    files = reference.files
    rng = random.Random(8)
    shares = [rng.sample(files, k=len(files) * 2 // 3) for _ in range(LOADERS)]
    assert all(sum(f in share for share in shares) >= 2 for f in files)
    settings = create_database(pg_admin, template_database)
    try:
        run_loaders(settings, shares, tmp_path / "reports")
        assert dump_of(settings) == reference.dump
        with db.connection(settings) as con:
            statuses = dict(db.rows(con, "select status, count(*) from km2pg.files group by 1"))
        assert statuses == {"loaded": len(files), "skipped": sum(map(len, shares)) - len(files)}
    finally:
        drop_database(pg_admin, settings)


def test_every_file_loaded_twice_in_two_shuffled_orders_into_two_databases_gives_identical_dumps(
    pg_admin, template_database, reference: Reference
):
    """Each file of the export twice, in one shuffled order into one database and in another
    into a second: the two canonical dumps are identical, and equal a serial load's."""
    orders = []
    for seed in (1, 2):
        order = reference.files * 2
        random.Random(seed).shuffle(order)
        orders.append(order)
    assert orders[0] != orders[1]
    databases = [create_database(pg_admin, template_database) for _ in orders]
    try:
        dumps = []
        for settings, order in zip(databases, orders, strict=True):
            load_serially(settings, order)
            dumps.append(dump_of(settings))
            with db.connection(settings) as con:
                statuses = dict(db.rows(con, "select status, count(*) from km2pg.files group by 1"))
            assert statuses == {"loaded": len(reference.files), "skipped": len(reference.files)}
        assert dumps[0] == dumps[1]
        assert dumps[0] == reference.dump
    finally:
        for settings in databases:
            drop_database(pg_admin, settings)
