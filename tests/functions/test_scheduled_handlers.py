"""The pruner and reconciler functions, and `km2pg backfill`, with moto and a real database."""

from __future__ import annotations

import gzip
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from km2pg import db
from km2pg.cli.commands import main
from km2pg.errors import ConfigError
from km2pg.handlers import loader, pruner, reconciler, runtime
from km2pg.handlers.config import Config
from km2pg.notifications import objects_in_message
from km2pg.reconcile import reconcile
from tests.functions.conftest import BUCKET
from tests.functions.test_loader_handler import (
    emitted,
    export_body,
    put,
    s3_notification,
    sqs_event,
)

NOW = int(time.time())


def schedule_event() -> dict[str, Any]:
    return {
        "version": "0",
        "id": "e",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": "2026-11-28T00:00:00Z",
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/km2pg"],
        "detail": {},
    }


def reconcile_now(aws: Any, database: Any, **when: Any) -> Any:
    """Reconcile the test bucket's revisions/ into the test queue (``min_age`` or ``now``)."""
    with db.connection(database) as con:
        return reconcile(
            con,
            aws.s3,
            aws.sqs,
            bucket=BUCKET,
            prefix="revisions/",
            queue_url=aws.queue_url,
            **when,
        )


def queued(aws: Any) -> list[str]:
    keys = []
    while True:
        got = aws.sqs.receive_message(QueueUrl=aws.queue_url, MaxNumberOfMessages=10)
        messages = got.get("Messages", [])
        if not messages:
            return sorted(keys)
        for message in messages:
            keys += [ref.key for ref in objects_in_message(message["Body"])]
            aws.sqs.delete_message(QueueUrl=aws.queue_url, ReceiptHandle=message["ReceiptHandle"])


def test_pruner_removes_events_older_than_the_retention(aws, database, context, monkeypatch):
    old = "".join(
        json.dumps({"_p": "o", "_t": NOW - d * 86400, "_n": "x"}) + "\n" for d in (100, 10)
    )
    meta = put(aws, "revisions/1.json", old.encode())
    loader.handler(sqs_event(s3_notification(("revisions/1.json", meta))), context)
    monkeypatch.setenv("KM2PG_RETENTION_DAYS", "30")
    runtime.reset()
    summary = pruner.handler(schedule_event(), context)
    assert summary["rows"]["events"] == 1
    assert summary["retention_days"] == 30
    with db.connection(database) as con:
        assert db.scalar(con, "select count(*) from km2pg.events") == 1


def test_reconciler_queues_exactly_the_files_not_loaded_and_counts_them_overdue(
    aws, database, context, monkeypatch, capsys
):
    for n in range(1, 6):
        put(aws, f"revisions/{n}.json", export_body(n, f"r{n}"))
    put(aws, "index.csv", b"filename\n")
    meta = {"size": 0, "eTag": ""}
    loader.handler(sqs_event(s3_notification(("revisions/2.json", meta))), context)
    # Objects written just now are left to their own notifications: here, count them all.
    monkeypatch.setenv("KM2PG_RECONCILE_MIN_AGE_MINUTES", "0")
    runtime.reset()
    summary = reconciler.handler(schedule_event(), context)
    assert summary == {"listed": 5, "pending": 4, "enqueued": 4, "in_flight": 0}
    assert queued(aws) == [f"revisions/{n}.json" for n in (1, 3, 4, 5)]
    assert emitted(capsys.readouterr().out)["FilesOverdue"] == [4.0]


def test_reconciled_messages_load_through_the_loader(aws, database, context):
    put(aws, "revisions/7.json", export_body(7, "late"))
    reconcile_now(aws, database, min_age=timedelta(0))
    message = aws.sqs.receive_message(QueueUrl=aws.queue_url)["Messages"][0]
    response = loader.handler(sqs_event(message["Body"]), context)
    assert response["batchItemFailures"] == []
    with db.connection(database) as con:
        assert db.scalar(con, "select status from km2pg.files") == "loaded"


def test_recent_objects_are_left_to_their_notification(aws, database):
    put(aws, "revisions/8.json", export_body(8))
    result = reconcile_now(aws, database, now=datetime.now(UTC) + timedelta(minutes=1))
    assert result.enqueued == 0


def test_files_that_failed_for_their_data_are_not_queued_again(aws, database, context):
    meta = put(aws, "revisions/9.json", b"garbage\n" * 3)
    loader.handler(sqs_event(s3_notification(("revisions/9.json", meta))), context)
    result = reconcile_now(aws, database, min_age=timedelta(0))
    assert (result.listed, result.pending) == (1, 0)


def test_backfill_command_queues_history(aws, database, capsys):
    for n in range(100, 123):
        put(aws, f"revisions/{n}.json", export_body(n))
    dsn = database.uri()
    assert main(["backfill", "--queue-url", aws.queue_url, "--bucket", BUCKET, "--dsn", dsn]) == 0
    assert "23 export files in s3://kissmetrics-export/revisions/, 23 not loaded, 23 queued" in (
        capsys.readouterr().out
    )
    assert len(queued(aws)) == 23


def test_a_queued_file_is_not_queued_again_within_the_visibility_timeout(aws, database):
    put(aws, "revisions/11.json", export_body(11))
    first = datetime.now(UTC) + timedelta(hours=1)
    window = timedelta(minutes=10)
    assert reconcile_now(aws, database, now=first, in_flight_for=window).enqueued == 1
    assert queued(aws) == ["revisions/11.json"]
    put(aws, "revisions/12.json", export_body(12))
    within = reconcile_now(
        aws, database, now=first + window - timedelta(seconds=1), in_flight_for=window
    )
    assert (within.pending, within.enqueued, within.in_flight) == (2, 1, 1)
    assert queued(aws) == ["revisions/12.json"]
    after = reconcile_now(
        aws, database, now=first + window + timedelta(seconds=1), in_flight_for=window
    )
    assert (after.pending, after.enqueued, after.in_flight) == (2, 1, 1)
    assert queued(aws) == ["revisions/11.json"]


def test_the_reconciler_records_when_it_queued_each_file(aws, database):
    put(aws, "revisions/13.json", export_body(13))
    put(aws, "revisions/14.json.gz", gzip.compress(export_body(14)))
    at = datetime.now(UTC) + timedelta(hours=1)
    reconcile_now(aws, database, now=at)
    with db.connection(database) as con:
        recorded = db.rows(con, "select export_key, queued_at from km2pg.queued order by 1")
    assert recorded == [["revisions/13.json", at], ["revisions/14.json", at]]


def test_a_loaded_file_is_never_queued_even_after_the_visibility_timeout(aws, database, context):
    put(aws, "revisions/15.json", export_body(15))
    first = datetime.now(UTC) + timedelta(hours=1)
    reconcile_now(aws, database, now=first, in_flight_for=timedelta(minutes=10))
    message = aws.sqs.receive_message(QueueUrl=aws.queue_url)["Messages"][0]
    assert loader.handler(sqs_event(message["Body"]), context)["batchItemFailures"] == []
    later = reconcile_now(aws, database, now=first + timedelta(days=1))
    assert (later.pending, later.enqueued, later.in_flight) == (0, 0, 0)


def test_the_reconciler_handler_reports_files_held_back_as_in_flight(
    aws, database, context, monkeypatch, capsys, caplog
):
    put(aws, "revisions/16.json", export_body(16))
    monkeypatch.setenv("KM2PG_RECONCILE_MIN_AGE_MINUTES", "0")
    monkeypatch.setenv("KM2PG_QUEUE_VISIBILITY_SECONDS", "600")
    runtime.reset()
    assert reconciler.handler(schedule_event(), context)["enqueued"] == 1
    capsys.readouterr()
    summary = reconciler.handler(schedule_event(), context)
    assert summary == {"listed": 1, "pending": 1, "enqueued": 0, "in_flight": 1}
    assert emitted(capsys.readouterr().out)["FilesInFlight"] == [1.0]
    assert [r.__dict__.get("in_flight") for r in caplog.records if r.msg == "reconciled"][-1] == 1


def test_backfill_respects_the_queues_visibility_timeout_unless_told_not_to(aws, database, capsys):
    put(aws, "revisions/17.json", export_body(17))
    args = ["backfill", "--queue-url", aws.queue_url, "--bucket", BUCKET, "--dsn", database.uri()]
    assert main(args) == 0
    assert main(args) == 0
    assert "1 not loaded, 0 queued, 1 held back as in flight" in capsys.readouterr().out
    assert main([*args, "--requeue-in-flight"]) == 0
    assert "1 not loaded, 1 queued" in capsys.readouterr().out
    assert queued(aws) == ["revisions/17.json"] * 2


def test_the_visibility_timeout_defaults_to_the_stacks_default():
    assert Config.from_env({"KM2PG_DSN": "host=x"}).queue_visibility_seconds == 3600
    config = Config.from_env({"KM2PG_DSN": "host=x", "KM2PG_QUEUE_VISIBILITY_SECONDS": "900"})
    assert config.queue_visibility_seconds == 900


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "KM2PG_DB_SECRET_ARN"),
        ({"KM2PG_DSN": "host=x", "KM2PG_DB_SSLMODE": "sometimes"}, "KM2PG_DB_SSLMODE"),
        ({"KM2PG_DSN": "host=x", "KM2PG_RETENTION_DAYS": "soon"}, "KM2PG_RETENTION_DAYS"),
        ({"KM2PG_DSN": "host=x", "KM2PG_MAX_REJECT_SHARE": "2"}, "KM2PG_MAX_REJECT_SHARE"),
        ({"KM2PG_DSN": "host=x", "KM2PG_DB_SSLMODE": "verify-full"}, "KM2PG_DB_SSLROOTCERT"),
        ({"KM2PG_DSN": "host=x", "KM2PG_QUEUE_VISIBILITY_SECONDS": "-1"}, "KM2PG_QUEUE_VIS"),
    ],
)
def test_configuration_errors_name_the_variable(env, message):
    with pytest.raises(ConfigError, match=message):
        Config.from_env(env)


def test_the_loader_needs_only_the_secret():
    config = Config.from_env({"KM2PG_DB_SECRET_ARN": "arn:aws:secretsmanager:x"})
    assert config.sslmode == "require"
    assert config.max_reject_share == 0.10
    assert "password" not in repr(config)


def test_cli_loads_straight_from_s3(aws, database, capsys):
    for n in (1, 2, 3):
        put(aws, f"site/revisions/{n}.json", export_body(n, f"s{n}"))
    put(aws, "site/index.csv", b"filename\n")
    assert main(["load", f"s3://{BUCKET}/site/", "--dsn", database.uri()]) == 0
    assert "3 loaded, 0 skipped, 0 failed" in capsys.readouterr().out
    with db.connection(database) as con:
        rows = db.rows(con, "select source, export_key, etag is not null from km2pg.files")
    assert sorted(rows) == [[f"s3://{BUCKET}", f"revisions/{n}.json", True] for n in (1, 2, 3)]


def test_a_secret_in_another_region_is_read_from_its_own_region(aws):
    from km2pg.handlers.config import secrets_manager_reader

    elsewhere = boto3.client("secretsmanager", region_name="eu-west-1")
    arn = elsewhere.create_secret(Name="km2pg-elsewhere", SecretString="{}")["ARN"]
    assert ":eu-west-1:" in arn
    assert secrets_manager_reader(arn) == "{}"
