"""Handlers under test: moto fakes S3, SQS and Secrets Manager; the database is real."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto import mock_aws

from km2pg.dsn import ConnectionSettings
from km2pg.handlers import runtime
from tests.lambda_context import FakeContext

BUCKET = "kissmetrics-export"


@dataclass
class Aws:
    s3: Any
    sqs: Any
    secrets: Any
    queue_url: str
    secret_arn: str


def secret_for(settings: ConnectionSettings) -> str:
    return json.dumps(
        {
            "engine": "postgres",
            "host": settings.host,
            "port": settings.port,
            "username": settings.user,
            "password": settings.password or "",
            "dbname": settings.database,
        }
    )


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, database: ConnectionSettings) -> Iterator[Aws]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_NAMESPACE": "km2pg",
        "POWERTOOLS_SERVICE_NAME": "km2pg",
        "POWERTOOLS_DEV": "false",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("KM2PG_DSN", raising=False)
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        sqs = boto3.client("sqs")
        queue_url = sqs.create_queue(QueueName="km2pg-load")["QueueUrl"]
        secrets = boto3.client("secretsmanager")
        arn = secrets.create_secret(Name="km2pg-db", SecretString=secret_for(database))["ARN"]
        monkeypatch.setenv("KM2PG_DB_SECRET_ARN", arn)
        monkeypatch.setenv("KM2PG_DB_SSLMODE", database.sslmode)
        monkeypatch.setenv("KM2PG_QUEUE_URL", queue_url)
        monkeypatch.setenv("KM2PG_EXPORT_BUCKET", BUCKET)
        runtime.reset()
        yield Aws(s3, sqs, secrets, queue_url, arn)
        runtime.reset()


@pytest.fixture
def context() -> FakeContext:
    return FakeContext()
