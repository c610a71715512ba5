"""README.md's settings table is made from infra/settings.py, and a stale one is caught."""

from __future__ import annotations

from pathlib import Path

import pytest
from infra.settings import CONTEXT_KEYS
from infra.settings_table import BEGIN, END, README, main, markdown_table, with_current_table


def table_rows() -> dict[str, list[str]]:
    rows = {}
    for line in markdown_table().splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip("|").split(" | ")]
        rows[cells[0].strip("`")] = cells
    return rows


def test_readme_settings_table_is_current() -> None:
    text = README.read_text()
    assert text.count(BEGIN) == text.count(END) == 1
    assert with_current_table(text) == text, "README's settings table is stale: make settings-table"


def test_every_setting_has_one_row_with_default_allowed_values_and_meaning() -> None:
    rows = table_rows()
    assert list(rows) == list(CONTEXT_KEYS)
    for key, cells in rows.items():
        assert len(cells) == 4, f"{key}: a | inside a cell? {cells}"
        assert all(cells[1:]), f"{key} lacks a default, its allowed values or its meaning"


@pytest.mark.parametrize(
    ("key", "allowed"),
    [
        ("loaderBatchSize", "1-10"),
        ("scheduledReservedConcurrency", "1-1000, or `null`"),
        ("logLevel", "`DEBUG`, `INFO`, `WARNING`, `ERROR`, `CRITICAL`"),
        ("vpcEndpoints", "any of `s3`, `secretsmanager`, `sqs`, `xray`"),
        ("privateSubnetIds", "a list; each a subnet id, like `subnet-0123456789abcdef0`"),
        ("natGateway", "`true` or `false`"),
    ],
)
def test_allowed_values_come_from_the_declared_rules(key: str, allowed: str) -> None:
    assert table_rows()[key][2] == allowed


def test_the_generator_rewrites_a_stale_table_and_check_tells(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    current = README.read_text()
    readme.write_text(
        current.replace("| `loaderBatchSize` | `10` |", "| `loaderBatchSize` | `9` |")
    )
    assert readme.read_text() != current
    assert main(["--check", "--readme", str(readme)]) == 1
    assert main(["--readme", str(readme)]) == 0
    assert readme.read_text() == current
    assert main(["--check", "--readme", str(readme)]) == 0
