"""The PL/pgSQL twins that stand in for the schema's SQL functions on a Citus cluster
(km2pg.citus.adapt_functions), made from the functions' own definitions: on plain PostgreSQL they
must give exactly the answers of the SQL functions they replace."""

from __future__ import annotations

from pathlib import Path

from km2pg import citus, db, load
from km2pg.sources import local_file
from tests import citus_cluster
from tests.integration import insights_oracle as oracle

LANGUAGES = """
SELECT p.proname, l.lanname FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
 WHERE p.pronamespace = CAST('km2pg' AS regnamespace) AND p.proname IN (
       'property_at', 'person_properties_recomputed', 'num', 'eventid_time')
 ORDER BY 1
"""
RECOMPUTED = "SELECT * FROM km2pg.person_properties_recomputed() ORDER BY personid, keyid"
# property_at over every person and key at several times, none of them chosen from the answers.
PROPERTY_AT = """
SELECT u.personid, k.name, g.at, km2pg.property_at(u.personid, k.name, g.at)
  FROM (SELECT DISTINCT personid FROM km2pg.users) AS u
 CROSS JOIN km2pg.keys k
 CROSS JOIN (VALUES (CAST(:first AS timestamptz)), (CAST(:middle AS timestamptz)),
                    (CAST('infinity' AS timestamptz))) AS g (at)
 ORDER BY 1, 2, 3
"""


def answers(con: db.Connection) -> tuple[list[list[object]], list[list[object]]]:
    times = {"first": oracle.START.isoformat(), "middle": "2026-02-01T00:00:00Z"}
    return db.rows(con, RECOMPUTED), db.rows(con, PROPERTY_AT, **times)


@citus_cluster.single_node(
    "a cluster's schema has the twins already; tests/citus compares its answers with plain"
    " PostgreSQL's"
)
def test_twins_answer_as_the_sql_functions_they_replace(con, tmp_path: Path) -> None:
    for path in oracle.generate(tmp_path, seed=11):
        assert load.load_file(con, local_file(path)).status == "loaded"
    recomputed, property_at = answers(con)
    assert len(recomputed) > 100
    assert sum(1 for row in property_at if row[3] is not None) > 100

    replaced = citus.adapt_functions(con)

    assert replaced == [
        "km2pg.person_properties_recomputed()",
        "km2pg.property_at(personid bigint, key text, at timestamp with time zone)",
    ]
    assert db.rows(con, LANGUAGES) == [
        ["eventid_time", "sql"],  # IMMUTABLE: reads no table, stays as it is
        ["num", "sql"],
        ["person_properties_recomputed", "plpgsql"],
        ["property_at", "plpgsql"],
    ]
    assert answers(con) == (recomputed, property_at)
    assert citus.adapt_functions(con) == []  # nothing left to adapt


def test_without_the_schema_there_is_nothing_to_adapt(con) -> None:
    # A cluster's database before its first migration (migrate to version 0) has no schema yet.
    con.run("BEGIN")
    con.run("ALTER SCHEMA km2pg RENAME TO km2pg_elsewhere")
    try:
        assert citus.adapt_functions(con) == []
    finally:
        con.run("ROLLBACK")
