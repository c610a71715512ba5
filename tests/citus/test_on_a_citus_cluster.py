"""km2pg on a Citus cluster: the same rows, people and ledger as on plain PostgreSQL, in any
order and with concurrent loaders, and the founding query answered on the workers.

Run with ``make test-citus`` (a coordinator and two workers on local ports); elsewhere these
tests are not collected. The plain PostgreSQL they compare with is a database without the citus
extension on the coordinator's own server: same version, same settings.
"""

from __future__ import annotations

import json
import random
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from km2pg import citus, db, load
from km2pg.dsn import ConnectionSettings
from km2pg.errors import SchemaError
from km2pg.sources import local_file
from km2pg.status import status
from tests import citus_cluster
from tests.conftest import SAMPLES, create_database, drop_database
from tests.helpers import (
    check_invariants,
    dump_of,
    load_serially,
    overlapping_export,
    run_loaders,
)
from tests.integration import insights_oracle
from tests.integration.test_insights import answers, person_names

# The README's query, at one fixed "now" for the whole module, so that answers given minutes
# apart compare equal.
FOUNDING_QUERY = """
select count(1)
  from km2pg.events e
  join km2pg.event_actions using (eventid)
  join km2pg.actions a using (actionid)
 where a.name = 'checkout successful'
   and e.t >= CAST(:now AS timestamptz) - interval '1 week'
"""
NOW = datetime.now(UTC)
LEDGER = """
select export_key, status, lines, events, actions, properties, aliases, rejects
  from km2pg.files order by fileid
"""
TOTALS = """
select sum(events), sum(actions), count(*) from km2pg.files where status = 'loaded'
"""
PEOPLE = "select count(distinct personid) from km2pg.users"


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A messy synthetic export whose identities, aliases and times overlap across its files,
    with byte copies of two files under other keys, and the real sample export last."""
    files = overlapping_export(
        tmp_path_factory.mktemp("export"), lines=24_000, files=10, seed=7, copies=2
    )
    sample = SAMPLES / "revisions" / "1.json"
    assert sample.exists(), f"the real export sample is missing: {sample}"
    return [*files, sample]


@pytest.fixture(scope="module")
def plain(pg_admin: ConnectionSettings, export: list[Path]) -> Iterator[dict[str, Any]]:
    """What a serial load gives on plain PostgreSQL: dump, people, ledger and the founding
    query's answer."""
    name = f"km2pg_plain_{uuid.uuid4().hex[:12]}"
    with db.connection(pg_admin) as con:
        con.run(f'CREATE DATABASE "{name}"')
    settings = pg_admin.with_database(name)
    try:
        load_serially(settings, export)
        with db.connection(settings) as con:
            assert not citus.has_citus(con)
            yield {"dump": dump_of(settings), **_facts(con)}
    finally:
        with db.connection(pg_admin) as con:
            con.run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def cluster_db(
    pg_admin: ConnectionSettings, template_database: str
) -> Iterator[ConnectionSettings]:
    settings = create_database(pg_admin, template_database)
    yield settings
    drop_database(pg_admin, settings)


def _facts(con: db.Connection) -> dict[str, Any]:
    return {
        "people": db.scalar(con, PEOPLE),
        "ledger": [tuple(r) for r in db.rows(con, LEDGER)],
        "totals": tuple(db.rows(con, TOTALS)[0]),
        "founding": db.scalar(con, FOUNDING_QUERY, now=NOW),
    }


def test_migrate_distributed_the_schema_once(cluster_db):
    with db.connection(cluster_db) as con:
        layout = dict(
            db.rows(
                con,
                """
                select 'km2pg.' || c.relname, p.partmethod::text || ':' || p.colocationid
                  from pg_dist_partition p join pg_class c on c.oid = p.logicalrelid
                 where c.relname !~ '_\\d{4}_\\d{2}$'
                """,
            )
        )
        assert set(layout) == {f"km2pg.{p.table}" for p in citus.LAYOUT}
        for table in ("users", "aliases", "actions", "keys"):
            assert layout[f"km2pg.{table}"].startswith("n:"), table  # reference tables
        facts = {layout[f"km2pg.{t}"] for t in ("events", "event_actions", "event_properties")}
        assert len(facts) == 1, layout  # colocated
        assert facts.pop().startswith("h:")  # hash-distributed
        assert db.migrate(con, distribute=True) == []
        assert citus.distribute(con) == []


def test_migrate_no_distribute_keeps_plain_tables_and_migrate_distributes_them_later(
    pg_admin, export
):
    name = f"km2pg_test_{uuid.uuid4().hex[:12]}"
    citus_cluster.create_empty(pg_admin, name)
    settings = pg_admin.with_database(name)
    try:
        with db.connection(settings) as con:
            db.migrate(con, distribute=False)
            assert not citus.is_distributed(con)
            db.migrate(con)  # an automatic migration keeps the layout it finds
            assert not citus.is_distributed(con)
        load_serially(settings, export[:3])
        before = dump_of(settings)
        with db.connection(settings) as con:
            db.migrate(con, distribute=True)  # what `km2pg migrate` does: rows move to shards
            assert citus.is_distributed(con)
        assert dump_of(settings) == before
        load_serially(settings, export[3:5])  # and loading goes on
    finally:
        citus_cluster.drop_database(pg_admin, name)


def test_migrate_refuses_a_cluster_without_its_coordinator_registered_and_changes_nothing(
    pg_admin,
):
    name = f"km2pg_test_{uuid.uuid4().hex[:12]}"
    citus_cluster.create_empty(pg_admin, name)
    try:
        with db.connection(pg_admin.with_database(name)) as con:
            con.run("SELECT citus_remove_node(:h, :p)", h=pg_admin.host, p=pg_admin.port)
            with pytest.raises(SchemaError, match="citus_set_coordinator_host"):
                db.migrate(con)
            assert db.schema_version(con) == 0
    finally:
        citus_cluster.drop_database(pg_admin, name)


def test_a_quirky_export_loads_with_the_same_rows_people_and_ledger_as_plain_postgresql(
    cluster_db, export, plain
):
    load_serially(cluster_db, export)
    assert dump_of(cluster_db) == plain["dump"]
    with db.connection(cluster_db) as con:
        assert citus.is_distributed(con)
        assert _facts(con) == {k: v for k, v in plain.items() if k != "dump"}


@pytest.mark.parametrize("seed", [1, 2])
def test_shuffled_loads_give_the_same_rows_people_and_totals(cluster_db, export, plain, seed):
    files = list(export)
    random.Random(seed).shuffle(files)
    load_serially(cluster_db, files)
    assert dump_of(cluster_db) == plain["dump"]
    with db.connection(cluster_db) as con:
        facts = _facts(con)
    # Which file adds an event depends on the order, how many events are added does not.
    assert (facts["people"], facts["totals"], facts["founding"]) == (
        plain["people"],
        plain["totals"],
        plain["founding"],
    )


def test_four_concurrent_loaders_never_deadlock_and_give_the_same_rows_people_and_totals(
    cluster_db, export, plain, tmp_path
):
    # Every file is loaded by at least two of the four processes, in different orders.
    shares = [export[0::2] + export[1::3], export[1::2] + export[0::3], export, export[::-1]]
    run_loaders(cluster_db, shares, tmp_path / "reports")
    assert dump_of(cluster_db) == plain["dump"]
    with db.connection(cluster_db) as con:
        facts = _facts(con)
        skipped = db.scalar(con, "select count(*) from km2pg.files where status = 'skipped'")
    assert (facts["people"], facts["totals"], facts["founding"]) == (
        plain["people"],
        plain["totals"],
        plain["founding"],
    )
    assert skipped == sum(map(len, shares)) - len(export)


def test_loading_the_export_again_skips_every_file(cluster_db, export, plain):
    load_serially(cluster_db, export)
    with db.connection(cluster_db) as con:
        load.prepare_connection(con)
        again = [load.load_file(con, local_file(path)) for path in export]
        assert [r.status for r in again] == ["skipped"] * len(export)
        assert db.rows(con, "select status, count(*) from km2pg.files group by 1 order by 1") == [
            ["loaded", len(export)],
            ["skipped", len(export)],
        ]
    assert dump_of(cluster_db) == plain["dump"]


def test_the_founding_query_is_pushed_down_to_the_workers(cluster_db, export, plain):
    load_serially(cluster_db, export)
    with db.connection(cluster_db) as con:
        assert db.scalar(con, FOUNDING_QUERY, now=NOW) == plain["founding"] > 0
        plan = db.scalar(con, f"explain (format json) {FOUNDING_QUERY}", now=NOW)[0]["Plan"]
        workers = {
            f"{host}:{port}"
            for host, port in db.rows(con, "select * from citus_get_active_worker_nodes()")
        }
        text = json.dumps(plan)
        scan = _find(plan, lambda node: node.get("Custom Plan Provider") == "Citus Adaptive")
        assert scan is not None, text
        job = scan["Distributed Query"]["Job"]
        # A task per shard group, each joining colocated shards on a worker, and nothing planned
        # apart (subplans, repartitioning) that would pull rows to the coordinator.
        assert job["Task Count"] > 1
        assert "Subplans" not in scan["Distributed Query"]
        assert "Repartition" not in text
    node = re.match(r"host=(\S+) port=(\d+)", job["Tasks"][0]["Node"])
    assert node is not None, job["Tasks"][0]
    assert f"{node[1]}:{node[2]}" in workers


def test_status_reports_the_rows_and_sizes_on_the_shards(cluster_db, export):
    load_serially(cluster_db, export[:3])
    with db.connection(cluster_db) as con:
        con.run("ANALYZE km2pg.events, km2pg.event_actions, km2pg.users")
        report = status(con)
        for table in ("events", "event_actions", "users"):
            assert report.rows[table] == db.scalar(con, f"select count(*) from km2pg.{table}")
            assert report.tables[table] > 0
        # A reference table is on every node: its size counts each copy.
        nodes = len(citus_cluster.workers()) + 1
        assert report.tables["users"] >= nodes * 8192


def _find(node: dict[str, Any], match: Any) -> dict[str, Any] | None:
    if match(node):
        return node
    for child in node.get("Plans", []):
        found = _find(child, match)
        if found is not None:
            return found
    return None


@pytest.fixture(scope="module")
def insights_export(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The insight tests' export (funnels, cohorts, experiments, revenue, aliases), shuffled."""
    files = insights_oracle.generate(tmp_path_factory.mktemp("insights"), seed=11)
    random.Random(4).shuffle(files)
    return files


def _insight_answers(settings: ConnectionSettings) -> dict[str, Any]:
    """Every insight view and function's answers, persons named by their smallest identity."""
    out = answers(settings)
    with db.connection(settings) as con:
        con.run("SET TIME ZONE 'UTC'")
        names = person_names(con)
        # Without eventid and userid: which identity gets which userid depends on load order.
        out["timeline"] = sorted(
            (names[personid], t, identity, actions, json.dumps(properties, sort_keys=True))
            for _, t, personid, _, identity, actions, properties in db.rows(
                con, "select * from km2pg.timeline"
            )
        )
    return out


def test_the_insights_answer_on_citus_as_on_plain_postgresql(pg_admin, cluster_db, insights_export):
    name = f"km2pg_plain_{uuid.uuid4().hex[:12]}"
    with db.connection(pg_admin) as con:
        con.run(f'CREATE DATABASE "{name}"')
    plain_db = pg_admin.with_database(name)
    try:
        load_serially(plain_db, insights_export)
        load_serially(cluster_db, insights_export[::-1])
        with db.connection(cluster_db) as con:
            assert citus.is_distributed(con)
            check_invariants(con)  # person_properties equals its recomputation
        expected = _insight_answers(plain_db)
        assert expected["person_properties"]
        assert expected["timeline"]
        assert _insight_answers(cluster_db) == expected
    finally:
        with db.connection(pg_admin) as con:
            con.run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
