"""person_properties' upkeep under concurrency: which loads share the alias lock, which wait.

A load that only folds its own settings in (no alias lines, no stored property met) takes the
alias lock shared, so such loads run at once; a load that merges persons or repairs a first
setting takes it alone and waits for the folds in flight (and they for it). Whatever the
interleaving, person_property_state equals its full recomputation.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from km2pg import db, load
from km2pg.dsn import ConnectionSettings
from km2pg.sources import local_file
from tests import citus_cluster
from tests.conftest import create_database, drop_database
from tests.helpers import (
    LoadThread,
    dump_of,
    load_serially,
    lock_waiters_reach,
    person_properties_drift,
    run_loaders,
    write_export,
)

NOW = int(time.time())
KEYS = ("plan", "campaign source", "n")


@pytest.fixture
def fold_in_flight(database: ConnectionSettings) -> Iterator[db.Connection]:
    """A connection for holding the alias lock the way a loader that only folds does (shared),
    in an open transaction: :func:`_hold_like_a_fold` takes it once the test is ready."""
    con = db.connect(database)
    yield con
    db.close_quietly(con)


def _hold_like_a_fold(con: db.Connection) -> None:
    con.run("BEGIN")
    con.run(
        "SELECT pg_advisory_xact_lock_shared(:ns, :key)", ns=db.LOCK_NAMESPACE, key=db.LOCK_ALIASES
    )


def _settings_lines(names: list[str], first_second: int, count: int, seed: int) -> list[Any]:
    """Property sets and events of ``names``, one a second from ``first_second``."""
    pick = random.Random(seed)
    lines: list[dict[str, Any]] = []
    for n in range(count):
        line: dict[str, Any] = {"_p": pick.choice(names), "_t": first_second + n}
        if pick.random() < 0.5:
            line["_n"] = pick.choice(("viewed page", "signed up"))
        for key in pick.sample(KEYS, pick.randint(1, len(KEYS))):
            line[key] = str(pick.randint(1, 5))
        lines.append(line)
    return lines


@citus_cluster.single_node(
    "on Citus every load takes the alias lock alone before its first write (store.py,"
    " _lock_writes_on_citus), so no two loads fold at once there"
)
def test_a_load_that_only_folds_runs_beside_another_fold(database, fold_in_flight, tmp_path):
    path = write_export(tmp_path, 1, _settings_lines(["ann", "bob"], NOW - 1000, 50, seed=1))
    _hold_like_a_fold(fold_in_flight)
    loader = LoadThread(database, path)
    loader.start()
    loader.join(timeout=60)
    assert (loader.status, loader.error) == ("loaded", None)
    with db.connection(database) as con:
        assert person_properties_drift(con) == 0
        assert db.scalar(con, "SELECT count(*) FROM km2pg.person_property_state") > 0


@pytest.mark.parametrize("why", ["aliases", "stored properties met"])
def test_a_load_that_merges_or_repairs_waits_for_the_folds_in_flight(
    database, fold_in_flight, tmp_path, why
):
    lines = _settings_lines(["ann", "bob"], NOW - 1000, 50, seed=2)
    if why == "aliases":
        lines.append({"_p": "ann", "_p2": "bob", "_t": NOW - 500})
        path = write_export(tmp_path, 1, lines)
    else:
        # The same lines under another export key, then this one with every value changed: it
        # replaces stored settings (a greater revision), so its load repairs first settings.
        load_serially(database, [write_export(tmp_path / "before", 1, lines)])
        changed = [{**line, **{k: f"{line[k]}!" for k in KEYS if k in line}} for line in lines]
        path = write_export(tmp_path / "after", 2, changed)
    _hold_like_a_fold(fold_in_flight)
    loader = LoadThread(database, path)
    loader.start()
    assert lock_waiters_reach(database, "advisory")
    assert loader.status is None
    fold_in_flight.run("COMMIT")
    loader.join(timeout=60)
    assert (loader.status, loader.error) == ("loaded", None)
    with db.connection(database) as con:
        assert person_properties_drift(con) == 0


@pytest.fixture(scope="module")
def shared_people_export(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Twelve files without alias lines, each with its own seconds (no event in two files), all
    setting the same few keys of the same few identities: every load only folds, and loads at
    once meet each other's person_properties rows."""
    folder = tmp_path_factory.mktemp("shared_people")
    names = [f"person-{n}" for n in range(8)]
    return [
        write_export(folder, 100 + n, _settings_lines(names, NOW - 100_000 + n * 1000, 400, n))
        for n in range(12)
    ]


@pytest.mark.parametrize("seed", [1, 2])
def test_loads_that_fold_at_once_equal_a_serial_load(
    pg_admin, template_database, shared_people_export, tmp_path, seed
):
    serial = create_database(pg_admin, template_database)
    concurrent = create_database(pg_admin, template_database)
    try:
        load_serially(serial, shared_people_export)
        files = list(shared_people_export)
        random.Random(seed).shuffle(files)
        run_loaders(concurrent, [files[n::4] for n in range(4)], tmp_path / "reports")
        # dump_of checks person_property_state against its full recomputation, too.
        assert dump_of(concurrent) == dump_of(serial)
    finally:
        drop_database(pg_admin, serial)
        drop_database(pg_admin, concurrent)


def test_the_benchmark_switch_leaves_person_properties_out(con, tmp_path):
    path = write_export(tmp_path, 1, _settings_lines(["ann"], NOW - 1000, 20, seed=3))
    result = load.load_file(con, local_file(path), load.LoadOptions(person_properties=False))
    assert result.status == "loaded"
    assert result.properties > 0
    assert db.scalar(con, "SELECT count(*) FROM km2pg.person_property_state") == 0
    assert "person_properties" not in result.timings
