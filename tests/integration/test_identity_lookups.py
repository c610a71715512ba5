"""A load's cost follows its file, not the size of ``users``: the file's identities and persons are
looked up by key, never by reading the whole table (a site's identities grow to millions, and a
join let the planner hash all of them for every file)."""

from __future__ import annotations

import time

from km2pg import db, load
from km2pg.sources import local_file
from tests.citus_cluster import single_node
from tests.helpers import person_properties_drift, write_export

STORED_IDENTITIES = 100_000
NOW = int(time.time()) - 100_000


def _sequential_scans_of_users(con: db.Connection) -> int:
    """How many times any session read ``users`` whole, as the statistics say by now."""
    con.run("SELECT pg_stat_force_next_flush()")  # this session's counts, not only others'
    con.run("SELECT pg_stat_clear_snapshot()")
    return int(
        db.scalar(
            con,
            "SELECT seq_scan FROM pg_stat_user_tables"
            " WHERE schemaname = 'km2pg' AND relname = 'users'",
        )
    )


@single_node("the statistics of one server's own table")
def test_a_file_into_a_large_users_table_never_reads_the_table_whole(con, tmp_path):
    con.run(
        """
        INSERT INTO km2pg.users (userid, name, personid)
        SELECT g, 'stored-' || g, g FROM generate_series(1, :n) AS g
        """,
        n=STORED_IDENTITIES,
    )
    con.run("SELECT setval('km2pg.users_userid_seq', :n)", n=STORED_IDENTITIES)
    con.run("ANALYZE km2pg.users")
    # A file as an hour brings them: returning identities, new ones, property settings for
    # person_properties' upkeep.
    lines: list[dict[str, object]] = []
    for i in range(2_000):
        lines.append({"_p": f"stored-{i * 37 + 1}", "_t": NOW + i, "_n": "visited", "plan": "a"})
        lines.append({"_p": f"new-{i}", "_t": NOW + i, "_n": "signed up", "plan": f"p{i % 3}"})
    # Aliases, many of them: each joins a new identity to a stored person (the merge moves it).
    for i in range(1, 1_500):
        lines.append({"_p": f"new-{i}", "_p2": f"stored-{i * 37 + 1}", "_t": NOW + 5_000 + i})
    path = write_export(tmp_path, 1, lines)
    before = _sequential_scans_of_users(con)

    result = load.load_file(con, local_file(path))

    assert result.status == "loaded"
    assert result.events == 4_000
    assert _sequential_scans_of_users(con) == before
    assert db.scalar(con, "SELECT personid FROM km2pg.users WHERE name = 'new-1'") == 38
    assert db.scalar(con, "SELECT personid FROM km2pg.users WHERE name = 'new-2'") == 75
    assert person_properties_drift(con) == 0
