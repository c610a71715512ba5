"""Forgetting a person: everything about them goes, in one transaction, and no later load brings
them back, a forced reload of every file with the ledger cleared included."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from km2pg import db, load
from km2pg.cli.commands import main
from km2pg.cli.synth import generate_export
from km2pg.dsn import ConnectionSettings
from km2pg.errors import ConfigError
from km2pg.forget import ForgetResult, forget, identity_hash
from km2pg.sources import discover_local
from tests.conftest import create_database, drop_database
from tests.helpers import canonical_dump, check_invariants, dsn_of, write_export

NOW = int(time.time())
END = datetime.fromtimestamp(NOW, UTC)
ANN = ("ann", "ann@example.com", "ann-phone")
"""One person: these identities and a newcomer per file, joined by aliases."""
NEWCOMERS = ("newcomer-22770", "newcomer-22771", "newcomer-22772")


def ann_lines(revision: int) -> list[str]:
    """Ann's lines for one file: events with properties, a property set, aliases, a rejected
    line quoting her, and a new identity aliased to her, with an event of its own."""
    t = NOW - 3600 * 24 + (revision % 100) * 60
    lines: list[dict[str, Any] | str] = [
        {"_p": "ann", "_t": t, "_n": "ann only action", "referrer": "gold", "ann only key": "x"},
        {
            "_p": "ann@example.com",
            "_t": t + 1,
            "_n": "visited site",
            "referrer": f"https://example.com/{revision}",
        },
        {"_p": "ann-phone", "_t": t + 2, "referrer": "platinum"},
        {"_p": "ann", "_p2": "ann@example.com", "_t": t + 3},
        {"_p": "ann-phone", "_p2": "ann", "_t": t + 4},
        {"_p": "ann", "_t": 5, "_n": "far too early"},  # rejected: _t before 2000
        {"_p": f"newcomer-{revision}", "_p2": "ann-phone", "_t": t + 5},
        {"_p": f"newcomer-{revision}", "_t": t + 6, "_n": "visited site"},
    ]
    return [line if isinstance(line, str) else json.dumps(line) for line in lines]


def others_lines(revision: int) -> list[str]:
    """Bob's rejected line (it stays a reject)."""
    return [json.dumps({"_p": "bob", "_t": 7 + revision, "_n": "far too early"})]


def write_files(folder: Path, *, with_ann: bool) -> list[Path]:
    """Three files of synthetic traffic, plus our lines appended (so every other line keeps its
    number); without Ann, her lines are blank lines, which keeps the numbers of the rest too."""
    generate_export(folder, lines=3_000, files=3, seed=12, days=2, end=END)
    paths = sorted(folder.glob("revisions/*.json"))
    for path in paths:
        revision = int(path.stem)
        ann = ann_lines(revision) if with_ann else [""] * len(ann_lines(revision))
        with path.open("a", encoding="utf-8") as out:
            out.write("\n".join([*ann, *others_lines(revision)]) + "\n")
    return paths


def load_all(con: db.Connection, paths: list[Path]) -> list[load.LoadResult]:
    results = [load.load_file(con, file) for path in paths for file in discover_local(path)]
    assert all(r.status == "loaded" for r in results), [r.error for r in results]
    return results


def facts(con: db.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Everything a load leaves, by text (canonical dump), with the rejects by file and line."""
    dump = canonical_dump(con)
    dump["rejects"] = sorted(
        tuple(row)
        for row in db.rows(
            con,
            "select f.export_key, r.lineno, r.reason, r.raw from km2pg.rejects r"
            " join km2pg.files f using (fileid)",
        )
    )
    return dump


def without_dictionaries(dump: dict[str, list[tuple[Any, ...]]]) -> dict[str, Any]:
    return {k: v for k, v in dump.items() if k not in ("actions", "keys")}


@pytest.fixture
def never_had_ann(pg_admin: ConnectionSettings, template_database: str, tmp_path: Path):
    """The facts of a database that loaded the same files without Ann's lines."""
    settings = create_database(pg_admin, template_database)
    try:
        with db.connection(settings) as con:
            load.prepare_connection(con)
            load_all(con, write_files(tmp_path / "without", with_ann=False))
            yield facts(con)
    finally:
        drop_database(pg_admin, settings)


def names_in(con: db.Connection) -> set[str]:
    return {name for (name,) in db.rows(con, "select name from km2pg.users")}


def test_forget_then_reload_every_file_with_the_ledger_cleared_ann_stays_gone(
    con, tmp_path, never_had_ann
):
    paths = write_files(tmp_path / "with", with_ann=True)
    load_all(con, paths)
    assert {*ANN, *NEWCOMERS} <= names_in(con)

    result = forget(con, ["ann@example.com"])
    assert (result.persons, result.identities, result.unknown) == (1, 6, 0)
    assert result.events == 4 * 3  # four events a file (the alias lines make none)
    assert result.suppressed == 6
    assert result.rejects == 3  # the rejected line quoting her, in each file
    check_invariants(con)
    after_forget = facts(con)
    assert not {*ANN, *NEWCOMERS} & names_in(con)
    # Everyone else is exactly as if Ann had never been loaded (her action and key names stay
    # in the dictionaries, shared vocabulary rather than her data).
    assert without_dictionaries(after_forget) == without_dictionaries(never_had_ann)
    assert set(after_forget["actions"]) - set(never_had_ann["actions"]) == {("ann only action",)}
    assert set(after_forget["keys"]) - set(never_had_ann["keys"]) == {("ann only key",)}

    # A forced reload: the ledger forgets every file, and every file loads again.
    con.run("DELETE FROM km2pg.files")
    reloaded = load_all(con, paths)
    check_invariants(con)
    assert not {*ANN, *NEWCOMERS} & names_in(con)
    assert facts(con) == after_forget
    # Her eight lines a file are suppressed, not rejected; bob's rejected line stays rejected.
    assert [(r.suppressed, r.rejects) for r in reloaded] == [(8, 1)] * 3
    ledger = db.rows(con, "select suppressed, rejects from km2pg.files order by fileid")
    assert ledger == [[8, 1]] * 3


def test_a_dry_run_changes_nothing_and_reports_what_forgetting_does(con, tmp_path):
    load_all(con, write_files(tmp_path, with_ann=True))
    before = facts(con)
    dry = forget(con, ["ann", "nobody-we-know"], dry_run=True)
    assert facts(con) == before
    assert db.scalar(con, "select count(*) from km2pg.suppressed_identities") == 0
    real = forget(con, ["ann", "nobody-we-know"])
    assert dry == ForgetResult(**{**real.__dict__, "dry_run": True})
    assert real.unknown == 1
    assert real.suppressed == 7  # her six identities and the unknown name


def test_the_suppression_list_keeps_hashes_of_the_names_never_the_names(con, tmp_path):
    load_all(con, write_files(tmp_path, with_ann=True))
    forget(con, ["ann"])
    kept = {
        bytes(h) for (h,) in db.rows(con, "select name_sha256 from km2pg.suppressed_identities")
    }
    assert kept == {identity_hash(name) for name in (*ANN, *NEWCOMERS)}
    # Forgetting again finds nobody and adds nothing.
    again = forget(con, ["ann"])
    assert (again.persons, again.identities, again.suppressed, again.unknown) == (0, 0, 0, 1)


def test_an_identity_forgotten_before_it_arrives_never_loads(con, tmp_path):
    result = forget(con, ["ann-phone"])
    assert (result.unknown, result.suppressed, result.identities) == (1, 1, 0)
    load_all(con, write_files(tmp_path, with_ann=True))
    names = names_in(con)
    assert "ann-phone" not in names
    # Linked to each other, but to ann-phone only by suppressed alias lines: two persons.
    assert {"ann", "ann@example.com", *NEWCOMERS} <= names
    persons = "select count(distinct personid) from km2pg.users where name = any(:n)"
    assert db.scalar(con, persons, n=["ann", "ann@example.com", *NEWCOMERS]) == 4


def test_the_persons_person_properties_rows_go_and_no_one_elses(con, tmp_path):
    load_all(con, write_files(tmp_path, with_ann=True))
    per_person = """
        select count(*) filter (where personid = (select personid from km2pg.users
                                                   where name = 'ann')),
               count(*) filter (where personid <> (select personid from km2pg.users
                                                    where name = 'ann'))
          from km2pg.person_properties
    """
    (anns, others) = db.rows(con, per_person)[0]
    assert anns > 0
    assert others > 0
    assert forget(con, ["ann"]).person_properties == anns
    remaining = db.scalar(con, "select count(*) from km2pg.person_properties")
    assert remaining == others
    drift = db.scalar(
        con,
        """select count(*) from km2pg.person_property_state s
            where not exists (select from km2pg.users u where u.personid = s.personid)""",
    )
    assert drift == 0


def test_nothing_to_forget_is_an_error(con):
    for identities in ([], [""]):
        with pytest.raises(ConfigError, match="name at least one identity"):
            forget(con, identities)


def test_the_cli_prints_counts_never_names(database, tmp_path, capsys):
    dsn = dsn_of(database)
    write_files(tmp_path / "export", with_ann=True)
    assert main(["load", str(tmp_path / "export"), "--dsn", dsn, "--quiet"]) == 0
    capsys.readouterr()
    assert main(["forget", "ann", "ann-phone", "--dry-run", "--dsn", dsn]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("dry run: would forget 1 person (6 identities): 12 events, ")
    list_file = tmp_path / "forget.txt"
    list_file.write_text("ann\n\nann-phone\n", encoding="utf-8")
    assert main(["forget", "--from", str(list_file), "--dsn", dsn]) == 0
    out2, err2 = capsys.readouterr()
    assert out2.startswith("forgot 1 person (6 identities): 12 events, ")
    assert "6 identities suppressed from later loads" in out2
    for text in (out, err, out2, err2):
        assert "ann" not in text
    with db.connection(database) as con:
        assert not {*ANN, *NEWCOMERS} & names_in(con)


def test_forget_waits_for_a_load_in_flight_and_holds_new_loads_off(database, con, tmp_path):
    load_all(con, write_files(tmp_path, with_ann=True))
    loader = db.connect(database)
    try:
        # What a load holds from its start to its commit (store.lock_for_load).
        loader.run("BEGIN")
        loader.run(
            "SELECT pg_advisory_xact_lock_shared(:ns, :key)",
            ns=db.LOCK_NAMESPACE,
            key=db.LOCK_PARTITIONS,
        )
        results: list[ForgetResult] = []
        forgetting = threading.Thread(target=lambda: results.append(forget(con, ["ann"])))
        forgetting.start()
        forgetting.join(1.0)
        assert forgetting.is_alive(), "forget must wait for the load in flight"
        loader.run("COMMIT")
        forgetting.join(60)
        assert results[0].identities == 6
    finally:
        db.close_quietly(loader)


def test_a_failed_file_keeps_its_rejects_but_not_those_of_a_forgotten_identity(con, tmp_path):
    forget(con, ["ann"])
    bad = ["garbage"] * 5 + [json.dumps({"_p": "ann", "_t": 5, "_n": "far too early"})]
    write_export(tmp_path, 1, [*bad, json.dumps({"_p": "bob", "_t": NOW, "_n": "visited site"})])
    [result] = [load.load_file(con, file) for file in discover_local(tmp_path)]
    assert (result.status, result.rejects, result.suppressed) == ("failed", 5, 1)
    raws = [raw for (raw,) in db.rows(con, "select raw from km2pg.rejects")]
    assert raws == ["garbage"] * 5


def test_a_name_seen_only_beside_a_forgotten_identity_is_not_created(con, tmp_path):
    forget(con, ["ann"])
    write_export(
        tmp_path,
        1,
        [
            json.dumps({"_p": "lonely", "_p2": "ann", "_t": NOW - 10}),
            json.dumps({"_p": "ann", "_p2": "friend", "_t": NOW - 9}),
            json.dumps({"_p": "friend", "_t": NOW - 8, "_n": "visited site"}),
        ],
    )
    [result] = [load.load_file(con, file) for file in discover_local(tmp_path)]
    assert (result.status, result.suppressed, result.events) == ("loaded", 2, 1)
    assert names_in(con) == {"friend"}
