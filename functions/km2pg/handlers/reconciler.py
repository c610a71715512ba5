"""Reconciler function: on a schedule, queue every export file the ledger has not loaded."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from km2pg.contract import Env, Metric
from km2pg.errors import ConfigError
from km2pg.handlers.observability import logger, metrics, tracer
from km2pg.handlers.runtime import runtime
from km2pg.reconcile import reconcile


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(raise_on_empty_metrics=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    rt = runtime()
    config = rt.config
    if not config.export_bucket or not config.queue_url:
        raise ConfigError(f"the reconciler needs {Env.EXPORT_BUCKET} and {Env.QUEUE_URL}")
    result = reconcile(
        rt.connection(),
        rt.client("s3"),
        rt.client("sqs"),
        bucket=config.export_bucket,
        prefix=config.export_prefix,
        queue_url=config.queue_url,
        limit=config.enqueue_limit,
        min_age=timedelta(minutes=config.min_age_minutes),
        in_flight_for=timedelta(seconds=config.queue_visibility_seconds),
    )
    metrics.add_metric(name=Metric.FILES_ENQUEUED, unit=MetricUnit.Count, value=result.enqueued)
    # Files older than the grace period and still not settled: their notification should have
    # loaded them. Alarmed (above zero); a first backfill of history raises it once, on purpose.
    metrics.add_metric(name=Metric.FILES_OVERDUE, unit=MetricUnit.Count, value=result.pending)
    # Overdue files queued within the visibility timeout: their message may still be loading.
    metrics.add_metric(name=Metric.FILES_IN_FLIGHT, unit=MetricUnit.Count, value=result.in_flight)
    summary = {
        "listed": result.listed,
        "pending": result.pending,
        "enqueued": result.enqueued,
        "in_flight": result.in_flight,
    }
    logger.info("reconciled", extra={"bucket": config.export_bucket, **summary})
    return summary
