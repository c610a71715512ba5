"""Find export files in the bucket that the ledger has not loaded, and queue them for loading.

This heals a missed notification and loads history that predates the deployment, through the
same queue, loader and exactly-once ledger. Files that failed for their data are not queued
again (they would fail the same way); files that could not be read are.

A file queued by an earlier run may still be waiting in the queue or being loaded. Its message
comes back (or is loaded) within the queue's visibility timeout, so the reconciler records when
it queued each file (``km2pg.queued``) and holds a file back while that time is within the
window: a second message would only be skipped by the ledger, after reading the whole file.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from km2pg import db
from km2pg.db import Connection
from km2pg.errors import SourceError
from km2pg.notifications import ObjectRef, reconciler_message
from km2pg.sources import export_key, is_revision_key

SQS_BATCH: Final = 10
DEFAULT_MIN_AGE: Final = timedelta(minutes=15)
"""Objects younger than this are left to their own notification."""
DEFAULT_IN_FLIGHT: Final = timedelta(hours=1)
"""How long a queued file's message may be in flight: the queue's visibility timeout (the stack
makes it six times the loader's default 600 s timeout)."""


@dataclass(frozen=True)
class ReconcileResult:
    listed: int
    pending: int
    enqueued: int
    in_flight: int = 0
    """Pending files held back: queued within the visibility timeout, maybe still in flight."""


def list_exports(
    s3: Any, bucket: str, prefix: str, older_than: datetime | None = None
) -> Iterator[ObjectRef]:
    """Export files under ``prefix`` (optionally only those last modified before a time)."""
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                if not is_revision_key(item["Key"]):
                    continue
                if older_than is not None and item["LastModified"] > older_than:
                    continue
                yield ObjectRef(
                    bucket,
                    item["Key"],
                    item.get("Size"),
                    str(item.get("ETag", "")).strip('"') or None,
                )
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "error")
        raise SourceError(f"cannot list s3://{bucket}/{prefix}: {code}") from None
    except BotoCoreError as error:
        raise SourceError(f"cannot list s3://{bucket}/{prefix}: {error}") from None


def settled_keys(con: Connection) -> set[str]:
    """Export keys that need no loading: loaded, or failed for their data (content was read)."""
    rows = db.rows(
        con,
        """
        SELECT DISTINCT export_key FROM km2pg.files
         WHERE status = 'loaded' OR (status = 'failed' AND content_md5 IS NOT NULL)
        """,
    )
    return {row[0] for row in rows}


def pending(con: Connection, listing: Iterable[ObjectRef]) -> list[ObjectRef]:
    """The listed files the ledger has not settled, in revision order."""
    done = settled_keys(con)
    todo = [ref for ref in listing if export_key(ref.key)[0] not in done]
    return sorted(todo, key=lambda ref: (export_key(ref.key)[1], ref.key))


def in_flight_keys(con: Connection, since: datetime) -> set[str]:
    """Export keys queued after ``since``: their message may still be waiting or loading."""
    rows = db.rows(con, "SELECT export_key FROM km2pg.queued WHERE queued_at > :since", since=since)
    return {row[0] for row in rows}


def record_queued(con: Connection, refs: Iterable[ObjectRef], at: datetime) -> None:
    """Record that these files were queued at ``at``: one statement for the whole run."""
    keys = sorted({export_key(ref.key)[0] for ref in refs})
    if not keys:
        return
    con.run(
        """
        INSERT INTO km2pg.queued (export_key, queued_at)
        SELECT unnest(CAST(:keys AS text[])), :at
            ON CONFLICT (export_key) DO UPDATE SET queued_at = EXCLUDED.queued_at
        """,
        keys=keys,
        at=at,
    )


def enqueue(
    sqs: Any, queue_url: str, refs: Iterable[ObjectRef], accepted: list[ObjectRef] | None = None
) -> int:
    """Send one message per file, ten per request; raises SourceError if SQS refuses any.

    ``accepted`` collects the files SQS took, also when a later request fails."""
    sent = 0
    batch: list[ObjectRef] = []

    def flush() -> None:
        nonlocal sent
        entries = [
            {"Id": str(i), "MessageBody": reconciler_message(ref)} for i, ref in enumerate(batch)
        ]
        try:
            response = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        except (ClientError, BotoCoreError) as error:
            raise SourceError(f"cannot send to the load queue: {error}") from None
        failed = response.get("Failed") or []
        if failed:
            raise SourceError(
                f"the load queue refused {len(failed)} messages: "
                f"{failed[0].get('Message', failed[0].get('Code'))}"
            )
        sent += len(entries)
        if accepted is not None:
            accepted.extend(batch)
        batch.clear()

    for ref in refs:
        batch.append(ref)
        if len(batch) == SQS_BATCH:
            flush()
    if batch:
        flush()
    return sent


def visibility_timeout(sqs: Any, queue_url: str) -> timedelta:
    """The queue's visibility timeout, as SQS reports it."""
    try:
        attributes = sqs.get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["VisibilityTimeout"]
        )["Attributes"]
    except (ClientError, BotoCoreError) as error:
        raise SourceError(f"cannot read the load queue's visibility timeout: {error}") from None
    return timedelta(seconds=int(attributes["VisibilityTimeout"]))


def reconcile(
    con: Connection,
    s3: Any,
    sqs: Any,
    *,
    bucket: str,
    prefix: str,
    queue_url: str,
    limit: int | None = None,
    min_age: timedelta = DEFAULT_MIN_AGE,
    in_flight_for: timedelta = DEFAULT_IN_FLIGHT,
    now: datetime | None = None,
) -> ReconcileResult:
    """Queue up to ``limit`` export files that are in the bucket but not in the ledger, except
    those queued within ``in_flight_for`` (the queue's visibility timeout; 0 queues them all)."""
    now = now or datetime.now(UTC)
    listing = list(list_exports(s3, bucket, prefix, older_than=now - min_age))
    todo = pending(con, listing)
    flying = in_flight_keys(con, now - in_flight_for) if in_flight_for > timedelta(0) else set()
    ready = [ref for ref in todo if export_key(ref.key)[0] not in flying]
    chosen = ready if limit is None else ready[:limit]
    accepted: list[ObjectRef] = []
    try:
        enqueue(sqs, queue_url, chosen, accepted)
    finally:
        # Whatever SQS took is in flight, even if a later request failed.
        record_queued(con, accepted, now)
    return ReconcileResult(
        listed=len(listing),
        pending=len(todo),
        enqueued=len(accepted),
        in_flight=len(todo) - len(ready),
    )
