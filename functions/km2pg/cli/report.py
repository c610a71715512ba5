"""``km2pg report``: the insights of one date range, as terminal tables and one HTML file.

Every number comes from the database through the insights objects of migration 0002
(``km2pg.funnel``, ``retention``, ``ab_test``, ``revenue``) or a plain count over the tables; no
analytics is repeated here. This module decides what to ask (the defaults for left-out options)
and asks it; :mod:`km2pg.cli.report_text` prints the answers and :mod:`km2pg.cli.report_html`
draws them.

Defaults, chosen so that any export gives a useful report:

- the range is the 30 days that end with the day of the newest event loaded (not "now"), so an
  export whose data stopped a year ago still shows its last month;
- the funnel is the three actions done by the most people, in the order people usually do them
  (by the median time from each person's first of them to their first of each);
- retention is "came back to do the funnel's first action again": that action as both the first
  and the return action, in weeks (days for ranges of two weeks or less, months beyond half a
  year), as many periods as the range holds (at most 12);
- the A/B test is the property whose name says experiment, variation, variant or test and which
  has 2 to 10 values in the range (the most set one), converting to the funnel's last step;
- revenue is the ``billing amount`` key (Kissmetrics' standard name), shown only when that key
  was ever loaded, per day, week or month depending on the range's length.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final

import pg8000.exceptions

from km2pg import db
from km2pg.errors import ConfigError

DEFAULT_DAYS: Final = 30
FUNNEL_STEPS: Final = 3
TOP_ACTIONS: Final = 10
REVENUE_KEY: Final = "billing amount"
MAX_PERIODS: Final = 12
EXPERIMENT_NAME: Final = "(experiment|variation|variant|a/b|split test|ab test)"
EXPERIMENT_VALUES: Final = (2, 10)

# ---------------------------------------------------------------------------------------------
# What to report


@dataclass(frozen=True)
class Request:
    """The command's options; None means "choose a default"."""

    since: date | None = None
    until: date | None = None
    funnel: tuple[str, ...] | None = None
    retention: tuple[str, str] | None = None
    experiment: str | None = None
    conversion: str | None = None
    revenue: str | None = None


@dataclass(frozen=True)
class Plan:
    """What the report asks the database, every default resolved; ``notes`` say how."""

    since: date
    until: date
    funnel: tuple[str, ...]
    retention: tuple[str, str] | None
    retention_unit: str
    retention_periods: int
    experiment: str | None
    conversion: str | None
    revenue: str | None
    revenue_unit: str
    notes: tuple[str, ...] = ()

    @property
    def since_t(self) -> datetime:
        return datetime.combine(self.since, time(), UTC)

    @property
    def until_t(self) -> datetime:
        return datetime.combine(self.until, time(), UTC)

    @property
    def days(self) -> int:
        return (self.until - self.since).days


def parse_list(text: str) -> tuple[str, ...]:
    """``"a, b,c"`` -> ``("a", "b", "c")``; empty items are an error."""
    items = tuple(item.strip() for item in text.split(","))
    if not all(items):
        raise ConfigError(f"empty name in {text!r}: give names separated by commas")
    return items


def check_request(request: Request) -> None:
    """The errors that need no database, each with one clear message."""
    if request.since and request.until and request.since >= request.until:
        raise ConfigError(
            f"--since ({request.since}) must be before --until ({request.until}): "
            "the range is [since, until)"
        )
    if request.conversion and not request.experiment:
        raise ConfigError("--conversion needs --experiment KEY")
    if request.funnel is not None and len(request.funnel) < 2:
        raise ConfigError("--funnel needs at least two actions, e.g. 'visited site,signed up'")


def plan_report(con: db.Connection, request: Request) -> Plan:
    """Resolve the defaults of a request against the data."""
    check_request(request)
    notes: list[str] = []
    since, until = _range(con, request, notes)
    since_t = datetime.combine(since, time(), UTC)
    until_t = datetime.combine(until, time(), UTC)
    span = {"since": since_t, "until": until_t}
    top = [str(row[0]) for row in _rows(con, TOP_ACTIONS_SQL, n=FUNNEL_STEPS, **span)]
    popular = [str(row[0]) for row in _rows(con, IN_ORDER_SQL, names=top, **span)]

    funnel = request.funnel
    if funnel is None:
        funnel = tuple(popular)
        if funnel:
            notes.append(f"funnel: the {len(funnel)} actions most people did, in their usual order")
    retention = request.retention
    if retention is None and funnel:
        retention = (funnel[0], funnel[0])
        notes.append(f"retention: people who came back to {funnel[0]!r}")
    unit = _unit(since, until, day_up_to=14, week_up_to=183)
    periods = min(MAX_PERIODS, _units_between(since, until, unit))

    experiment, conversion = request.experiment, request.conversion
    if experiment is None:
        fewest, most = EXPERIMENT_VALUES
        found = _rows(
            con, EXPERIMENT_SQL, pattern=EXPERIMENT_NAME, fewest=fewest, most=most, **span
        )
        if found:
            experiment = str(found[0][0])
            notes.append(f"experiment: {experiment!r}, the property named like one")
    if experiment is not None and conversion is None and funnel:
        conversion = funnel[-1]
        notes.append(f"conversion: {conversion!r}, the funnel's last step")

    revenue = request.revenue
    if revenue is None and _rows(con, KEY_EXISTS_SQL, key=REVENUE_KEY)[0][0]:
        revenue = REVENUE_KEY
    return Plan(
        since=since,
        until=until,
        funnel=funnel,
        retention=retention,
        retention_unit=unit,
        retention_periods=periods,
        experiment=experiment,
        conversion=conversion,
        revenue=revenue,
        revenue_unit=_unit(since, until, day_up_to=62, week_up_to=366),
        notes=tuple(notes),
    )


def _range(con: db.Connection, request: Request, notes: list[str]) -> tuple[date, date]:
    since, until = request.since, request.until
    if until is None:
        if since is not None:
            until = since + timedelta(days=DEFAULT_DAYS)
        else:
            newest = _rows(con, NEWEST_SQL)[0][0]
            if newest is None:
                raise ConfigError("no events loaded yet: load an export first (km2pg load PATH)")
            until = newest + timedelta(days=1)
            notes.append(f"range: the {DEFAULT_DAYS} days up to the newest event ({newest})")
    if since is None:
        since = until - timedelta(days=DEFAULT_DAYS)
    check_request(Request(since=since, until=until))
    return since, until


def _unit(since: date, until: date, *, day_up_to: int, week_up_to: int) -> str:
    days = (until - since).days
    return "day" if days <= day_up_to else "week" if days <= week_up_to else "month"


def _units_between(since: date, until: date, unit: str) -> int:
    days = (until - since).days
    if unit == "day":
        return days
    if unit == "week":
        return math.ceil(days / 7) + 1  # the range can touch one more ISO week than whole weeks
    return (until.year - since.year) * 12 + until.month - since.month + 1


# ---------------------------------------------------------------------------------------------
# Asking the database

NEWEST_SQL: Final = "SELECT (max(t) AT TIME ZONE 'UTC')::date FROM km2pg.events"

# Actions by the people who did them in the range. event_actions is read by eventid range (the
# eventid encodes the event's time), so only the range's partitions are read.
TOP_ACTIONS_SQL: Final = """
SELECT a.name AS action, count(DISTINCT u.personid) AS people, count(*) AS events
  FROM km2pg.event_actions x
  JOIN km2pg.actions a USING (actionid)
  JOIN km2pg.users u ON u.userid = x.eventid & 4294967295
 WHERE x.eventid >= km2pg.eventid_from(:since) AND x.eventid < km2pg.eventid_from(:until)
 GROUP BY a.name
 ORDER BY people DESC, events DESC, action
 LIMIT :n
"""

# Actions in the order people usually do them: by how long after the first of them each person
# first does each one (the median: late-arriving lines, hours old, would drag a mean). Within each
# person, so that an action done mostly by people who arrived early does not look early.
IN_ORDER_SQL: Final = """
SELECT a.name
  FROM (SELECT x.actionid, min(e.t) AS first_t,
               min(min(e.t)) OVER (PARTITION BY u.personid) AS start
          FROM km2pg.events e
          JOIN km2pg.event_actions x USING (eventid)
          JOIN km2pg.users u ON u.userid = e.userid
         WHERE e.t >= :since AND e.t < :until
           AND x.eventid >= km2pg.eventid_from(:since) AND x.eventid < km2pg.eventid_from(:until)
           AND x.actionid IN (SELECT actionid FROM km2pg.actions WHERE name = ANY(:names))
         GROUP BY x.actionid, u.personid) AS f
  JOIN km2pg.actions a USING (actionid)
 GROUP BY a.name
 ORDER BY percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM f.first_t - f.start)),
          a.name
"""

EXPERIMENT_SQL: Final = """
SELECT k.name, count(DISTINCT p.value) AS variants, count(*) AS settings
  FROM km2pg.event_properties p
  JOIN km2pg.keys k USING (keyid)
 WHERE p.eventid >= km2pg.eventid_from(:since) AND p.eventid < km2pg.eventid_from(:until)
   AND k.name ~ :pattern
 GROUP BY k.name
HAVING count(DISTINCT p.value) BETWEEN :fewest AND :most
 ORDER BY settings DESC, k.name
 LIMIT 1
"""

KEY_EXISTS_SQL: Final = (
    "SELECT EXISTS (SELECT 1 FROM km2pg.keys WHERE name = km2pg.normalize_name(:key))"
)

TOTALS_SQL: Final = """
SELECT count(DISTINCT u.personid) AS people, count(*) AS events,
       count(DISTINCT e.userid) AS identities
  FROM km2pg.events e JOIN km2pg.users u USING (userid)
 WHERE e.t >= :since AND e.t < :until
"""

# Every day of the range, also days without events. Days are UTC days whatever the session's
# TimeZone (timestamps without zone, so adding a day never meets a DST change).
PEOPLE_PER_DAY_SQL: Final = """
SELECT CAST(d AS date) AS day, coalesce(c.people, 0) AS people, coalesce(c.events, 0) AS events
  FROM generate_series(CAST(:since AS timestamptz) AT TIME ZONE 'UTC',
                       CAST(:until AS timestamptz) AT TIME ZONE 'UTC' - interval '1 day',
                       interval '1 day') AS d
  LEFT JOIN (SELECT date_trunc('day', e.t AT TIME ZONE 'UTC') AS day,
                    count(DISTINCT u.personid) AS people, count(*) AS events
               FROM km2pg.events e JOIN km2pg.users u USING (userid)
              WHERE e.t >= :since AND e.t < :until
              GROUP BY 1) AS c ON c.day = d
 ORDER BY d
"""

FUNNEL_SQL: Final = """
SELECT step, action, people, of_first, of_previous
  FROM km2pg.funnel(CAST(:steps AS text[]), :since, :until)
 ORDER BY step
"""

# complete: the period lies before the range's end, so its count is final (not "not yet").
RETENTION_SQL: Final = """
SELECT cohort, people, period, returned, share,
       (cohort + period * CAST('1 ' || :unit AS interval)) AT TIME ZONE 'UTC' < :until AS complete
  FROM km2pg.retention(:first, :return, :since, :until, :unit, :periods)
 ORDER BY cohort, period
"""

# The 95% Wilson score interval of each variant's conversion rate, for the chart's error bars.
AB_TEST_SQL: Final = """
SELECT variant, people, converted, rate, z, p_value,
       greatest(0, (centre - half)) AS low, least(1, (centre + half)) AS high
  FROM km2pg.ab_test(:key, :action, :since, :until) AS ab,
       LATERAL (SELECT converted::float8 / nullif(people, 0) AS p,
                       1.959964::float8 AS zc) AS k,
       LATERAL (SELECT (k.p + zc * zc / (2 * people)) / (1 + zc * zc / people) AS centre,
                       zc * sqrt(k.p * (1 - k.p) / people + zc * zc / (4.0 * people * people))
                          / (1 + zc * zc / people) AS half) AS w
 ORDER BY people DESC, variant
"""

REVENUE_SQL: Final = """
SELECT period_start, revenue, payers, per_payer
  FROM km2pg.revenue(:key, :since, :until, :unit)
 ORDER BY period_start
"""


@dataclass(frozen=True)
class Table:
    """Rows of one answer with their column names; ``kinds`` say how to show each column."""

    columns: tuple[str, ...]
    kinds: tuple[str, ...]
    rows: list[list[Any]]

    def column(self, name: str) -> list[Any]:
        i = self.columns.index(name)
        return [row[i] for row in self.rows]


@dataclass(frozen=True)
class Section:
    """One part of the report: a titled answer, the SQL that gives it, or why it is absent."""

    key: str
    title: str
    sql: str
    table: Table | None = None
    absent: str | None = None


@dataclass(frozen=True)
class Report:
    plan: Plan
    database: str
    generated: datetime
    totals: dict[str, int]
    sections: list[Section]

    def section(self, key: str) -> Section:
        return next(s for s in self.sections if s.key == key)


def _rows(con: db.Connection, sql: str, **params: Any) -> list[list[Any]]:
    try:
        return db.rows(con, sql, **params)
    except pg8000.exceptions.DatabaseError as error:
        raise db.translate(error, con=con) from None


def _table(
    con: db.Connection, sql: str, columns: Sequence[tuple[str, str]], **params: Any
) -> Table:
    rows = _rows(con, sql, **params)
    width = len(columns)
    return Table(
        tuple(c for c, _ in columns), tuple(k for _, k in columns), [r[:width] for r in rows]
    )


def gather(con: db.Connection, plan: Plan, database: str) -> Report:
    """Ask every question of the plan."""
    span = {"since": plan.since_t, "until": plan.until_t}
    people, events, identities = _rows(con, TOTALS_SQL, **span)[0]
    totals = {"people": people, "events": events, "identities": identities}
    sections = [
        Section(
            "people",
            "People per day",
            "count(DISTINCT personid) of the events of each day",
            _table(
                con,
                PEOPLE_PER_DAY_SQL,
                [("day", "date"), ("people", "int"), ("events", "int")],
                **span,
            ),
        ),
        Section(
            "actions",
            "Top actions",
            "actions by the people who did them in the range",
            _table(
                con,
                TOP_ACTIONS_SQL,
                [("action", "text"), ("people", "int"), ("events", "int")],
                n=TOP_ACTIONS,
                **span,
            ),
        ),
        _funnel(con, plan, span),
        _retention(con, plan, span),
        _ab_test(con, plan, span),
        _revenue(con, plan, span),
    ]
    return Report(plan, database, datetime.now(UTC), totals, sections)


def _call(name: str, *args: Any) -> str:
    """How a function call reads in SQL, for the reader to copy into psql."""
    return f"SELECT * FROM km2pg.{name}({', '.join(_literal(a) for a in args)})"


def _literal(value: Any) -> str:
    if isinstance(value, tuple):
        return "array[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def _funnel(con: db.Connection, plan: Plan, span: dict[str, Any]) -> Section:
    sql = _call("funnel", plan.funnel, plan.since, plan.until)
    if not plan.funnel:
        return Section("funnel", "Funnel", sql, absent="no actions in the range")
    columns = [
        ("step", "int"),
        ("action", "text"),
        ("people", "int"),
        ("of_first", "share"),
        ("of_previous", "share"),
    ]
    table = _table(con, FUNNEL_SQL, columns, steps=list(plan.funnel), **span)
    return Section("funnel", "Funnel", sql, table)


def _retention(con: db.Connection, plan: Plan, span: dict[str, Any]) -> Section:
    title = f"Retention by {plan.retention_unit}"
    if plan.retention is None:
        return Section("retention", title, "", absent="no actions in the range")
    first, back = plan.retention
    args = (first, back, plan.since, plan.until, plan.retention_unit, plan.retention_periods)
    columns = [
        ("cohort", "date"),
        ("people", "int"),
        ("period", "int"),
        ("returned", "int"),
        ("share", "share"),
        ("complete", "bool"),
    ]
    table = _table(
        con,
        RETENTION_SQL,
        columns,
        first=first,
        unit=plan.retention_unit,
        periods=plan.retention_periods,
        **{"return": back},
        **span,
    )
    return Section("retention", title, _call("retention", *args), table)


def _ab_test(con: db.Connection, plan: Plan, span: dict[str, Any]) -> Section:
    if plan.experiment is None or plan.conversion is None:
        why = "no experiment: pass --experiment KEY --conversion ACTION"
        return Section("ab_test", "A/B test", "", absent=why)
    columns = [
        ("variant", "text"),
        ("people", "int"),
        ("converted", "int"),
        ("rate", "share"),
        ("z", "num"),
        ("p_value", "num"),
        ("low", "share"),
        ("high", "share"),
    ]
    table = _table(con, AB_TEST_SQL, columns, key=plan.experiment, action=plan.conversion, **span)
    sql = _call("ab_test", plan.experiment, plan.conversion, plan.since, plan.until)
    return Section("ab_test", f"A/B test: {plan.experiment} -> {plan.conversion}", sql, table)


def _revenue(con: db.Connection, plan: Plan, span: dict[str, Any]) -> Section:
    title = f"Revenue by {plan.revenue_unit}"
    if plan.revenue is None:
        why = f"no revenue: no {REVENUE_KEY!r} property loaded (pass --revenue KEY)"
        return Section("revenue", title, "", absent=why)
    columns = [
        ("period_start", "date"),
        ("revenue", "money"),
        ("payers", "int"),
        ("per_payer", "money"),
    ]
    table = _table(con, REVENUE_SQL, columns, key=plan.revenue, unit=plan.revenue_unit, **span)
    sql = _call("revenue", plan.revenue, plan.since, plan.until, plan.revenue_unit)
    return Section("revenue", f"{title}: {plan.revenue}", sql, table)
