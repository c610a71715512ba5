"""person_properties' fold takes each identity's first and latest setting of a file, then each
person's across the identities the file holds of it.

Within a file a setting's place is (second, line): the first setting is the earliest second's
earliest line, the latest the last second's last line; a line repeating a key in the same second
of the same identity replaces the earlier line's value (one event, one value per key). The
expected rows here are written out by hand from those rules, and the table is also checked
against its full recomputation.
"""

from __future__ import annotations

import time
from typing import Any

from km2pg import db, load
from km2pg.sources import local_file
from tests.helpers import person_properties_drift, write_export

NOW = int(time.time()) - 100_000


def _state(con: db.Connection) -> list[tuple[Any, ...]]:
    """(the person's identities, key, value, first_value, t - NOW, first_t - NOW), sorted."""
    return [
        tuple(row)
        for row in db.rows(
            con,
            """
            SELECT (SELECT string_agg(u.name, ',' ORDER BY u.name) FROM km2pg.users u
                     WHERE u.personid = p.personid),
                   p.key, p.value, p.first_value,
                   CAST(extract(epoch FROM p.t) AS bigint) - :now,
                   CAST(extract(epoch FROM p.first_t) AS bigint) - :now
              FROM km2pg.person_properties p ORDER BY 1, 2
            """,
            now=NOW,
        )
    ]


def test_one_identity_first_and_latest_are_by_second_then_line(con, tmp_path):
    path = write_export(
        tmp_path,
        1,
        [
            {"_p": "ann", "_t": NOW, "plan": "b"},
            {"_p": "ann", "_t": NOW - 5, "plan": "a1"},
            {"_p": "ann", "_t": NOW - 5, "plan": "a2"},  # the same event: replaces a1
            {"_p": "ann", "_t": NOW + 5, "plan": "c1", "city": "Oslo"},
            {"_p": "ann", "_t": NOW + 5, "plan": "c2"},  # the last line of the last second
            {"_p": "ann", "_t": NOW - 1, "plan": "z"},  # a later line, an earlier second
        ],
    )
    result = load.load_file(con, local_file(path))
    assert result.status == "loaded"
    # One row per event and key: -5 plan, 0 plan, +5 plan and city, -1 plan.
    assert result.properties == 5
    assert _state(con) == [
        ("ann", "city", "Oslo", "Oslo", 5, 5),
        ("ann", "plan", "c2", "a2", 5, -5),
    ]
    assert person_properties_drift(con) == 0


def test_a_person_of_several_identities_in_one_file_takes_the_ends_over_all_of_them(con, tmp_path):
    path = write_export(
        tmp_path,
        1,
        [
            {"_p": "bob", "_t": NOW, "plan": "bob-0"},
            {"_p": "bob@work", "_t": NOW - 9, "plan": "work-first", "city": "Bergen"},
            {"_p": "bob", "_t": NOW - 9, "plan": "bob-same-second"},  # a later line
            {"_p": "bob", "_p2": "bob@work", "_t": NOW + 1},
            {"_p": "bob", "_t": NOW + 7, "plan": "bob-latest"},
            {"_p": "bob@work", "_t": NOW + 7, "plan": "work-last-line", "city": "Oslo"},
            {"_p": "carl", "_t": NOW + 3, "plan": "carl"},
        ],
    )
    assert load.load_file(con, local_file(path)).status == "loaded"
    assert _state(con) == [
        ("bob,bob@work", "city", "Oslo", "Bergen", 7, -9),
        ("bob,bob@work", "plan", "work-last-line", "work-first", 7, -9),
        ("carl", "plan", "carl", "carl", 3, 3),
    ]
    assert person_properties_drift(con) == 0


def test_a_later_file_of_the_same_person_moves_the_ends_only_outward(con, tmp_path):
    first = write_export(
        tmp_path,
        1,
        [
            {"_p": "dora", "_t": NOW, "plan": "middle"},
            {"_p": "dora", "_t": NOW + 2, "plan": "later"},
        ],
    )
    second = write_export(
        tmp_path,
        2,
        [
            {"_p": "dora", "_t": NOW + 1, "plan": "between"},  # neither first nor latest
            {"_p": "dora", "_t": NOW - 4, "plan": "earliest"},
        ],
    )
    for path in (first, second):
        assert load.load_file(con, local_file(path)).status == "loaded"
    assert _state(con) == [("dora", "plan", "later", "earliest", 2, -4)]
    assert person_properties_drift(con) == 0
