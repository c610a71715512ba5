"""person_properties' fold for persons a load creates: their rows go in with a plain INSERT.

A person whose personid is a userid the load itself inserted cannot have stored rows, except rows
this load's merge moved into it; every other person's rows are upserted. Each test here loads
what would break if a person were taken for new wrongly (a unique violation fails the load) or
its rows were folded wrongly (the table then differs from its full recomputation).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from km2pg import db, load
from km2pg.sources import local_file
from tests import citus_cluster
from tests.helpers import LoadThread, lock_waiters_reach, person_properties_drift, write_export

NOW = int(time.time()) - 100_000


def _load(con: db.Connection, path: Path) -> load.LoadResult:
    return load.load_file(con, local_file(path))


def _state(con: db.Connection) -> list[tuple[Any, ...]]:
    """(name of the person's smallest identity, key, value, first_value), sorted."""
    return [
        tuple(row)
        for row in db.rows(
            con,
            """
            SELECT (SELECT min(u.name) FROM km2pg.users u WHERE u.personid = p.personid),
                   p.key, p.value, p.first_value
              FROM km2pg.person_properties p ORDER BY 1, 2
            """,
        )
    ]


def test_a_new_identity_that_absorbs_a_stored_person_folds_into_the_moved_rows(con, tmp_path):
    # "old" gets a userid far above the next one, so "new" (loaded later) gets the smaller id and
    # the merge moves old's stored rows into new's person: a person this load created that
    # already has rows when the file's settings are folded in.
    con.run("SELECT setval('km2pg.users_userid_seq', 1000)")
    first = write_export(
        tmp_path,
        1,
        [
            {"_p": "old", "_t": NOW, "plan": "free", "city": "Oslo"},
            {"_p": "old", "_t": NOW + 10, "plan": "basic"},
        ],
    )
    assert _load(con, first).status == "loaded"
    con.run("SELECT setval('km2pg.users_userid_seq', 10)")
    second = write_export(
        tmp_path,
        2,
        [
            {"_p": "new", "_p2": "old", "_t": NOW + 20},
            {"_p": "new", "_t": NOW - 10, "plan": "trial"},
            {"_p": "new", "_t": NOW + 30, "plan": "pro", "country": "NO"},
        ],
    )
    assert _load(con, second).status == "loaded"
    assert db.scalar(con, "SELECT userid FROM km2pg.users WHERE name = 'new'") == 11
    assert _state(con) == [
        ("new", "city", "Oslo", "Oslo"),
        ("new", "country", "NO", "NO"),
        ("new", "plan", "pro", "trial"),
    ]
    assert person_properties_drift(con) == 0


def test_new_and_stored_persons_fold_in_one_load_as_a_recomputation_does(con, tmp_path):
    first = write_export(
        tmp_path,
        1,
        [
            {"_p": "ann", "_t": NOW, "plan": "free"},
            {"_p": "bob", "_t": NOW + 1, "plan": "basic", "city": "Rome"},
        ],
    )
    assert _load(con, first).status == "loaded"
    second = write_export(
        tmp_path,
        2,
        [
            # a stored person, and new settings of it
            {"_p": "ann", "_t": NOW + 100, "plan": "pro"},
            # new persons, one of them set twice
            {"_p": "cid", "_t": NOW + 101, "plan": "free"},
            {"_p": "cid", "_t": NOW + 102, "plan": "basic"},
            {"_p": "dee", "_t": NOW + 103, "city": "Lima"},
            # two new identities joined into one new person
            {"_p": "eve", "_t": NOW + 104, "plan": "free"},
            {"_p": "eve", "_p2": "fay", "_t": NOW + 105},
            {"_p": "fay", "_t": NOW + 106, "plan": "pro", "city": "Baku"},
            # a new identity joined to a stored person
            {"_p": "gus", "_p2": "bob", "_t": NOW + 107},
            {"_p": "gus", "_t": NOW - 50, "city": "Oran"},
        ],
    )
    assert _load(con, second).status == "loaded"
    assert _state(con) == [
        ("ann", "plan", "pro", "free"),
        ("bob", "city", "Rome", "Oran"),
        ("bob", "plan", "basic", "basic"),
        ("cid", "plan", "basic", "free"),
        ("dee", "city", "Lima", "Lima"),
        ("eve", "city", "Baku", "Baku"),
        ("eve", "plan", "pro", "free"),
    ]
    assert person_properties_drift(con) == 0


@citus_cluster.single_node(
    "on Citus every load takes the alias lock alone before its first write, so the second"
    " loader waits there rather than on the first one's new identity"
)
def test_an_identity_another_loader_created_first_is_not_new_to_this_one(database, tmp_path):
    # The first loader inserts "zed" and stops at the alias lock, held here; the second, loading
    # another file with "zed", waits for that uncommitted identity, then finds it made by the
    # first: its rows are the first loader's by then, and must be upserted, not inserted again.
    first = write_export(tmp_path / "a", 1, [{"_p": "zed", "_t": NOW, "plan": "free"}])
    second = write_export(tmp_path / "b", 2, [{"_p": "zed", "_t": NOW + 5, "plan": "pro"}])
    blocker = db.connect(database)
    try:
        blocker.run("BEGIN")
        blocker.run(
            "SELECT pg_advisory_xact_lock(:ns, :key)", ns=db.LOCK_NAMESPACE, key=db.LOCK_ALIASES
        )
        loaders = [LoadThread(database, first)]
        loaders[0].start()
        assert lock_waiters_reach(database, "advisory", seconds=60), (
            "no loader came to wait for a advisory lock"
        )
        loaders.append(LoadThread(database, second))
        loaders[1].start()
        assert lock_waiters_reach(database, "transactionid", seconds=60), (
            "no loader came to wait for a transactionid lock"
        )
        blocker.run("COMMIT")
        for loader in loaders:
            loader.join(timeout=60)
            assert (loader.status, loader.error) == ("loaded", None)
    finally:
        db.close_quietly(blocker)
    with db.connection(database) as con:
        assert _state(con) == [("zed", "plan", "pro", "free")]
        assert person_properties_drift(con) == 0


@citus_cluster.single_node(
    "on Citus every load takes the alias lock alone before its first write, so no two loads"
    " fold at once there"
)
def test_a_stored_person_without_rows_is_not_new_to_a_fold_beside_another(database, tmp_path):
    # "quin" is stored but has no person_properties row yet. A fold in flight (this test's
    # transaction, as a loader would leave it) writes quin's first row; a loader folding quin's
    # settings at the same time waits for that row and must then update it, not insert another.
    first = write_export(
        tmp_path / "a",
        1,
        [{"_p": "quin", "_n": "visited", "_t": NOW}, {"_p": "ref", "_t": NOW, "plan": "x"}],
    )
    second = write_export(tmp_path / "b", 2, [{"_p": "quin", "_t": NOW + 5, "plan": "pro"}])
    with db.connection(database) as con:
        load.prepare_connection(con)
        assert _load(con, first).status == "loaded"
    fold = db.connect(database)
    try:
        fold.run("BEGIN")
        fold.run(
            "SELECT pg_advisory_xact_lock_shared(:ns, :key)",
            ns=db.LOCK_NAMESPACE,
            key=db.LOCK_ALIASES,
        )
        fold.run(
            """
            WITH quin AS (
                SELECT u.personid, k.keyid, km2pg.make_eventid(u.userid, to_timestamp(:t)) AS e
                  FROM km2pg.users u, km2pg.keys k WHERE u.name = 'quin' AND k.name = 'plan'
            ), setting AS (
                INSERT INTO km2pg.event_properties (eventid, keyid, value, revision, lineno)
                SELECT e, keyid, 'free', 1, 9 FROM quin
            )
            INSERT INTO km2pg.person_property_state
            SELECT personid, keyid, 'free', to_timestamp(:t), 1, 9,
                   'free', to_timestamp(:t), 1, 9, e FROM quin
            """,
            t=NOW,
        )
        loader = LoadThread(database, second)
        loader.start()
        assert lock_waiters_reach(database, "transactionid", seconds=60), (
            "no loader came to wait for a transactionid lock"
        )
        fold.run("COMMIT")
        loader.join(timeout=60)
        assert (loader.status, loader.error) == ("loaded", None)
    finally:
        db.close_quietly(fold)
    with db.connection(database) as con:
        assert _state(con) == [("quin", "plan", "pro", "free"), ("ref", "plan", "x", "x")]
        assert person_properties_drift(con) == 0
