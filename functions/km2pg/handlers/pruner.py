"""Pruner function: on a schedule, remove events older than the configured retention."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from km2pg.contract import Metric
from km2pg.handlers.observability import logger, metrics, tracer
from km2pg.handlers.runtime import runtime
from km2pg.prune import prune


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(raise_on_empty_metrics=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    rt = runtime()
    result = prune(rt.connection(), rt.config.retention_days)
    metrics.add_metric(name=Metric.PRUNED_ROWS, unit=MetricUnit.Count, value=result.total_rows)
    metrics.add_metric(
        name=Metric.PRUNED_PARTITIONS, unit=MetricUnit.Count, value=len(result.partitions)
    )
    summary = {
        "cutoff": result.cutoff.isoformat(),
        "retention_days": rt.config.retention_days,
        "partitions": result.partitions,
        "rows": result.rows,
    }
    logger.info("pruned", extra=summary)
    return summary
