"""Retention: whole months are dropped, the boundary month is trimmed, dictionaries stay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from km2pg import db, load
from km2pg.errors import ConfigError
from km2pg.prune import prune
from km2pg.sources import local_file
from tests.helpers import canonical_dump, check_invariants, write_export

NOW = datetime(2026, 6, 15, 12, 0, 0, tzinfo=UTC)


def ts(days_ago: float) -> int:
    return int((NOW - timedelta(days=days_ago)).timestamp())


@pytest.fixture
def loaded(con, tmp_path):
    """Events spread over five months (Feb to Jun 2026), each with an action and a property."""
    lines = []
    for days_ago in (130, 100, 75, 62, 40, 35, 20, 5, 1):
        lines.append({"_p": f"u{days_ago}", "_t": ts(days_ago), "_n": "visit", "n": str(days_ago)})
    lines.append({"_p": "u130", "_t": ts(130), "_p2": "u1"})
    write_export(tmp_path, 1, lines)
    assert load.load_file(con, local_file(tmp_path / "revisions" / "1.json")).status == "loaded"
    return con


def days_left(con: db.Connection) -> list[int]:
    rows = db.rows(
        con,
        """
        select p.value::int from km2pg.event_properties p
          join km2pg.event_actions a using (eventid) join km2pg.events e using (eventid)
         order by 1""",
    )
    return [r[0] for r in rows]


def test_prune_drops_old_months_and_trims_the_boundary_month(loaded):
    con = loaded
    # Cutoff 2026-04-16 12:00: February and March go whole; April keeps days after the 16th.
    result = prune(con, 60, now=NOW)
    assert result.cutoff == NOW - timedelta(days=60)
    assert sorted(result.partitions) == sorted(
        f"km2pg.{t}_2026_{m}"
        for t in ("events", "event_actions", "event_properties")
        for m in ("02", "03")
    )
    assert result.rows == {"events": 4, "event_actions": 4, "event_properties": 4}
    assert days_left(con) == [1, 5, 20, 35, 40]
    check_invariants(con, pruned=True)


def test_prune_keeps_users_aliases_actions_keys_and_the_ledger(loaded):
    con = loaded
    before = canonical_dump(con)
    prune(con, 10, now=NOW)
    after = canonical_dump(con)
    for table in ("users", "aliases", "actions", "keys"):
        assert after[table] == before[table], table
    assert db.scalar(con, "select count(*) from km2pg.files") == 1


def test_dry_run_reports_the_same_and_removes_nothing(loaded):
    con = loaded
    before = canonical_dump(con)
    dry = prune(con, 60, now=NOW, dry_run=True)
    assert canonical_dump(con) == before
    assert dry.rows == {"events": 4, "event_actions": 4, "event_properties": 4}
    assert len(dry.partitions) == 6
    real = prune(con, 60, now=NOW)
    assert (real.rows, real.partitions) == (dry.rows, dry.partitions)


def test_prune_twice_removes_nothing_more(loaded):
    prune(loaded, 60, now=NOW)
    again = prune(loaded, 60, now=NOW)
    assert again.total_rows == 0
    assert again.partitions == []


def test_recent_data_and_later_loads_are_untouched_by_prune(loaded, tmp_path):
    con = loaded
    prune(con, 60, now=NOW)
    write_export(tmp_path / "more", 2, [{"_p": "late", "_t": ts(120), "_n": "visit", "n": "120"}])
    result = load.load_file(con, local_file(tmp_path / "more" / "revisions" / "2.json"))
    # Old data arriving after a prune gets its month back (and the next prune takes it again).
    assert result.status == "loaded"
    assert days_left(con) == [1, 5, 20, 35, 40, 120]


def test_negative_retention_is_refused(con):
    with pytest.raises(ConfigError):
        prune(con, -1)


def test_prune_keeps_person_properties_and_property_at_sees_what_is_left(loaded, tmp_path):
    """person_properties keeps the latest and first value ever loaded; property_at answers
    from the events still there. Loads after a prune fold into what was kept."""
    con = loaded
    sql = "select value, first_value from km2pg.person_properties where key = 'n' order by 1"
    before = db.rows(con, sql)
    person = db.scalar(con, "select personid from km2pg.users where name = 'u130'")
    assert db.scalar(con, "select km2pg.property_at(:p, 'n', 'infinity')", p=person) == "1"
    prune(con, 60, now=NOW)
    assert db.rows(con, sql) == before
    assert ["1", "130"] in before, "u130 and u1 are one person: first 130 days ago, last 1 day ago"
    at_80_days = db.scalar(
        con, "select km2pg.property_at(:p, 'n', :at)", p=person, at=NOW - timedelta(days=80)
    )
    assert at_80_days is None, "the setting of 130 days ago was pruned"
    later = [{"_p": "u1", "_t": ts(0.5), "_n": "visit", "n": "0.5"}]
    write_export(tmp_path / "later", 2, later)
    path = tmp_path / "later" / "revisions" / "2.json"
    assert load.load_file(con, local_file(path)).status == "loaded"
    row = db.rows(
        con, "select value, first_value from km2pg.person_properties where personid = :p", p=person
    )
    assert row == [["0.5", "130"]]
