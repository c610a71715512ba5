"""The README's Insights examples run as written on the demo data, and each answers something."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from km2pg import db
from tests.helpers import load_demo_database

README = Path(__file__).resolve().parents[2] / "README.md"
SQL_BLOCK = re.compile(r"```sql\n(.*?)```", re.DOTALL)


def insights_examples() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Insights\n", 1)[1].split("\n## ", 1)[0]
    return SQL_BLOCK.findall(section)


def test_the_insights_section_has_an_example_of_every_object():
    examples = "\n".join(insights_examples())
    for name in (
        "person_properties",
        "people",
        "timeline",
        "property_at(",
        "funnel(",
        "retention(",
        "ab_test(",
        "revenue(",
        "num(",
    ):
        assert name in examples, name


@pytest.fixture(scope="module")
def demo(pg_admin, template_database, tmp_path_factory):
    """The demo's data (as ``km2pg demo`` writes it: 28 days up to now), smaller."""
    from tests.conftest import drop_database

    folder = tmp_path_factory.mktemp("demo")
    settings = load_demo_database(pg_admin, template_database, folder, lines=40_000, files=4)
    con = db.connect(settings)
    try:
        yield con
    finally:
        db.close_quietly(con)
        drop_database(pg_admin, settings)


@pytest.mark.parametrize("example", insights_examples(), ids=lambda sql: sql.splitlines()[0][:40])
def test_readme_example_runs_as_written_and_answers(demo, example):
    found = db.rows(demo, example)
    assert found, "the demo data must give every example something to show"
