"""Loading files into a real PostgreSQL: what lands, exactly once, and what is refused."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from km2pg import db, load, parse_worker, store
from km2pg.cli.demo import FOUNDING_QUERY
from km2pg.cli.synth import generate_export
from km2pg.errors import SourceError
from km2pg.load import LoadOptions
from km2pg.sources import discover_local, discover_s3, local_file
from tests.helpers import assert_matches_oracle, canonical_dump, check_invariants, write_export
from tests.oracle import oracle_dump, oracle_dump_of_paths, oracle_rejects

NOW = int(time.time())
T0 = NOW - 3 * 86400


def load_path(con: db.Connection, path: Path, **options: object) -> list[load.LoadResult]:
    return [
        load.load_file(con, f, LoadOptions(**options))  # type: ignore[arg-type]
        for f in discover_local(path)
    ]


def count(con: db.Connection, sql: str, **params: object) -> int:
    return int(db.scalar(con, sql, **params))


# ---------------------------------------------------------------------------------------------
# The real sample


def test_real_sample_loads_every_line_with_kissmetrics_duplicate_rule(con, sample_file):
    lines = [json.loads(x) for x in sample_file.read_text().splitlines() if x.strip()]
    expected_events = {(x["_p"], int(x["_t"])) for x in lines}
    expected_actions = {(x["_p"], int(x["_t"]), x["_n"].strip().lower()) for x in lines}

    (result,) = load_path(con, sample_file)

    assert result.status == "loaded"
    assert result.lines == 6354
    assert result.rejects == 0
    assert count(con, "select count(*) from km2pg.events") == len(expected_events)
    assert count(con, "select count(*) from km2pg.event_actions") == len(expected_actions)
    check_invariants(con)


def test_real_sample_matches_the_oracle(con, sample_file):
    load_path(con, sample_file)
    assert canonical_dump(con) == oracle_dump([(1, sample_file.read_bytes())])


# ---------------------------------------------------------------------------------------------
# Semantics


def test_messy_synthetic_export_matches_the_oracle(con, tmp_path):
    export = generate_export(tmp_path, lines=20_000, files=4, seed=7, messy=True, days=40)
    results = load_path(con, tmp_path / "revisions")
    assert [r.status for r in results] == ["loaded"] * 4
    assert canonical_dump(con) == oracle_dump_of_paths(export.files)
    # Every line is counted, and exactly the lines the oracle refuses are kept as rejects.
    assert sum(r.lines for r in results) == export.lines == 20_000
    expected_rejects = {
        (r.fileid, lineno)
        for r, path in zip(results, export.files, strict=True)
        for lineno in oracle_rejects(path.read_bytes())
    }
    assert len(expected_rejects) > 0
    assert [r.rejects for r in results] == [
        len(oracle_rejects(path.read_bytes())) for path in export.files
    ]
    assert {tuple(x) for x in db.rows(con, "select fileid, lineno from km2pg.rejects")} == (
        expected_rejects
    )
    check_invariants(con)


def test_a_file_parsed_by_worker_processes_matches_the_oracle(con, tmp_path, monkeypatch):
    monkeypatch.setattr(load, "PARSE_IN_WORKERS_MIN_BYTES", 0)
    monkeypatch.setattr(parse_worker, "BATCH_LINES", 2_000)
    generate_export(tmp_path, lines=20_000, files=1, seed=8, messy=True, days=40)
    (file,) = discover_local(tmp_path)
    result = load.load_file(con, file, LoadOptions(parse_in_workers=True))
    assert result.status == "loaded"
    assert result.rejects > 0
    assert canonical_dump(con) == oracle_dump_of_paths([Path(file.path)])
    check_invariants(con)


def test_founding_query_counts_checkouts_of_the_last_week(con, tmp_path):
    export = generate_export(tmp_path, lines=30_000, files=3, seed=3, days=21)
    load_path(con, tmp_path)
    week_ago = NOW - 7 * 86400
    # Independent count: distinct (identity, second) with a 'checkout successful' line.
    expected = set()
    for path in export.files:
        for raw in path.read_text().splitlines():
            line = json.loads(raw)
            if line.get("_n") == "checkout successful" and int(line["_t"]) >= week_ago + 5:
                expected.add((line["_p"], int(line["_t"])))
    con.run("SET search_path = km2pg")
    got = count(con, FOUNDING_QUERY)
    # The window moves with now(): allow only the seconds this test has been running. The
    # synthetic week's shape moves the count with the hour the test runs (about 95 to 135).
    assert len(expected) > 50
    assert abs(got - len(expected)) <= 3


def test_an_event_is_one_identity_in_one_second_with_all_its_actions(con, tmp_path):
    write_export(
        tmp_path,
        1,
        [
            {"_p": "ann", "_t": T0, "_n": "Visited Site", "referrer": "google"},
            {"_p": "ann", "_t": T0, "_n": "viewed product", "product": "shoe"},
            {"_p": "ann", "_t": T0, "plan": "pro"},
            {"_p": "ann", "_t": T0 + 1, "_n": "visited site"},
        ],
    )
    load_path(con, tmp_path)
    assert count(con, "select count(*) from km2pg.events") == 2
    assert db.rows(
        con,
        """
        select a.name from km2pg.event_actions join km2pg.actions a using (actionid)
         where eventid = km2pg.make_eventid(
            (select userid from km2pg.users where name = 'ann'), to_timestamp(:t))
         order by 1""",
        t=T0,
    ) == [["viewed product"], ["visited site"]]
    props = dict(
        db.rows(
            con,
            """
        select k.name, p.value from km2pg.event_properties p join km2pg.keys k using (keyid)""",
        )
    )
    assert props == {"referrer": "google", "product": "shoe", "plan": "pro"}


def test_property_set_lines_make_events_without_actions_and_aliases_make_none(con, tmp_path):
    write_export(
        tmp_path,
        1,
        [
            {"_p": "bob", "_t": T0, "country": "Brazil"},
            {"_p": "bob", "_t": T0 + 5, "_p2": "bob@example.com"},
        ],
    )
    load_path(con, tmp_path)
    assert count(con, "select count(*) from km2pg.events") == 1
    assert count(con, "select count(*) from km2pg.event_actions") == 0
    assert db.rows(con, "select actionid from km2pg.event_properties") == [[None]]
    assert count(con, "select count(*) from km2pg.users") == 2
    assert count(con, "select count(*) from km2pg.aliases") == 1


def test_property_conflicts_keep_the_latest_revision_and_line_in_any_load_order(
    pg_admin, template_database, tmp_path
):
    from tests.conftest import create_database, drop_database

    a = write_export(
        tmp_path / "a",
        100,
        [{"_p": "c", "_t": T0, "plan": "old"}, {"_p": "c", "_t": T0, "plan": "newer in file"}],
    )
    b = write_export(tmp_path / "b", 101, [{"_p": "c", "_t": T0, "_n": "paid", "plan": "newest"}])
    for order in ([a, b], [b, a]):
        settings = create_database(pg_admin, template_database)
        try:
            with db.connection(settings) as con:
                load.prepare_connection(con)
                for path in order:
                    load.load_file(con, local_file(path))
                assert db.rows(
                    con,
                    """
                    select p.value, a.name, p.revision, p.lineno from km2pg.event_properties p
                      left join km2pg.actions a using (actionid)""",
                ) == [["newest", "paid", 101, 1]]
        finally:
            drop_database(pg_admin, settings)


def test_values_keep_their_case_and_names_are_lowercased_and_trimmed(con, tmp_path):
    write_export(
        tmp_path,
        1,
        [
            '{"_p":"Dee","_t":T0,"_n":"  Signed Up ","Plan Name":"Pro PLAN","Amount":12.5,'
            '"Ok":true,"Tags":["a","b"],"Gone":null,"city":"Paran\\303\\241"}'.replace(
                "T0", str(T0)
            ),
        ],
    )
    load_path(con, tmp_path)
    assert db.rows(con, "select name from km2pg.actions") == [["signed up"]]
    assert db.rows(con, "select name from km2pg.users") == [["Dee"]]
    props = dict(
        db.rows(
            con,
            """
        select k.name, p.value from km2pg.event_properties p join km2pg.keys k using (keyid)""",
        )
    )
    assert props == {
        "plan name": "Pro PLAN",
        "amount": "12.5",
        "ok": "true",
        "tags": '["a","b"]',
        "city": "Paraná",
    }


def test_text_with_tabs_newlines_backslashes_and_nul_survives_copy(con, tmp_path):
    value = "a\tb\nc\\d\re\u0000f \\N"
    write_export(tmp_path, 1, [{"_p": "tab\tman", "_t": T0, "note": value}])
    load_path(con, tmp_path)
    assert db.rows(con, "select name from km2pg.users") == [["tab\tman"]]
    assert db.rows(con, "select value from km2pg.event_properties") == [[value.replace("\0", "")]]


def test_events_land_in_month_partitions_created_on_demand(con, tmp_path):
    old = int(datetime(2019, 2, 14, 12, tzinfo=UTC).timestamp())
    write_export(
        tmp_path,
        1,
        [
            {"_p": "x", "_t": old, "_n": "late"},
            {"_p": "x", "_t": T0, "_n": "now"},
        ],
    )
    load_path(con, tmp_path)
    # Read through the partitions by name (on Citus, tableoid names a shard on a worker).
    assert db.rows(con, "select t from km2pg.events_2019_02") == [
        [datetime.fromtimestamp(old, UTC)]
    ]
    assert db.rows(con, "select km2pg.eventid_time(eventid) from km2pg.event_actions_2019_02") == [
        [datetime.fromtimestamp(old, UTC)]
    ]


# ---------------------------------------------------------------------------------------------
# Exactly once


def test_loading_a_file_again_changes_nothing_and_is_recorded_as_skipped(con, tmp_path):
    generate_export(tmp_path, lines=2_000, files=2, seed=1)
    first = load_path(con, tmp_path)
    before = canonical_dump(con)
    again = load_path(con, tmp_path)
    assert [r.status for r in first] == ["loaded", "loaded"]
    assert [r.status for r in again] == ["skipped", "skipped"]
    assert canonical_dump(con) == before
    assert db.rows(con, "select status, count(*) from km2pg.files group by 1 order by 1") == [
        ["loaded", 2],
        ["skipped", 2],
    ]


def test_the_same_export_file_from_another_folder_or_gzipped_is_recognized(con, tmp_path):
    generate_export(tmp_path / "a", lines=1_000, files=1, seed=2)
    src = tmp_path / "a" / "revisions" / "22770.json"
    copy = tmp_path / "elsewhere" / "revisions" / "22770.json"
    copy.parent.mkdir(parents=True)
    shutil.copy(src, copy)
    gz = tmp_path / "zipped" / "revisions" / "22770.json.gz"
    gz.parent.mkdir(parents=True)
    gz.write_bytes(gzip.compress(src.read_bytes()))
    statuses = [load.load_file(con, local_file(p)).status for p in (src, copy, gz)]
    assert statuses == ["loaded", "skipped", "skipped"]


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A moto S3 with an empty bucket ``km-export``."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    import boto3
    from moto import mock_aws

    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="km-export")
        yield client


@pytest.mark.parametrize("order", [("s3", "disk", "s3 gzipped"), ("disk", "s3", "s3 gzipped")])
def test_the_same_file_from_s3_and_from_disk_is_recognized_either_way(con, tmp_path, s3, order):
    export = generate_export(tmp_path, lines=1_000, files=1, seed=2)
    (path,) = export.files
    s3.put_object(Bucket="km-export", Key="site/revisions/22770.json", Body=path.read_bytes())
    s3.put_object(
        Bucket="km-export",
        Key="zipped/revisions/22770.json.gz",
        Body=gzip.compress(path.read_bytes()),
    )
    (plain,) = discover_s3("s3://km-export/site/", client=s3)
    (zipped,) = discover_s3("s3://km-export/zipped/", client=s3)
    sources = {"s3": plain, "disk": local_file(path), "s3 gzipped": zipped}
    statuses = [load.load_file(con, sources[name]).status for name in order]
    assert statuses == ["loaded", "skipped", "skipped"]
    md5 = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
    assert db.rows(
        con, "select export_key, content_md5, status from km2pg.files order by fileid"
    ) == [
        ["revisions/22770.json", md5, "loaded"],
        ["revisions/22770.json", md5, "skipped"],
        ["revisions/22770.json", md5, "skipped"],
    ]
    assert_matches_oracle(con, [path])


def test_new_content_under_a_loaded_export_key_loads_as_another_file(con, tmp_path):
    """README ("Exactly once"): a file is its export key and its content's MD5. Different
    content under a key already loaded is not a reload: it loads, adding its lines to what the
    first content loaded (nothing is taken back); a property both set on one event from the
    same line number keeps the greater value, whichever loads first."""
    first = write_export(
        tmp_path / "first",
        5,
        [{"_p": "ann", "_t": T0, "_n": "signed up", "plan": "basic"}, {"_p": "bob", "_t": T0}],
    )
    second = write_export(
        tmp_path / "second",
        5,
        [{"_p": "ann", "_t": T0, "plan": "pro"}, {"_p": "cat", "_t": T0, "_n": "signed up"}],
    )
    statuses = [load.load_file(con, local_file(p)).status for p in (first, second, first, second)]
    assert statuses == ["loaded", "loaded", "skipped", "skipped"]
    assert db.rows(
        con,
        """select export_key, content_md5, status from km2pg.files
            where status = 'loaded' order by fileid""",
    ) == [
        ["revisions/5.json", _md5(first), "loaded"],
        ["revisions/5.json", _md5(second), "loaded"],
    ]
    assert db.rows(con, "select name from km2pg.users order by 1") == [["ann"], ["bob"], ["cat"]]
    assert db.rows(
        con,
        """select u.name, k.name, p.value, a.name, p.revision, p.lineno
             from km2pg.event_properties p join km2pg.events using (eventid)
             join km2pg.users u using (userid) join km2pg.keys k using (keyid)
             left join km2pg.actions a on a.actionid = p.actionid""",
    ) == [["ann", "plan", "pro", None, 5, 1]]
    assert_matches_oracle(con, [first, second])


def test_new_content_under_a_loaded_export_key_gives_the_same_data_in_either_order(
    pg_admin, template_database, tmp_path
):
    from tests.conftest import create_database, drop_database

    first = write_export(tmp_path / "a", 5, [{"_p": "ann", "_t": T0, "_n": "x", "plan": "b"}])
    second = write_export(tmp_path / "b", 5, [{"_p": "ann", "_t": T0, "plan": "a"}])
    dumps = []
    for order in ([first, second], [second, first]):
        settings = create_database(pg_admin, template_database)
        try:
            with db.connection(settings) as con:
                load.prepare_connection(con)
                assert [load.load_file(con, local_file(p)).status for p in order] == [
                    "loaded",
                    "loaded",
                ]
                dumps.append(canonical_dump(con))
        finally:
            drop_database(pg_admin, settings)
    assert dumps[0] == dumps[1]
    assert [row[3:5] for row in dumps[0]["event_properties"]] == [("b", "x")]


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def test_a_forced_reload_is_harmless(con, tmp_path):
    generate_export(tmp_path, lines=3_000, files=2, seed=4, messy=True)
    load_path(con, tmp_path)
    before = canonical_dump(con)
    con.run("DELETE FROM km2pg.files")  # forget the ledger: the data must dedupe itself
    results = load_path(con, tmp_path)
    assert [r.status for r in results] == ["loaded", "loaded"]
    assert all(r.events == 0 and r.actions == 0 for r in results)
    assert canonical_dump(con) == before
    check_invariants(con)


# ---------------------------------------------------------------------------------------------
# Bad input


def test_bad_lines_are_kept_with_their_reason_while_the_rest_loads(con, tmp_path):
    write_export(
        tmp_path,
        1,
        [
            {"_p": "ok", "_t": T0, "_n": "fine"},
            "{not json",
            "[1, 2]",
            {"_t": T0, "_n": "no person"},
            {"_p": "ms", "_t": T0 * 1000, "_n": "milliseconds"},
        ]
        + [{"_p": f"u{i}", "_t": T0 + i, "_n": "fine"} for i in range(40)],
    )
    (result,) = load_path(con, tmp_path)
    assert result.status == "loaded"
    assert result.rejects == 4
    rejects = db.rows(con, "select lineno, reason, raw from km2pg.rejects order by lineno")
    assert [r[0] for r in rejects] == [2, 3, 4, 5]
    assert rejects[1][1] == "not a JSON object (array)"
    assert rejects[2][1] == "missing _p"
    assert "future" in rejects[3][1]
    assert rejects[0][2] == "{not json"
    assert count(con, "select count(*) from km2pg.events") == 41


def test_a_file_over_the_reject_threshold_loads_nothing_and_is_recorded_failed(con, tmp_path):
    write_export(tmp_path, 1, [{"_p": "a", "_t": T0, "_n": "x"}] * 8 + ["garbage"] * 2)
    (result,) = load_path(con, tmp_path)
    assert result.status == "failed"
    assert result.error == "2 of 10 lines rejected (20.0%, over the 10% limit)"
    assert count(con, "select count(*) from km2pg.events") == 0
    assert count(con, "select count(*) from km2pg.users") == 0
    assert db.rows(con, "select status, rejects from km2pg.files") == [["failed", 2]]
    assert count(con, "select count(*) from km2pg.rejects") == 2
    (relaxed,) = load_path(con, tmp_path, max_reject_share=0.5)
    assert relaxed.status == "loaded"


def good_and_bad(good: int, bad: int) -> list[str | dict[str, Any]]:
    """``good`` usable lines, then ``bad`` lines that are not JSON, and a blank line (which
    counts for neither)."""
    lines: list[str | dict[str, Any]] = [
        {"_p": f"u{i}", "_t": T0 + i, "_n": "x"} for i in range(good)
    ]
    return [*lines, "", *(["garbage"] * bad)]


@pytest.mark.parametrize(
    ("bad", "status", "events", "error"),
    [
        (10, "loaded", 90, None),
        (11, "failed", 0, "11 of 100 lines rejected (11.0%, over the 10% limit)"),
    ],
)
def test_ten_percent_rejected_loads_and_one_line_more_fails(
    con, tmp_path, bad, status, events, error
):
    path = write_export(tmp_path, 1, good_and_bad(100 - bad, bad))
    result = load.load_file(con, local_file(path))
    assert (result.status, result.lines, result.rejects, result.error) == (status, 101, bad, error)
    assert count(con, "select count(*) from km2pg.events") == events


def test_a_failed_file_keeps_its_first_10000_rejects(con, tmp_path):
    path = write_export(tmp_path, 1, good_and_bad(1, 10_050))
    result = load.load_file(con, local_file(path))
    assert (result.status, result.rejects) == ("failed", 10_050)
    assert db.rows(con, "select rejects from km2pg.files") == [[10_050]]
    # Lines 1 and 2 are the good and the blank one; the rejects kept are lines 3 to 10,002.
    assert db.rows(con, "select count(*), min(lineno), max(lineno) from km2pg.rejects") == [
        [10_000, 3, 10_002]
    ]


def test_a_loaded_file_keeps_every_reject_even_past_10000(con, tmp_path):
    path = write_export(tmp_path, 1, good_and_bad(1, 10_050))
    result = load.load_file(con, local_file(path), LoadOptions(max_reject_share=1.0))
    assert (result.status, result.rejects) == ("loaded", 10_050)
    assert count(con, "select count(*) from km2pg.rejects") == 10_050


def test_an_unreadable_file_fails_alone_and_leaves_nothing_behind(con, tmp_path):
    path = write_export(tmp_path, 1, [{"_p": "a", "_t": T0, "_n": "x"}])
    broken = tmp_path / "revisions" / "2.json.gz"
    broken.write_bytes(gzip.compress(path.read_bytes())[:-12] + b"garbage!" * 3)
    with pytest.raises(SourceError):
        load.load_file(con, local_file(broken))
    assert count(con, "select count(*) from km2pg.events") == 0
    assert load.load_file(con, local_file(path)).status == "loaded"


def test_a_failure_inside_the_load_transaction_leaves_no_half_load(con, tmp_path, monkeypatch):
    generate_export(tmp_path, lines=2_000, files=1, seed=5)

    def explode(*args: object, **kwargs: object) -> int:
        raise RuntimeError("crash after the facts went in")

    monkeypatch.setattr(store, "record", explode)
    with pytest.raises(RuntimeError):
        load_path(con, tmp_path)
    monkeypatch.undo()
    for table in ("events", "event_actions", "event_properties", "users", "aliases", "files"):
        assert count(con, f"select count(*) from km2pg.{table}") == 0, table
    (result,) = load_path(con, tmp_path)
    assert result.status == "loaded"


# ---------------------------------------------------------------------------------------------
# Identities


@pytest.mark.parametrize("order", [[0, 1, 2], [2, 1, 0], [1, 2, 0]])
def test_alias_chains_join_one_person_in_any_order(con, tmp_path, order):
    pairs = [("anon1", "ann@x.com"), ("anon2", "ann@x.com"), ("anon3", "anon2")]
    for n, i in enumerate(order):
        a, b = pairs[i]
        write_export(
            tmp_path,
            10 + n,
            [{"_p": a, "_t": T0 + n, "_p2": b}, {"_p": "other", "_t": T0, "_n": "x"}],
        )
    load_path(con, tmp_path)
    persons = dict(db.rows(con, "select name, personid from km2pg.users"))
    assert len({persons[n] for n in ("anon1", "anon2", "anon3", "ann@x.com")}) == 1
    assert persons["other"] != persons["anon1"]
    check_invariants(con)


def test_merging_two_persons_later_reunites_all_their_identities(con, tmp_path):
    write_export(
        tmp_path, 1, [{"_p": "a1", "_t": T0, "_p2": "a2"}, {"_p": "b1", "_t": T0, "_p2": "b2"}]
    )
    write_export(tmp_path, 2, [{"_p": "b2", "_t": T0 + 9, "_p2": "a2"}])
    load_path(con, tmp_path)
    assert count(con, "select count(distinct personid) from km2pg.users") == 1
    check_invariants(con)


# ---------------------------------------------------------------------------------------------
# The loader's session


def test_a_loading_session_holds_an_hourly_files_staging_in_its_temp_buffers(con):
    assert db.scalar(con, "SHOW temp_buffers") == store.TEMP_BUFFERS


def test_preparing_a_connection_again_after_a_load_keeps_it_working(con, tmp_path):
    # temp_buffers cannot change once a temporary table was used: the second setup keeps it.
    first = write_export(tmp_path / "a", 100, [{"_p": "a", "_t": T0, "_n": "visited"}])
    second = write_export(tmp_path / "b", 101, [{"_p": "b", "_t": T0, "_n": "visited"}])
    assert [r.status for r in load_path(con, first)] == ["loaded"]
    load.prepare_connection(con)
    assert [r.status for r in load_path(con, second)] == ["loaded"]
    assert db.scalar(con, "SHOW temp_buffers") == store.TEMP_BUFFERS
    assert count(con, "select count(*) from km2pg.events") == 2
