"""The report's HTML, drawn from hand-made answers: escaping, sections present or absent."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from km2pg.cli.report import Plan, Report, Section, Table
from km2pg.cli.report_html import _integer_step, render
from km2pg.cli.report_text import fmt

HOSTILE = "</script><img src=x onerror=alert(1)>"


def _report(action: str) -> Report:
    plan = Plan(
        since=date(2026, 1, 1),
        until=date(2026, 1, 31),
        funnel=(action, "b"),
        retention=None,
        retention_unit="week",
        retention_periods=5,
        experiment=None,
        conversion=None,
        revenue=None,
        revenue_unit="day",
        notes=(f"funnel: {action}",),
    )
    actions = Table(("action", "people", "events"), ("text", "int", "int"), [[action, 3, 5]])
    return Report(
        plan,
        "db",
        datetime(2026, 2, 1, tzinfo=UTC),
        {"people": 3, "events": 5, "identities": 4},
        [
            Section("actions", "Top actions", "SELECT 1", actions),
            Section("ab_test", "A/B test", "", absent="no experiment"),
        ],
    )


def test_names_from_the_data_cannot_end_the_script_or_add_markup():
    page = render(_report(HOSTILE), "/* plotly */")
    assert HOSTILE not in page
    assert "<img" not in page
    assert page.count("</script>") == 2  # the library's and the figures'


def test_a_section_without_an_answer_shows_why_and_draws_nothing():
    page = render(_report("visited site"), "/* plotly */")
    assert 'id="chart-actions"' in page
    assert 'id="chart-ab_test"' not in page
    assert "no experiment" in page


@pytest.mark.parametrize(
    ("top", "step"), [(0, 1), (4, 1), (7, 2), (39, 10), (120, 50), (1000, 200)]
)
def test_count_axes_tick_at_whole_round_steps(top, step):
    assert _integer_step(top) == step


@pytest.mark.parametrize(
    ("value", "kind", "shown"),
    [
        (1234567, "int", "1,234,567"),
        (Decimal("0.5413"), "share", "54.1%"),
        (Decimal("-49"), "money", "-49.00"),
        (Decimal("0.000123"), "num", "0.000123"),
        (None, "share", "-"),
    ],
)
def test_cells_read_as_people_expect(value, kind, shown):
    assert fmt(value, kind) == shown
