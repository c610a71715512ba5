"""Forgetter function: invoked by hand for a privacy request, it forgets persons (km2pg.forget).

Payload: ``{"identities": ["ann@example.com", ...], "dry_run": false}``. Returns and logs counts,
never the names (the event itself is not logged).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from km2pg.contract import Metric
from km2pg.errors import ConfigError
from km2pg.forget import forget
from km2pg.handlers.observability import logger, metrics, tracer
from km2pg.handlers.runtime import runtime


def request(event: Any) -> tuple[list[str], bool]:
    """The identities and the dry-run flag of a payload; ConfigError (without names) if bad."""
    if not isinstance(event, dict):
        raise ConfigError('the payload must be {"identities": [...], "dry_run": false}')
    identities = event.get("identities")
    if (
        not isinstance(identities, list)
        or not identities
        or not all(isinstance(name, str) and name for name in identities)
    ):
        raise ConfigError('"identities" must be a list of one or more non-empty strings')
    dry_run = event.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise ConfigError('"dry_run" must be true or false')
    return identities, dry_run


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(raise_on_empty_metrics=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    identities, dry_run = request(event)
    result = forget(runtime().connection(), identities, dry_run=dry_run)
    summary = result.as_json()
    if not dry_run:
        metrics.add_metric(
            name=Metric.IDENTITIES_FORGOTTEN, unit=MetricUnit.Count, value=result.identities
        )
    logger.info("forget dry run" if dry_run else "forgot", extra=summary)
    return summary
