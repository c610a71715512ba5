"""Loader function: SQS messages announcing export files in S3 -> the core loader.

Each message is one batch item: a message whose file cannot be loaded now (database down,
object missing) is reported as a batch item failure and comes back later (then, after the
queue's receive limit, goes to the dead-letter queue); its neighbours are unaffected. A file
that fails for its data is recorded ``failed`` in the ledger, counted, and acknowledged.

Loud within minutes (each a metric the stack alarms on over one-minute periods):

- every message reported back as a batch item failure counts in ``MessagesFailed``;
- a database that cannot be reached counts in ``DatabaseUnavailable``; it is found before the
  batch starts, and then every message goes back at once (no ten connection timeouts in a row);
- a configuration error (a missing or unreadable CA file, a malformed secret) counts in
  ``ConfigErrors`` and is logged once, in one line. No retry can help until the setting is
  fixed, so the batch is acknowledged without loading rather than retried into the dead-letter
  queue: its files stay out of the ledger, the reconciler's ``FilesOverdue`` alarm names the gap,
  and its next run after the fix queues them again.

A long batch never times out as a whole: once less than ``KM2PG_LOADER_TIME_MARGIN_SECONDS``
remains, the loader takes no further file and reports the rest as item failures
(``MessagesDeferred``, not ``MessagesFailed``); they come back after the visibility timeout.
The first message is always taken, so every invocation makes progress.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum
from itertools import pairwise
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from km2pg.contract import Metric
from km2pg.errors import ConfigError, DatabaseUnavailable, SourceError
from km2pg.handlers.observability import logger, metrics, tracer
from km2pg.handlers.runtime import runtime
from km2pg.load import LoadResult, Lookahead, load_file, record_failure
from km2pg.notifications import MessageError, ObjectRef, objects_in_message
from km2pg.sources import ExportFile, s3_object

processor = BatchProcessor(event_type=EventType.SQS)


class Deferred(Exception):
    """A message left for a later invocation: too little time remains in this one."""


@tracer.capture_method
def load_message(record: SQSRecord, database_down: bool = False) -> None:
    """Load every export file one message announces; raise to have the message retried."""
    try:
        refs = objects_in_message(record.body)
    except MessageError as error:
        logger.warning(
            "dropping a message that announces no file",
            reason=str(error),
            message_id=record.message_id,
        )
        return
    if database_down and refs:
        raise DatabaseUnavailable("the database was unavailable when the batch started")
    for ref in refs:
        load_object(ref)


def load_object(ref: ObjectRef) -> LoadResult:
    try:
        return _load_object(ref)
    except ConfigError as error:
        # Met mid-batch (a reconnect after the batch's first connection): this message comes
        # back once, and the next batch's preflight acknowledges it (no retry loop).
        metrics.add_metric(name=Metric.CONFIG_ERRORS, unit=MetricUnit.Count, value=1)
        logger.error("configuration error while loading a file", error=str(error))
        raise


def _load_object(ref: ObjectRef) -> LoadResult:
    rt = runtime()
    location = f"s3://{ref.bucket}/{ref.key}"
    logger.set_correlation_id(location)
    file = _s3_file(ref)
    following = _upcoming.get(ref)
    try:
        con = rt.connection()
        # The batch's next file is parsed while the database applies this one.
        result = load_file(
            con,
            file,
            rt.options,
            lookahead=_lookahead,
            next_file=None if following is None else _s3_file(following),
        )
    except DatabaseUnavailable:
        rt.discard()
        metrics.add_metric(name=Metric.DATABASE_UNAVAILABLE, unit=MetricUnit.Count, value=1)
        logger.exception("database unavailable; the message will be retried", file=location)
        raise
    except SourceError as error:
        record_failure(rt.connection(), file, error)
        metrics.add_metric(name=Metric.FILES_FAILED, unit=MetricUnit.Count, value=1)
        logger.error(
            "export file unreadable; the message will be retried", file=location, error=str(error)
        )
        raise
    report(result, location)
    return result


def _s3_file(ref: ObjectRef) -> ExportFile:
    return s3_object(runtime().client("s3"), ref.bucket, ref.key, ref.size, ref.etag)


_lookahead = Lookahead()
"""The batch's next file, parsed ahead (see km2pg.lookahead); emptied when a batch ends."""
_upcoming: dict[ObjectRef, ObjectRef] = {}
"""Each file of the batch being handled -> the file after it, in the order they are loaded."""


def plan_batch(event: dict[str, Any]) -> None:
    """Note which file follows which in this batch (messages announcing no file left out)."""
    refs: list[ObjectRef] = []
    for record in event.get("Records", []):
        try:
            refs += objects_in_message(str(record.get("body", "")))
        except MessageError:
            continue
    _upcoming.clear()
    _upcoming.update(pairwise(refs))


def report(result: LoadResult, location: str) -> None:
    name = {
        "loaded": Metric.FILES_LOADED,
        "skipped": Metric.FILES_SKIPPED,
        "failed": Metric.FILES_FAILED,
    }
    metrics.add_metric(name=name[result.status], unit=MetricUnit.Count, value=1)
    details = {
        "file": location,
        "status": result.status,
        "lines": result.lines,
        "events": result.events,
        "rejects": result.rejects,
        "suppressed": result.suppressed,
        "seconds": round(result.seconds, 3),
        "timings": result.timings,
    }
    if result.status == "failed":
        metrics.add_metric(name=Metric.LINES_REJECTED, unit=MetricUnit.Count, value=result.rejects)
        logger.error(
            "export file failed for its data; recorded, not retried",
            extra={**details, "error": result.error},
        )
        return
    if result.status == "loaded":
        metrics.add_metric(name=Metric.LINES_LOADED, unit=MetricUnit.Count, value=result.lines)
        metrics.add_metric(name=Metric.LINES_REJECTED, unit=MetricUnit.Count, value=result.rejects)
        metrics.add_metric(name=Metric.LOAD_SECONDS, unit=MetricUnit.Seconds, value=result.seconds)
        if result.max_t is not None:
            lag = (datetime.now(UTC) - result.max_t).total_seconds()
            metrics.add_metric(name=Metric.EXPORT_LAG_SECONDS, unit=MetricUnit.Seconds, value=lag)
    logger.info("export file done", extra=details)


class Unavailable(Enum):
    """Why no file of a batch can load now (found before taking its first message)."""

    CONFIG = "configuration error"
    DATABASE = "database unavailable"


def preflight(event: dict[str, Any]) -> Unavailable | None:
    """Connect before the first message: a broken setting or database is found (and logged,
    and counted) once per batch, not once per message."""
    try:
        runtime().connection()
    except ConfigError as error:
        metrics.add_metric(name=Metric.CONFIG_ERRORS, unit=MetricUnit.Count, value=1)
        logger.error(
            "configuration error: no file can load until it is fixed; the batch is acknowledged "
            "unloaded and the reconciler queues its files again after the fix",
            error=str(error),
            messages=len(event.get("Records", [])),
        )
        return Unavailable.CONFIG
    except DatabaseUnavailable as error:
        runtime().discard()
        metrics.add_metric(name=Metric.DATABASE_UNAVAILABLE, unit=MetricUnit.Count, value=1)
        logger.error(
            "database unavailable; every message announcing a file will be retried",
            error=str(error),
        )
        return Unavailable.DATABASE
    return None


def record_handler(context: LambdaContext, database_down: bool) -> Any:
    """Each message loaded (or failed at once while the database is down), or deferred once
    less than the time margin remains; the first message is always taken."""
    margin_ms = runtime().config.time_margin_seconds * 1000
    taken = 0

    def handle(record: SQSRecord) -> None:
        nonlocal taken
        if taken and context.get_remaining_time_in_millis() < margin_ms:
            raise Deferred(record.message_id)
        taken += 1
        load_message(record, database_down)

    return handle


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(raise_on_empty_metrics=False)
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    unavailable = preflight(event)
    if unavailable is Unavailable.CONFIG:
        return {"batchItemFailures": []}
    plan_batch(event)
    try:
        return process_partial_response(
            event=event,
            record_handler=record_handler(context, unavailable is Unavailable.DATABASE),
            processor=processor,
            context=context,
        )
    finally:  # also when every message failed (Powertools then raises)
        _lookahead.close()  # a file parsed ahead and not loaded (deferred) is dropped
        _upcoming.clear()
        count_outcomes()


def count_outcomes() -> None:
    """MessagesFailed and MessagesDeferred for the batch just processed."""
    deferred = sum(1 for _, error, _ in processor.exceptions if isinstance(error, Deferred))
    failures = len(processor.exceptions) - deferred
    if deferred:
        metrics.add_metric(name=Metric.MESSAGES_DEFERRED, unit=MetricUnit.Count, value=deferred)
        logger.warning(
            "time margin reached; messages left for a later invocation", deferred=deferred
        )
    metrics.add_metric(name=Metric.MESSAGES_FAILED, unit=MetricUnit.Count, value=failures)
