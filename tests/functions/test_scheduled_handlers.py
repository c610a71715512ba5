"""The pruner and reconciler functions, and `km2pg backfill`, with moto and a real database."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from km2pg import db
from km2pg.cli.commands import main
from km2pg.errors import ConfigError
from km2pg.handlers import loader, pruner, reconciler, runtime
from km2pg.handlers.config import Config
from km2pg.notifications import objects_in_message
from km2pg.reconcile import reconcile
from tests.functions.conftest import BUCKET
from tests.functions.test_loader_handler import export_body, put, s3_notification, sqs_event

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


def test_reconciler_queues_exactly_the_files_not_loaded(aws, database, context, monkeypatch):
    for n in range(1, 6):
        put(aws, f"revisions/{n}.json", export_body(n, f"r{n}"))
    put(aws, "index.csv", b"filename\n")
    meta = {"size": 0, "eTag": ""}
    loader.handler(sqs_event(s3_notification(("revisions/2.json", meta))), context)
    # Objects written just now are left to their own notifications: here, count them all.
    monkeypatch.setenv("KM2PG_RECONCILE_MIN_AGE_MINUTES", "0")
    runtime.reset()
    summary = reconciler.handler(schedule_event(), context)
    assert summary == {"listed": 5, "pending": 4, "enqueued": 4}
    assert queued(aws) == [f"revisions/{n}.json" for n in (1, 3, 4, 5)]


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


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "KM2PG_DB_SECRET_ARN"),
        ({"KM2PG_DSN": "host=x", "KM2PG_DB_SSLMODE": "sometimes"}, "KM2PG_DB_SSLMODE"),
        ({"KM2PG_DSN": "host=x", "KM2PG_RETENTION_DAYS": "soon"}, "KM2PG_RETENTION_DAYS"),
        ({"KM2PG_DSN": "host=x", "KM2PG_MAX_REJECT_SHARE": "2"}, "KM2PG_MAX_REJECT_SHARE"),
        ({"KM2PG_DSN": "host=x", "KM2PG_DB_SSLMODE": "verify-full"}, "KM2PG_DB_SSLROOTCERT"),
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
