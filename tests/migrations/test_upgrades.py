"""Schema migrations: every earlier version, with data, upgrades to the current one with nothing
lost. The versions come from the migrations themselves; see README.md here."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from km2pg import db
from km2pg.dsn import ConnectionSettings
from tests.helpers import canonical_dump, check_invariants
from tests.migrations import harness, make_seed


@pytest.mark.parametrize("start", harness.start_versions(), ids=harness.version_label)
def test_a_database_at_each_schema_version_upgrades_to_the_current_one_with_nothing_lost(
    pg_admin: ConnectionSettings, tmp_path: Path, start: int
) -> None:
    harness.check_upgrade(pg_admin, start, tmp_path)


def test_every_schema_version_has_a_seed_and_every_seed_a_schema_version() -> None:
    assert harness.seed_versions() == harness.start_versions()[1:], (
        f"each schema version needs tests/migrations/seeds/vNNNN.sql: `{harness.MAKE_SEED}`"
    )


@pytest.fixture
def seeded(pg_admin: ConnectionSettings) -> Iterator[db.Connection]:
    """A database at the current version holding the current version's seed."""
    with harness.scratch_database(pg_admin) as settings, db.connection(settings) as con:
        harness.seed_database(con, harness.current_version())
        yield con


def test_the_newest_seed_holds_what_the_current_loader_makes_of_the_seed_recipe(
    pg_admin: ConnectionSettings, seeded: db.Connection, tmp_path: Path
) -> None:
    check_invariants(seeded)
    with harness.scratch_database(pg_admin) as settings, db.connection(settings) as con:
        db.migrate(con)
        results = make_seed.load_recipe(con, tmp_path)
        assert [r.status for r in results] == ["loaded"] * 3 + ["skipped", "failed", "loaded"]
        assert canonical_dump(seeded) == canonical_dump(con), (
            "the newest seed is not what the current loader makes of its recipe; if the loader "
            f"or synth changed on purpose, regenerate it: `{harness.MAKE_SEED} --force`"
        )


def test_the_facts_read_what_canonical_dump_reads(seeded: db.Connection) -> None:
    found = harness.facts(seeded, harness.current_version())
    for kind, rows in canonical_dump(seeded).items():
        assert set(found[kind].rows) == set(rows), kind


def test_dumping_a_seeded_database_writes_its_seed_back(seeded: db.Connection) -> None:
    seed = harness.read_seed(harness.current_version())
    assert make_seed.header(harness.current_version()) + make_seed.dump_sql(seeded) == seed


# ---------------------------------------------------------------------------------------------
# The harness itself, with made-up migrations after the real ones


def add_migrations(monkeypatch: pytest.MonkeyPatch, *sql: str) -> None:
    """Pretend the package ships these migrations after its own (loader included)."""
    real = db.migrations()
    extra = [
        db.Migration(len(real) + n, f"made_up_{n}", text) for n, text in enumerate(sql, start=1)
    ]
    monkeypatch.setattr(db, "migrations", lambda: [*real, *extra])


LOSSY_MIGRATIONS = {
    "truncates property values": (
        # (an UPDATE, not ALTER COLUMN ... TYPE: views of version 2 read the column)
        "UPDATE km2pg.event_properties SET value = left(value, 8)",
        r"event_properties: \d+ rows lost",
    ),
    "drops failed loads from the ledger": (
        "DELETE FROM km2pg.files WHERE status = 'failed'",
        r"files: 1 rows lost(.|\n)*rejects: 4 rows lost",
    ),
    "splits every person": (
        "UPDATE km2pg.users SET personid = userid",
        r"users: \d+ rows lost",
    ),
    "names a person by its largest userid": (
        "UPDATE km2pg.users u SET personid ="
        " (SELECT max(userid) FROM km2pg.users v WHERE v.personid = u.personid)",
        "invariant broken after upgrading from version 1: personid must be the smallest",
    ),
    "restarts an identity": (
        # (setval, not ALTER COLUMN ... RESTART, which Citus refuses on its tables)
        "SELECT setval(pg_get_serial_sequence('km2pg.actions', 'actionid'), 1, false)",
        "a new file did not load after the upgrade",
    ),
}


@pytest.mark.parametrize(("sql", "detected"), LOSSY_MIGRATIONS.values(), ids=LOSSY_MIGRATIONS)
def test_the_harness_catches_a_migration_that_loses_or_breaks_data(
    pg_admin: ConnectionSettings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sql: str,
    detected: str,
) -> None:
    add_migrations(monkeypatch, sql)
    with pytest.raises(harness.UpgradeCheckFailed, match=detected):
        harness.check_upgrade(pg_admin, 1, tmp_path)


def test_a_schema_version_without_a_seed_fails_loudly(
    pg_admin: ConnectionSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made_up = len(db.migrations()) + 1
    add_migrations(monkeypatch, "CREATE INDEX events_made_up ON km2pg.events (userid)")
    with pytest.raises(harness.MissingSeed, match=rf"v{made_up:04d}\.sql(.|\n)*make_seed"):
        harness.check_upgrade(pg_admin, made_up, tmp_path)


def test_a_new_migration_and_its_generated_seed_are_tested_from_every_earlier_version(
    pg_admin: ConnectionSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a developer does: add a migration, generate its seed; then every path is tested."""
    seeds = tmp_path / "seeds"
    shutil.copytree(harness.SEEDS, seeds)
    new = [
        "CREATE INDEX events_made_up ON km2pg.events (userid)",
        "ALTER TABLE km2pg.files ADD COLUMN note text; UPDATE km2pg.files SET note = status",
    ]
    for count in range(1, len(new) + 1):
        with monkeypatch.context() as patch:
            add_migrations(patch, *new[:count])
            version = harness.current_version()
            sql = make_seed.build_seed(pg_admin, tmp_path / f"export-{version}")
            harness.seed_path(version, seeds).write_text(sql, encoding="utf-8")
    add_migrations(monkeypatch, *new)
    versions = harness.start_versions()
    assert versions[-3:] == [versions[-3], versions[-3] + 1, versions[-3] + 2]
    assert harness.seed_versions(seeds) == versions[1:]
    for start in versions:
        harness.check_upgrade(pg_admin, start, tmp_path / f"load-{start}", seeds)
