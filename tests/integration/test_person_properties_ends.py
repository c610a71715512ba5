"""person_properties' fold takes each identity's first and latest setting of a file, then each
person's across the identities the file holds of it. The parser stages them (rec n) for the load's
fast path; past its cap, or on the safe path, the server finds them from the rows it writes.

Within a file a setting's place is (second, line): the first setting is the earliest second's
earliest line, the latest the last second's last line; a line repeating a key in the same second
of the same identity replaces the earlier line's value (one event, one value per key). The
expected rows here are written out by hand from those rules, and the table is also checked
against its full recomputation.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from km2pg import db, load, staging, store
from km2pg.cli.synth import generate_export
from km2pg.export import iter_raw_lines
from km2pg.forget import forget
from km2pg.sources import discover_local, local_file
from km2pg.staging import StageStats, copy_export
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


# ---------------------------------------------------------------------------------------------
# The ends the parser staged, against those the server finds from the rows it writes


def _messy_file(folder: Path) -> Path:
    generate_export(folder, lines=4_000, files=1, seed=11, messy=True, days=3)
    (file,) = discover_local(folder)
    return Path(file.path)


def _ends(con: db.Connection, names: staging.StagedNames, *, staged: bool, suppress: bool) -> list:
    """s_ends by names, as a load of the staged file makes it (rolled back)."""
    con.run("BEGIN")
    try:
        store.insert_facts(con, 1, names, suppress=suppress, ends_staged=staged)
        return [
            tuple(row)
            for row in db.rows(
                con,
                """
                SELECT u.name, k.name, e.last_key, e.last_value, e.first_key, e.first_value
                  FROM s_ends e JOIN km2pg.users u USING (userid) JOIN km2pg.keys k USING (keyid)
                 ORDER BY 1, 2
                """,
            )
        ]
    finally:
        con.run("ROLLBACK")


@pytest.mark.parametrize("forgotten", [False, True])
def test_the_staged_ends_are_those_of_the_written_rows(con, tmp_path, monkeypatch, forgotten):
    monkeypatch.setattr(staging, "ENDS_PER_SETTING", 1.0)  # kept, however many for the settings
    path = _messy_file(tmp_path)
    stats = StageStats()
    with path.open("rb") as stream:
        store.stage(con, copy_export(iter_raw_lines(stream), int(time.time()) + 86_400, stats))
    assert stats.ends
    store.create_partitions(con, stats.months)
    if forgotten:  # their lines leave staging before anything is written: their ends too
        name = json.loads(path.read_text(encoding="utf-8-sig").splitlines()[0])["_p"]
        forget(con, [name])
    staged = _ends(con, stats.names, staged=True, suppress=forgotten)
    found = _ends(con, stats.names, staged=False, suppress=forgotten)
    assert staged == found
    assert len(staged) > 1_000
    assert forgotten == (len(staged) < len(stats.ends))


def test_loads_take_the_parsers_ends_and_past_its_cap_the_servers(
    con, tmp_path, monkeypatch, database
):
    path = _messy_file(tmp_path / "one")
    staged_flags: list[bool] = []
    insert_facts = store.insert_facts

    def spy(*args, **kwargs):
        staged_flags.append(kwargs["ends_staged"])
        return insert_facts(*args, **kwargs)

    monkeypatch.setattr(store, "insert_facts", spy)
    monkeypatch.setattr(staging, "ENDS_PER_SETTING", 1.0)
    assert load.load_file(con, local_file(path)).status == "loaded"
    assert person_properties_drift(con) == 0
    # Past the cap: no ends rows staged, the fast insert keeps them itself.
    monkeypatch.setattr(staging, "MAX_ENDS", 10)
    later = generate_export(tmp_path / "two", lines=4_000, files=1, seed=12, messy=True, days=3)
    assert load.load_file(con, local_file(later.files[0])).status == "loaded"
    # And with the default share: these synthetic visitors' pairs are too many for it.
    monkeypatch.undo()
    monkeypatch.setattr(store, "insert_facts", spy)
    third = generate_export(tmp_path / "three", lines=4_000, files=1, seed=13, messy=True, days=3)
    assert load.load_file(con, local_file(third.files[0])).status == "loaded"
    assert staged_flags == [True, False, False]
    assert person_properties_drift(con) == 0
