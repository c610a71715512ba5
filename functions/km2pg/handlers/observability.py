"""Powertools' logger, metrics and tracer, shared by the three functions.

Created at import as Powertools intends (they only read POWERTOOLS_* variables); km2pg's own
configuration is parsed on first use, in runtime.py.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger(service="km2pg")
metrics = Metrics(namespace="km2pg", service="km2pg")
tracer = Tracer(service="km2pg")
