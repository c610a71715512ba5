"""The loader function fed real AWS event shapes: S3 notifications in SQS, EventBridge, tests."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest

from km2pg import db, lookahead
from km2pg.errors import DatabaseUnavailable
from km2pg.handlers import loader, runtime
from km2pg.sources import ExportFile
from tests.functions.conftest import BUCKET, secret_for
from tests.helpers import canonical_dump
from tests.lambda_context import FakeContext

NOW = int(time.time())


def export_body(revision: int, person: str = "ann", lines: int = 3) -> bytes:
    rows = [
        {"_p": person, "_t": NOW - 60 + i, "_n": "visited site", "n": str(i)} for i in range(lines)
    ]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def put(aws: Any, key: str, body: bytes) -> dict[str, Any]:
    aws.s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    head = aws.s3.head_object(Bucket=BUCKET, Key=key)
    return {"size": head["ContentLength"], "eTag": head["ETag"].strip('"')}


def s3_notification(*objects: tuple[str, dict[str, Any]]) -> str:
    """The body S3 sends to SQS: keys URL-encoded, '+' for spaces."""
    return json.dumps(
        {
            "Records": [
                {
                    "eventVersion": "2.1",
                    "eventSource": "aws:s3",
                    "awsRegion": "us-east-1",
                    "eventTime": "2026-11-28T00:00:00.000Z",
                    "eventName": "ObjectCreated:Put",
                    "s3": {
                        "s3SchemaVersion": "1.0",
                        "configurationId": "km2pg",
                        "bucket": {"name": BUCKET, "arn": f"arn:aws:s3:::{BUCKET}"},
                        "object": {
                            "key": quote_plus(key, safe="/"),
                            "sequencer": "0A1B2C3D4E5F678901",
                            **meta,
                        },
                    },
                }
                for key, meta in objects
            ]
        }
    )


def eventbridge(key: str, meta: dict[str, Any]) -> str:
    return json.dumps(
        {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Object Created",
            "source": "aws.s3",
            "account": "123456789012",
            "time": "2026-11-28T00:00:00Z",
            "region": "us-east-1",
            "resources": [f"arn:aws:s3:::{BUCKET}"],
            "detail": {
                "version": "0",
                "bucket": {"name": BUCKET},
                "object": {"key": key, "size": meta["size"], "etag": meta["eTag"]},
                "reason": "PutObject",
            },
        }
    )


TEST_EVENT = json.dumps(
    {
        "Service": "Amazon S3",
        "Event": "s3:TestEvent",
        "Time": "2026-11-28T00:00:00.000Z",
        "Bucket": BUCKET,
        "RequestId": "X",
        "HostId": "Y",
    }
)


def sqs_event(*bodies: str) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": f"m{i}",
                "receiptHandle": f"r{i}",
                "body": body,
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": "1700000000000",
                    "SenderId": "x",
                    "ApproximateFirstReceiveTimestamp": "1700000000000",
                },
                "messageAttributes": {},
                "md5OfBody": "x",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:km2pg-load",
                "awsRegion": "us-east-1",
            }
            for i, body in enumerate(bodies)
        ]
    }


def failures(response: dict[str, Any]) -> list[str]:
    return sorted(item["itemIdentifier"] for item in response["batchItemFailures"])


def ledger(database) -> list[list[Any]]:
    with db.connection(database) as con:
        return db.rows(con, "select path, status from km2pg.files order by fileid")


def test_an_s3_notification_loads_the_file(aws, database, context):
    meta = put(aws, "revisions/1.json", export_body(1))
    response = loader.handler(sqs_event(s3_notification(("revisions/1.json", meta))), context)
    assert failures(response) == []
    assert ledger(database) == [["revisions/1.json", "loaded"]]
    with db.connection(database) as con:
        assert db.scalar(con, "select count(*) from km2pg.events") == 3


def test_an_eventbridge_object_created_event_loads_the_file(aws, database, context):
    meta = put(aws, "revisions/2.json", export_body(2))
    response = loader.handler(sqs_event(eventbridge("revisions/2.json", meta)), context)
    assert failures(response) == []
    assert ledger(database) == [["revisions/2.json", "loaded"]]


def test_the_s3_test_event_and_other_keys_are_acknowledged_and_ignored(aws, database, context):
    meta = put(aws, "index.csv", b"filename\n")
    response = loader.handler(
        sqs_event(TEST_EVENT, s3_notification(("index.csv", meta)), "not json at all"), context
    )
    assert failures(response) == []
    assert ledger(database) == []


@pytest.mark.parametrize(
    "key",
    [
        "site one/revisions/3.json",
        "a+b/revisions/4.json",
        "café/日本/revisions/5.json",
    ],
)
def test_url_encoded_keys_are_decoded(aws, database, context, key):
    meta = put(aws, key, export_body(3))
    response = loader.handler(sqs_event(s3_notification((key, meta))), context)
    assert failures(response) == []
    assert ledger(database) == [[key, "loaded"]]


def test_a_batch_of_several_messages_and_records_loads_them_all(aws, database, context):
    metas = {
        f"revisions/{n}.json": put(aws, f"revisions/{n}.json", export_body(n, f"p{n}"))
        for n in range(10, 15)
    }
    keys = list(metas)
    event = sqs_event(
        s3_notification((keys[0], metas[keys[0]]), (keys[1], metas[keys[1]])),
        s3_notification((keys[2], metas[keys[2]])),
        eventbridge(keys[3], metas[keys[3]]),
        s3_notification((keys[4], metas[keys[4]])),
    )
    assert failures(loader.handler(event, context)) == []
    assert sorted(r[0] for r in ledger(database)) == sorted(keys)


def test_each_file_of_a_batch_is_parsed_while_the_one_before_is_applied(
    aws, database, context, monkeypatch
):
    taken: list[str] = []
    take = lookahead.Lookahead.take

    def counted(this: lookahead.Lookahead, file: ExportFile) -> lookahead.Ahead | None:
        ahead = take(this, file)
        if ahead is not None:
            taken.append(file.path)
        return ahead

    monkeypatch.setattr(lookahead.Lookahead, "take", counted)
    keys = [f"revisions/{n}.json" for n in range(40, 44)]
    metas = {key: put(aws, key, export_body(n, f"p{n}")) for n, key in enumerate(keys)}
    event = sqs_event(
        s3_notification((keys[0], metas[keys[0]]), (keys[1], metas[keys[1]])),
        "not json at all",
        s3_notification((keys[2], metas[keys[2]])),
        eventbridge(keys[3], metas[keys[3]]),
    )
    assert failures(loader.handler(event, context)) == []
    assert ledger(database) == [[key, "loaded"] for key in keys]
    assert taken == keys[1:]
    with db.connection(database) as con:
        assert db.scalar(con, "select count(*) from km2pg.events") == 3 * len(keys)


def test_a_missing_object_fails_only_its_own_message(aws, database, context):
    meta = put(aws, "revisions/20.json", export_body(20))
    gone = {"size": 10, "eTag": "0" * 32}
    event = sqs_event(
        s3_notification(("revisions/20.json", meta)), s3_notification(("revisions/21.json", gone))
    )
    assert failures(loader.handler(event, context)) == ["m1"]
    statuses = dict(ledger(database))
    assert statuses == {"revisions/20.json": "loaded", "revisions/21.json": "failed"}


def test_a_file_over_the_reject_threshold_is_recorded_and_acknowledged(aws, database, context):
    meta = put(aws, "revisions/30.json", b"garbage\n" * 5 + export_body(30))
    response = loader.handler(sqs_event(s3_notification(("revisions/30.json", meta))), context)
    assert failures(response) == []
    assert ledger(database) == [["revisions/30.json", "failed"]]


def test_with_the_database_down_only_messages_needing_it_fail(aws, database, context, monkeypatch):
    meta = put(aws, "revisions/40.json", export_body(40))
    secret = json.loads(aws.secrets.get_secret_value(SecretId=aws.secret_arn)["SecretString"])
    secret.update(host="127.0.0.1", port=1)  # nothing listens there
    aws.secrets.put_secret_value(SecretId=aws.secret_arn, SecretString=json.dumps(secret))
    runtime.reset()
    event = sqs_event(s3_notification(("revisions/40.json", meta)), TEST_EVENT)
    assert failures(loader.handler(event, context)) == ["m0"]


def test_the_same_batch_delivered_twice_doubles_nothing(aws, database, context):
    metas = {
        f"revisions/{n}.json": put(aws, f"revisions/{n}.json", export_body(n, f"q{n}"))
        for n in (50, 51)
    }
    event = sqs_event(*(s3_notification((k, m)) for k, m in metas.items()))
    assert failures(loader.handler(event, context)) == []
    with db.connection(database) as con:
        first = canonical_dump(con)
    assert failures(loader.handler(event, context)) == []
    with db.connection(database) as con:
        assert canonical_dump(con) == first
    assert sorted(status for _, status in ledger(database)) == [
        "loaded",
        "loaded",
        "skipped",
        "skipped",
    ]


@pytest.fixture
def password_role(embedded_server, pg_admin, database) -> Iterator[str]:
    """A superuser role that must give its password: the embedded server trusts its socket, so
    a first pg_hba.conf line asks this role (only) for scram-sha-256. Undone afterwards."""
    role = f"km2pg_rotated_{uuid.uuid4().hex[:8]}"
    with db.connection(pg_admin) as con:
        hba = Path(db.scalar(con, "show hba_file"))
        run_formatted(con, "CREATE ROLE %I LOGIN SUPERUSER PASSWORD %L", role, "first-password")
    original = hba.read_text()
    hba.write_text(f"local all {role} scram-sha-256\n{original}")
    try:
        reload_until(pg_admin, lambda: refused(database, role, "wrong-password"))
        assert not refused(database, role, "first-password")
        yield role
    finally:
        hba.write_text(original)
        with db.connection(pg_admin) as con:
            con.run(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :r", r=role
            )
        with db.connection(database) as con:  # the partitions its loads created
            run_formatted(con, "REASSIGN OWNED BY %I TO CURRENT_USER", role)
            run_formatted(con, "DROP OWNED BY %I", role)
        with db.connection(pg_admin) as con:
            run_formatted(con, "DROP ROLE %I", role)
            con.run("SELECT pg_reload_conf()")


def run_formatted(con: db.Connection, template: str, *values: str) -> None:
    """Run a utility statement (no parameters possible) built by the server's own quoting."""
    sql = f"SELECT format('{template}', CAST(:a AS text), CAST(:b AS text))"
    con.run(str(db.scalar(con, sql, a=values[0], b=values[-1])))


def disconnect(con: db.Connection, role: str) -> None:
    con.run("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :r", r=role)


def load_revision(aws, context, revision: int) -> list[str]:
    """Put ``revisions/N.json`` and hand the handler its notification; the failed messages."""
    key = f"revisions/{revision}.json"
    meta = put(aws, key, export_body(revision))
    return failures(loader.handler(sqs_event(s3_notification((key, meta))), context))


def refused(database, role: str, password: str) -> bool:
    """Whether the server turns the login away (pg8000 may report a refused SCRAM login over a
    socket as a network error: any failure to connect counts)."""
    try:
        db.close_quietly(db.connect(replace(database, user=role, password=password)))
    except DatabaseUnavailable:
        return True
    return False


def reload_until(admin, condition, timeout: float = 10) -> None:
    with db.connection(admin) as con:
        con.run("SELECT pg_reload_conf()")
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the server never applied pg_hba.conf"
        time.sleep(0.05)  # the postmaster rereads pg_hba.conf on SIGHUP, asynchronously


def use_secret(aws, database, role: str, password: str) -> None:
    secret = {**json.loads(secret_for(database)), "username": role, "password": password}
    aws.secrets.put_secret_value(SecretId=aws.secret_arn, SecretString=json.dumps(secret))


def test_after_a_password_rotation_the_handler_reads_the_secret_again_and_reconnects(
    aws, database, context, password_role, pg_admin
):
    role = password_role
    use_secret(aws, database, role, "first-password")
    runtime.reset()
    meta = put(aws, "revisions/60.json", export_body(60))
    assert (
        failures(loader.handler(sqs_event(s3_notification(("revisions/60.json", meta))), context))
        == []
    )

    # Rotation: the server's password and the secret change; the container still holds the
    # old password, and its connection is gone (as after an idle timeout or a failover).
    with db.connection(pg_admin) as con:
        run_formatted(con, "ALTER ROLE %I PASSWORD %L", role, "second-password")
        disconnect(con, role)
    use_secret(aws, database, role, "second-password")
    assert refused(database, role, "first-password"), "the old password must no longer work"
    assert not refused(database, role, "second-password")

    meta = put(aws, "revisions/61.json", export_body(61))
    assert (
        failures(loader.handler(sqs_event(s3_notification(("revisions/61.json", meta))), context))
        == []
    )
    assert ledger(database) == [["revisions/60.json", "loaded"], ["revisions/61.json", "loaded"]]
    with db.connection(pg_admin) as con:
        assert (
            db.scalar(con, "SELECT count(*) FROM pg_stat_activity WHERE usename = :r", r=role) == 1
        ), "the handler's connection is the rotated role's"


def test_metrics_are_emitted_for_a_loaded_file(aws, database, context, capsys):
    meta = put(aws, "revisions/70.json", export_body(70))
    loader.handler(sqs_event(s3_notification(("revisions/70.json", meta))), context)
    emf = [
        json.loads(line)
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("{") and "_aws" in line
    ]
    names = {
        m["Name"] for doc in emf for d in doc["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]
    }
    assert {"FilesLoaded", "LinesLoaded", "LoadSeconds", "ExportLagSeconds"} <= names
    values = {k: v for doc in emf for k, v in doc.items() if k in ("FilesLoaded", "LinesLoaded")}
    assert values == {"FilesLoaded": [1.0], "LinesLoaded": [3.0]}


def emitted(out: str) -> dict[str, list[float]]:
    """Metric name -> the values the invocation's EMF documents carry."""
    found: dict[str, list[float]] = {}
    for line in out.splitlines():
        if not (line.startswith("{") and "_aws" in line):
            continue
        doc = json.loads(line)
        for directive in doc["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                value = doc[metric["Name"]]
                found.setdefault(metric["Name"], []).extend(
                    value if isinstance(value, list) else [value]
                )
    return found


def test_every_failed_message_is_counted(aws, database, context, capsys):
    meta = put(aws, "revisions/90.json", export_body(90))
    gone = {"size": 10, "eTag": "0" * 32}
    event = sqs_event(
        s3_notification(("revisions/90.json", meta)),
        s3_notification(("revisions/91.json", gone)),
        s3_notification(("revisions/92.json", gone)),
    )
    assert failures(loader.handler(event, context)) == ["m1", "m2"]
    assert emitted(capsys.readouterr().out)["MessagesFailed"] == [2.0]


def test_a_batch_whose_every_message_fails_is_still_counted(aws, database, context, capsys):
    gone = {"size": 10, "eTag": "0" * 32}
    with pytest.raises(Exception, match="All records failed"):
        loader.handler(sqs_event(s3_notification(("revisions/93.json", gone))), context)
    assert emitted(capsys.readouterr().out)["MessagesFailed"] == [1.0]


def test_an_unreachable_database_is_found_once_per_batch_and_counted(
    aws, database, context, capsys, caplog
):
    secret = json.loads(aws.secrets.get_secret_value(SecretId=aws.secret_arn)["SecretString"])
    secret.update(host="127.0.0.1", port=1)  # nothing listens there
    aws.secrets.put_secret_value(SecretId=aws.secret_arn, SecretString=json.dumps(secret))
    runtime.reset()
    meta = put(aws, "revisions/94.json", export_body(94))
    event = sqs_event(
        s3_notification(("revisions/94.json", meta)),
        TEST_EVENT,
        s3_notification(("revisions/95.json", meta)),
    )
    assert failures(loader.handler(event, context)) == ["m0", "m2"]
    metrics = emitted(capsys.readouterr().out)
    assert metrics["DatabaseUnavailable"] == [1.0]
    assert metrics["MessagesFailed"] == [2.0]
    ours = [r for r in caplog.records if r.name == "km2pg" and r.levelname == "ERROR"]
    assert [r.getMessage() for r in ours] == [
        "database unavailable; every message announcing a file will be retried"
    ]
    assert ledger(database) == []


def test_a_configuration_error_is_one_line_one_metric_and_no_retry(
    aws, database, context, capsys, caplog
):
    aws.secrets.put_secret_value(SecretId=aws.secret_arn, SecretString="not json")
    runtime.reset()
    meta = put(aws, "revisions/95.json", export_body(95))
    event = sqs_event(s3_notification(("revisions/95.json", meta)), TEST_EVENT)
    assert failures(loader.handler(event, context)) == []  # acknowledged: no retry loop
    errors = [r for r in caplog.records if r.name == "km2pg" and r.levelname == "ERROR"]
    assert [r.getMessage() for r in errors] == [
        "configuration error: no file can load until it is fixed; the batch is acknowledged "
        "unloaded and the reconciler queues its files again after the fix"
    ]
    assert errors[0].exc_info is None
    metrics = emitted(capsys.readouterr().out)
    assert metrics["ConfigErrors"] == [1.0]
    assert "MessagesFailed" not in metrics
    assert ledger(database) == []


class ClockContext(FakeContext):
    """A context whose remaining time drops by a minute each time it is asked."""

    def __init__(self, remaining_ms: int) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:  # type: ignore[override]
        self.remaining_ms -= 60_000
        return self.remaining_ms


def test_the_loader_takes_no_new_file_once_the_time_margin_is_reached(
    aws, database, capsys, monkeypatch
):
    monkeypatch.setenv("KM2PG_LOADER_TIME_MARGIN_SECONDS", "120")
    runtime.reset()
    keys = [f"revisions/{n}.json" for n in (100, 101, 102, 103)]
    event = sqs_event(*(s3_notification((k, put(aws, k, export_body(1, k)))) for k in keys))
    # 270 s left: asked before the 2nd message (210 s: take), the 3rd (150 s: take), the 4th
    # (90 s: below the 120 s margin: defer).
    response = loader.handler(event, ClockContext(270_000))
    assert failures(response) == ["m3"]
    assert [path for path, _ in ledger(database)] == keys[:3]
    metrics = emitted(capsys.readouterr().out)
    assert metrics["MessagesDeferred"] == [1.0]
    assert metrics["MessagesFailed"] == [0.0]


def test_the_first_message_is_taken_whatever_the_time_left(aws, database, monkeypatch):
    monkeypatch.setenv("KM2PG_LOADER_TIME_MARGIN_SECONDS", "600")
    runtime.reset()
    keys = [f"revisions/{n}.json" for n in (110, 111)]
    event = sqs_event(*(s3_notification((k, put(aws, k, export_body(1, k)))) for k in keys))
    assert failures(loader.handler(event, ClockContext(300_000))) == ["m1"]
    assert [path for path, _ in ledger(database)] == keys[:1]


def test_an_unusable_ca_file_is_a_configuration_error_not_an_unavailable_database(
    aws, database, context, capsys, caplog, monkeypatch
):
    monkeypatch.setenv("KM2PG_DB_SSLMODE", "verify-full")
    monkeypatch.setenv("KM2PG_DB_SSLROOTCERT", "/nonexistent/ca.pem")
    # Over TCP, as deployed (a Unix socket never uses TLS). Nothing listens there: had the
    # loader tried to connect before reading its CA file, this would be "database unavailable".
    secret = json.loads(aws.secrets.get_secret_value(SecretId=aws.secret_arn)["SecretString"])
    secret.update(host="127.0.0.1", port=1)
    aws.secrets.put_secret_value(SecretId=aws.secret_arn, SecretString=json.dumps(secret))
    runtime.reset()
    meta = put(aws, "revisions/80.json", export_body(80))
    event = sqs_event(s3_notification(("revisions/80.json", meta)), TEST_EVENT)
    assert failures(loader.handler(event, context)) == []  # acknowledged: no retry loop
    ours = [r for r in caplog.records if r.name == "km2pg" and r.levelname == "ERROR"]
    assert [r.getMessage() for r in ours] == [
        "configuration error: no file can load until it is fixed; the batch is acknowledged "
        "unloaded and the reconciler queues its files again after the fix"
    ]
    assert ours[0].error == "sslrootcert file /nonexistent/ca.pem not found"
    assert ours[0].exc_info is None
    assert "database unavailable" not in caplog.text
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "_aws" in line]
    assert [doc["ConfigErrors"] for doc in emf if "ConfigErrors" in doc] == [[1.0]]
