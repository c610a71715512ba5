"""km2pg status: true sizes of every table, and "no file from Kissmetrics yet" before the first."""

from __future__ import annotations

import json
import time
from pathlib import Path

from km2pg import db, load
from km2pg.cli.commands import main
from km2pg.cli.synth import generate_export
from km2pg.sources import discover_local
from km2pg.status import status
from tests import citus_cluster
from tests.helpers import dsn_of, write_export

PLAIN = ("users", "aliases", "actions", "keys", "files", "rejects")
PARTITIONED = ("events", "event_actions", "event_properties")


def load_path(con: db.Connection, path: Path, **options: float) -> None:
    for file in discover_local(path):
        load.load_file(con, file, load.LoadOptions(**options))


@citus_cluster.single_node(
    "compares with the coordinator's own relations; on Citus status adds up every node's shards"
    " (tests/citus: test_status_reports_the_rows_and_sizes_on_the_shards)"
)
def test_every_table_shows_its_true_size_plain_tables_included(database, con, tmp_path):
    generate_export(tmp_path, lines=3_000, files=2, seed=4)
    write_export(tmp_path, 9, ["not json"])  # rejected, so rejects has a row
    load_path(con, tmp_path, max_reject_share=1.0)
    report = status(con)
    for table in PLAIN:
        true_size = db.scalar(con, "SELECT pg_total_relation_size(CAST(:t AS regclass))", t=table)
        assert report.tables[table] == true_size > 8192, table
    for table in PARTITIONED:
        true_size = db.scalar(
            con,
            """
            SELECT sum(pg_total_relation_size(c.oid)) FROM pg_inherits i
              JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = CAST(:t AS regclass)
            """,
            t=table,
        )
        assert report.tables[table] == true_size > 0, table


def test_plain_tables_count_rows_before_they_are_first_analyzed(database, con, tmp_path):
    write_export(
        tmp_path, 1, [{"_p": f"p{i}", "_t": int(time.time()), "_n": "x"} for i in range(50)]
    )
    load_path(con, tmp_path)
    # Not analyzed yet (reltuples -1): the live row count of the statistics system, once this
    # session has reported it.
    con.run("SELECT pg_stat_force_next_flush()")
    assert status(con).rows["users"] == 50


def test_before_the_first_file_status_says_so_with_the_time_since_install(
    database, tmp_path, capsys
):
    dsn = dsn_of(database)
    assert main(["status", "--dsn", dsn, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["no_file_yet"] is True
    assert report["installed_at"] is not None
    assert main(["status", "--dsn", dsn]) == 0
    text = capsys.readouterr().out
    assert "files:   no file from Kissmetrics yet (" in text
    assert " since the schema was created)" in text

    write_export(tmp_path, 1, [{"_p": "ann", "_t": int(time.time()), "_n": "x"}])
    assert main(["load", str(tmp_path), "--dsn", dsn, "--quiet"]) == 0
    assert main(["status", "--dsn", dsn]) == 0
    text = capsys.readouterr().out
    assert "no file from Kissmetrics yet" not in text
    assert "files:   1 loaded, 0 skipped, 0 failed" in text
