"""tests/citus runs against a Citus cluster only (``make test-citus``)."""

from __future__ import annotations

import pytest

from tests import citus_cluster

if not citus_cluster.workers():
    # Named on the command line without a cluster (a plain run never collects this folder).
    pytest.exit(f"tests/citus needs a Citus cluster: {citus_cluster.HOW_TO_RUN}", returncode=4)
