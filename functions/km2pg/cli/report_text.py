"""The report in the terminal: aligned tables, shares as percentages, retention as a grid."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from typing import Any, TextIO

from km2pg.cli.report import Report, Table


def fmt(value: Any, kind: str) -> str:
    """One cell as a person reads it."""
    if value is None:
        return "-"
    formats: dict[str, Callable[[Any], str]] = {
        "int": lambda v: f"{v:,}",
        "share": lambda v: f"{100 * float(v):.1f}%",
        "money": lambda v: f"{Decimal(v):,.2f}",
        "num": lambda v: f"{float(v):.4g}",
        "bool": lambda v: "yes" if v else "no",
    }
    return formats.get(kind, str)(value)


def retention_grid(table: Table) -> tuple[list[date], list[int], dict[date, int], list[list[Any]]]:
    """Cohorts, periods, cohort sizes, and the shares as a grid (None where not complete).

    Periods complete for no cohort (all after the range's end) are left out.
    """
    cohorts = sorted(set(table.column("cohort")))
    periods = sorted({row[2] for row in table.rows if row[5]})
    sizes: dict[date, int] = {}
    grid: list[list[Any]] = [[None] * len(periods) for _ in cohorts]
    for cohort, people, period, _returned, share, complete in table.rows:
        sizes[cohort] = people
        if complete:
            grid[cohorts.index(cohort)][periods.index(period)] = share
    return cohorts, periods, sizes, grid


def print_report(report: Report, out: TextIO | None = None) -> None:
    out = out or sys.stdout  # looked up now: tests and callers may have replaced it
    plan = report.plan
    t = report.totals
    print(f"km2pg report, {plan.since} to {plan.until} (exclusive), {report.database}", file=out)
    print(
        f"{t['people']:,} people ({t['identities']:,} identities) did {t['events']:,} events",
        file=out,
    )
    for note in plan.notes:
        print(f"  default {note}", file=out)
    for section in report.sections:
        print(file=out)
        print(section.title, file=out)
        if section.sql:
            print(f"  {section.sql}", file=out)
        if section.table is None:
            print(f"  ({section.absent})", file=out)
        elif section.key == "retention":
            _print_retention(section.table, out)
        else:
            table = section.table
            kinds = table.kinds
            cells = [[fmt(v, k) for v, k in zip(row, kinds, strict=True)] for row in table.rows]
            _print_cells(list(table.columns), cells, out)


def _print_retention(table: Table, out: TextIO) -> None:
    cohorts, periods, sizes, grid = retention_grid(table)
    headers = ["cohort", "people", *(str(p) for p in periods)]
    cells = [
        [str(c), fmt(sizes[c], "int"), *(fmt(v, "share") if v is not None else "" for v in row)]
        for c, row in zip(cohorts, grid, strict=True)
    ]
    _print_cells(headers, cells, out)


def _print_cells(headers: list[str], cells: list[list[str]], out: TextIO) -> None:
    if not cells:
        print("  (no rows)", file=out)
        return
    everything = [headers, *cells]
    widths = [max(len(row[i]) for row in everything) for i in range(len(headers))]
    numeric = [all(_numeric(row[i]) for row in cells) for i in range(len(headers))]
    for row in everything:
        line = "  ".join(
            c.rjust(w) if right else c.ljust(w)
            for c, w, right in zip(row, widths, numeric, strict=True)
        )
        print("  " + line.rstrip(), file=out)


def _numeric(cell: str) -> bool:
    return cell in ("", "-") or cell.lstrip("-")[:1].isdigit()
