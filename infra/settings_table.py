"""README.md's settings table, made from the declarations in infra/settings.py.

``make settings-table`` (``python -m infra.settings_table``) rewrites the table between the
marker comments in README.md; ``--check`` only says whether it is current, as
tests/infra/test_settings_table.py does.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Annotated, Any, Final, get_args, get_origin

from pydantic.fields import FieldInfo

from infra.context import (
    Every,
    OneOf,
    Schedule,
    Shape,
    SubsetOf,
    bounds,
    parse_flag,
    parse_optional_whole,
)
from infra.settings import NEW_DB, Settings

README: Final = Path(__file__).resolve().parents[1] / "README.md"
BEGIN: Final = "<!-- settings:begin -->"
END: Final = "<!-- settings:end -->"


def markdown_table() -> str:
    """One row per setting, in declaration order: its key, default, what it takes, what it does."""
    rows = ["| context key | default | allowed | meaning |", "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        cells = (
            f"`{field.alias or name}`",
            _default(field.default),
            _allowed(field),
            _meaning(field),
        )
        rows.append(f"| {' | '.join(cells)} |")
    return "\n".join(rows) + "\n"


def with_current_table(readme: str) -> str:
    """``readme`` with the text between the markers replaced by :func:`markdown_table`."""
    start, end = readme.index(BEGIN) + len(BEGIN), readme.index(END)
    return f"{readme[:start]}\n{markdown_table()}{readme[end:]}"


def _default(value: Any) -> str:
    if value is None:
        return "(empty)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple):
        return f"`{json.dumps(list(value))}`"
    if isinstance(value, Schedule):
        return f"`{value.expression}`"
    return f"`{value}`"


def _allowed(field: FieldInfo) -> str:
    """What a setting takes, in words, from its type's rules (bounds, choices, shape)."""
    annotation = field.annotation
    if get_origin(annotation) is tuple:
        each = _rule_text(_rules(get_args(annotation)[0]))
        return _rule_text(field.metadata) or f"a list; each {each}"
    texts = [_rule_text([*field.metadata, *_rules(annotation)])]
    low, high = bounds(field)
    if low is not None and high is not None:
        texts.append(f"{low}-{high}")
    if any(_parses_with(field, parse_optional_whole)):
        texts.append("`null`")
    elif any(_parses_with(field, parse_flag)):
        texts.append("`true` or `false`")
    return ", or ".join(text for text in texts if text)


def _rules(annotation: Any) -> list[Any]:
    """The rules inside ``Annotated[...]`` (or a nullable one's), where the type carries them."""
    if get_origin(annotation) is Annotated:
        return list(annotation.__metadata__)
    return [rule for arg in get_args(annotation) for rule in _rules(arg)]


def _rule_text(rules: list[Any]) -> str:
    for rule in rules:
        if isinstance(rule, Shape):
            return f"{rule.want}, like `{rule.example}`"
        if isinstance(rule, OneOf):
            return _listed(rule.choices)
        if isinstance(rule, SubsetOf):
            return f"any of {_listed(rule.choices)}"
        if isinstance(rule, Every):
            return "`rate(N unit)` or `cron(6 fields)`"
    return ""


def _parses_with(field: FieldInfo, parse: Any) -> list[bool]:
    return [getattr(rule, "func", None) is parse for rule in field.metadata]


def _meaning(field: FieldInfo) -> str:
    parts = [field.description or ""]
    for rule in field.metadata:
        if isinstance(rule, Every):
            parts.append(
                "the missed-run alarm takes a `cron(...)` schedule to run every "
                f"{_duration(rule.cron_period_seconds)}"
            )
        elif rule == NEW_DB:
            parts.append("read only with `createDatabase`")
    return "; ".join(parts)


def _listed(choices: tuple[Any, ...]) -> str:
    return ", ".join(f"`{choice}`" for choice in choices)


def _duration(seconds: int) -> str:
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return unit if count == 1 else f"{count} {unit}s"
    return f"{seconds} seconds"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="only say whether it is current")
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args(argv)
    text = args.readme.read_text()
    current = with_current_table(text)
    if current == text:
        print(f"{args.readme}: the settings table is current")
        return 0
    if args.check:
        print(f"{args.readme}: the settings table is stale; run make settings-table")
        return 1
    args.readme.write_text(current)
    print(f"{args.readme}: settings table rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
