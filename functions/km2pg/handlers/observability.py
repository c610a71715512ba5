"""Powertools' logger, metrics and tracer, shared by the three functions.

Created at import as Powertools intends (they only read POWERTOOLS_* variables); km2pg's own
configuration is parsed on first use, in runtime.py.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer

from km2pg.contract import METRIC_NAMESPACE, SERVICE

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=METRIC_NAMESPACE, service=SERVICE)
tracer = Tracer(service=SERVICE)
