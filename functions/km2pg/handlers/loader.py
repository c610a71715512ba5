"""Loader function: SQS messages announcing export files in S3 -> the core loader.

Each message is one batch item: a message whose file cannot be loaded now (database down,
object missing) is reported as a batch item failure and comes back later (then, after the
queue's receive limit, goes to the dead-letter queue); its neighbours are unaffected. A file
that fails for its data is recorded ``failed`` in the ledger, counted, and acknowledged.
"""

from __future__ import annotations

from datetime import UTC, datetime
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
from km2pg.errors import DatabaseUnavailable, SourceError
from km2pg.handlers.observability import logger, metrics, tracer
from km2pg.handlers.runtime import runtime
from km2pg.load import LoadResult, load_file, record_failure
from km2pg.notifications import MessageError, ObjectRef, objects_in_message
from km2pg.sources import s3_object

processor = BatchProcessor(event_type=EventType.SQS)


@tracer.capture_method
def load_message(record: SQSRecord) -> None:
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
    for ref in refs:
        load_object(ref)


def load_object(ref: ObjectRef) -> LoadResult:
    rt = runtime()
    location = f"s3://{ref.bucket}/{ref.key}"
    logger.set_correlation_id(location)
    file = s3_object(rt.client("s3"), ref.bucket, ref.key, ref.size, ref.etag)
    try:
        con = rt.connection()
        result = load_file(con, file, rt.options)
    except DatabaseUnavailable:
        rt.discard()
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


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(raise_on_empty_metrics=False)
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=load_message, processor=processor, context=context
    )
