"""How a CDK context value becomes a setting's value: the forms a setting's type accepts.

Context comes from cdk.json (JSON values) or from ``-c key=value`` on the command line (always
strings), so every form accepts both: ``true``/``false`` for flags, digits for numbers, and a
JSON list or a comma-separated string for lists. infra/settings.py declares each setting with one
of these forms; a value a form refuses becomes one line naming the key (:func:`settings_error`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final

from pydantic import BeforeValidator, GetCoreSchemaHandler, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, core_schema


class SettingsError(ValueError):
    """A context value that is missing, malformed or contradicts another."""


@dataclass(frozen=True)
class Schedule:
    """An EventBridge schedule and the period in which it must have run at least once."""

    expression: str
    period_seconds: int

    @classmethod
    def rate(cls, every: str) -> Schedule:
        """``Schedule.rate("1 day")``: a rate schedule, as a setting's default."""
        schedule = _rate(f"rate({every})")
        if schedule is None:
            raise ValueError(f"not a rate: {every!r}")
        return schedule


def parse_flag(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1"):
        return True
    if text in ("false", "no", "0"):
        return False
    raise ValueError(f"must be true or false, not {value!r}")


def parse_whole(value: object) -> int:
    # bool is an int to Python, and 3.0 would silently become 3: both are refused.
    if isinstance(value, bool):
        raise ValueError(f"must be a whole number, not {value!r}")
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError(f"must be a whole number, not {value!r}") from None


def parse_optional_whole(value: object) -> int | None:
    """A whole number, or ``none``/``null`` (JSON null arrives as None) for no value at all."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
        return None
    return parse_whole(value)


def parse_number(value: object) -> float:
    try:
        return float(str(value).strip())
    except ValueError:
        raise ValueError(f"must be a number, not {value!r}") from None


def parse_text(value: object) -> str:
    return str(value).strip()


def parse_list(value: object) -> list[str]:
    """A JSON list, or a string holding a JSON list or comma-separated items (the CLI's form)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except ValueError:
                raise ValueError(f"is not a JSON list: {text!r}") from None
        else:
            value = [part for part in (p.strip() for p in text.split(",")) if part]
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"must be a list, not {value!r}")
    return [str(item).strip() for item in value]


Flag = Annotated[bool, BeforeValidator(parse_flag)]
Whole = Annotated[int, BeforeValidator(parse_whole)]
OptionalWhole = Annotated[int | None, BeforeValidator(parse_optional_whole)]
Number = Annotated[float, BeforeValidator(parse_number)]
Text = Annotated[str, BeforeValidator(parse_text)]
Items = BeforeValidator(parse_list)
"""Put on a ``tuple[...]`` setting: it then takes a list in any of the context's forms."""


def _plain(parse: Callable[[Any], Any]) -> core_schema.CoreSchema:
    return core_schema.no_info_plain_validator_function(parse)


@dataclass(frozen=True)
class Shape:
    """A text setting that must match ``pattern``; ``want`` says in words what does."""

    pattern: str
    want: str
    example: str

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return _plain(self.parse)

    def parse(self, value: object) -> str:
        text = str(value).strip()
        if not re.match(self.pattern, text):
            raise ValueError(f"is malformed: {value!r} (want {self.want}, like {self.example})")
        return text


@dataclass(frozen=True)
class OneOf:
    """A setting whose value must be one of ``choices``."""

    choices: tuple[Any, ...]

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def check(self, value: Any) -> Any:
        if value not in self.choices:
            allowed = ", ".join(str(choice) for choice in self.choices)
            raise ValueError(f"must be one of {allowed}, not {value!r}")
        return value


@dataclass(frozen=True)
class SubsetOf:
    """A list setting whose items must be among ``choices``; kept in the order of ``choices``."""

    choices: tuple[str, ...]

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def check(self, items: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(items) - set(self.choices))
        if unknown:
            raise ValueError(f"may hold only {', '.join(self.choices)}, not {unknown}")
        return tuple(choice for choice in self.choices if choice in items)


_RATE: Final = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")
_CRON: Final = re.compile(r"^cron\(\S+ \S+ \S+ \S+ \S+ \S+\)$")
_UNIT_SECONDS: Final = {"minute": 60, "hour": 3_600, "day": 86_400}
WEEK_SECONDS: Final = 7 * 86_400


@dataclass(frozen=True)
class Every:
    """A schedule setting: ``rate(N unit)`` or ``cron(6 fields)``.

    A rate's period is exact. A cron expression's is not worked out: it is taken to be
    ``cron_period_seconds``, the period over which the missed-run alarm then looks.
    """

    cron_period_seconds: int

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return _plain(self.parse)

    def parse(self, value: object) -> Schedule:
        text = value.expression if isinstance(value, Schedule) else str(value).strip()
        schedule = _rate(text)
        if schedule is not None:
            return schedule
        if _CRON.match(text):
            return Schedule(text, self.cron_period_seconds)
        raise ValueError(f"must be rate(N unit) or cron(6 fields), not {text!r}")


def _rate(text: str) -> Schedule | None:
    """A ``rate(N unit)`` schedule with its exact period; None if ``text`` is not a rate."""
    rate = _RATE.match(text)
    if not rate:
        return None
    count, unit = int(rate.group(1)), rate.group(2).rstrip("s")
    if count < 1:
        raise ValueError(f"must run at least every so often: {text!r}")
    if (count == 1) != (not rate.group(2).endswith("s")):
        raise ValueError(f"must be written rate(1 {unit}) or rate(N {unit}s), not {text!r}")
    seconds = count * _UNIT_SECONDS[unit]
    if seconds > WEEK_SECONDS:
        raise ValueError(f"must run at least weekly (its missed-run alarm), not {text!r}")
    return Schedule(text, seconds)


def bounds(field: FieldInfo) -> tuple[Any, Any]:
    """A setting's declared lower and upper bound (``ge``/``le``), None where there is none."""
    low = next((rule.ge for rule in field.metadata if hasattr(rule, "ge")), None)
    high = next((rule.le for rule in field.metadata if hasattr(rule, "le")), None)
    return low, high


def settings_error(error: ValidationError, fields: Mapping[str, FieldInfo]) -> SettingsError:
    """One line for each refused value, naming its key, the value and what is allowed."""
    by_key = {field.alias or name: field for name, field in fields.items()}
    return SettingsError("\n".join(_line(detail, by_key) for detail in error.errors()))


def _line(detail: ErrorDetails, by_key: Mapping[str, FieldInfo]) -> str:
    loc = detail["loc"]
    cause = detail.get("ctx", {}).get("error")
    if not loc:  # a rule that ties settings together: its message names them
        return str(cause) if cause is not None else detail["msg"]
    key = str(loc[0])
    if len(loc) > 1 and isinstance(loc[1], int):
        key = f"{key} item {loc[1] + 1}"
    if cause is not None:  # a form's own message (infra/context.py): "must be ..., not ..."
        return f"{key} {cause}"
    field = by_key.get(str(loc[0]))
    if field is not None and detail["type"] in ("greater_than_equal", "less_than_equal"):
        return f"{key} must be {_range(*bounds(field))}, not {detail['input']!r}"
    return f"{key}: {detail['msg'].lower()}, not {detail['input']!r}"


def _range(low: Any, high: Any) -> str:
    if low is None:
        return f"at most {high}"
    if high is None:
        return f"at least {low}"
    return f"between {low} and {high}"
