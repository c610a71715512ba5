"""A Lambda context for calling a handler outside Lambda: the handler tests and the scale
benchmark (benchmarks/bench_scale.py) use this one."""

from __future__ import annotations


class FakeContext:
    """The little of a Lambda context that Powertools reads."""

    function_name = "km2pg-loader"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:km2pg-loader"
    aws_request_id = "00000000-0000-0000-0000-000000000000"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 300_000
