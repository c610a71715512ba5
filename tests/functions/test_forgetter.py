"""The forgetter function: invoked with {"identities": [...], "dry_run": bool}, it returns counts
and logs counts, never the names."""

from __future__ import annotations

import json
import time

import pytest

from km2pg import db, load
from km2pg.errors import ConfigError
from km2pg.handlers import forgetter
from km2pg.sources import local_file
from tests.helpers import write_export

NOW = int(time.time())


@pytest.fixture
def loaded(database, tmp_path):
    path = write_export(
        tmp_path,
        1,
        [
            {"_p": "ann", "_t": NOW - 60, "_n": "visited site", "plan": "gold"},
            {"_p": "ann", "_p2": "ann@example.com", "_t": NOW - 59},
            {"_p": "bob", "_t": NOW - 58, "_n": "visited site"},
        ],
    )
    with db.connection(database) as con:
        load.prepare_connection(con)
        assert load.load_file(con, local_file(path)).status == "loaded"
    return database


def names(database) -> list[str]:
    with db.connection(database) as con:
        return [n for (n,) in db.rows(con, "select name from km2pg.users order by 1")]


def test_a_dry_run_then_forgetting_returns_counts_and_logs_no_name(
    aws, loaded, context, capsys, caplog
):
    dry = forgetter.handler({"identities": ["ann@example.com"], "dry_run": True}, context)
    assert names(loaded) == ["ann", "ann@example.com", "bob"]
    done = forgetter.handler({"identities": ["ann@example.com"]}, context)
    assert dry == {**done, "dry_run": True}
    assert (done["persons"], done["identities"], done["events"], done["suppressed"]) == (1, 2, 1, 2)
    assert names(loaded) == ["bob"]
    out = capsys.readouterr().out
    emf = [json.loads(line) for line in out.splitlines() if "_aws" in line]
    assert [doc["IdentitiesForgotten"] for doc in emf if "IdentitiesForgotten" in doc] == [[2.0]]
    assert "ann" not in out
    assert "ann" not in caplog.text
    assert [r.getMessage() for r in caplog.records if r.name == "km2pg"] == [
        "forget dry run",
        "forgot",
    ]


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"identities": []},
        {"identities": "ann"},
        {"identities": ["ann", ""]},
        {"identities": ["ann", 7]},
        {"identities": ["ann"], "dry_run": "yes"},
    ],
)
def test_a_bad_payload_is_refused_without_repeating_it(aws, database, context, event):
    with pytest.raises(ConfigError) as info:
        forgetter.handler(event, context)
    assert "ann" not in str(info.value)
