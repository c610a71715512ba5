"""One export for every fault test, and what a clean serial load of it gives after each file."""

from __future__ import annotations

from pathlib import Path

import pytest

from km2pg import db, load
from km2pg.dsn import ConnectionSettings
from km2pg.sources import local_file
from tests.conftest import create_database, drop_database
from tests.faults.support import Reference, loaded_ledger
from tests.helpers import canonical_digest, canonical_dump, check_invariants, overlapping_export

# Ten files of 2,500 lines (a load of all of them takes about a second), with identities,
# aliases and times shared across files, and byte copies of two of them under other keys.
LINES = 25_000
FILES = 10
COPIES = 2
SEED = 2026


@pytest.fixture(scope="session")
def export(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The export's files in the order ``km2pg load FOLDER`` loads them."""
    return overlapping_export(
        tmp_path_factory.mktemp("faults-export"),
        lines=LINES,
        files=FILES,
        seed=SEED,
        copies=COPIES,
    )


@pytest.fixture(scope="session")
def reference(
    pg_admin: ConnectionSettings, template_database: str, export: list[Path]
) -> Reference:
    """A clean serial load of the export, file by file, with the digest after each file."""
    settings = create_database(pg_admin, template_database)
    try:
        with db.connection(settings) as con:
            load.prepare_connection(con)
            digests = [canonical_digest(con)]
            for path in export:
                assert load.load_file(con, local_file(path)).status == "loaded"
                digests.append(canonical_digest(con))
            check_invariants(con)
            ledger = loaded_ledger(con)
            dump = canonical_dump(con)
    finally:
        drop_database(pg_admin, settings)
    return Reference(
        folder=export[0].parents[1], files=export, ledger=ledger, digests=digests, dump=dump
    )
