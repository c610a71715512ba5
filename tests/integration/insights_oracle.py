"""Generated exports for the insight tests, and the answers computed from them in plain Python.

The oracle reads the export lines with ``json.loads`` and applies the rules as the README states
them (an event is an identity and a second; a property keeps the line of the greatest (revision,
line number); aliases join identities into people), never km2pg's parser or SQL.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday
"""The generated events fall in the 10 weeks from here, across three month boundaries."""
SPAN = 70 * 86400
BOUNDARIES = [
    datetime(2026, 2, 1, tzinfo=UTC),
    datetime(2026, 2, 2, tzinfo=UTC),  # a Monday
    datetime(2026, 3, 1, tzinfo=UTC),
    datetime(2026, 1, 19, tzinfo=UTC),
]
"""Times some events fall on exactly: period and range boundaries of the tests."""

ACTIONS = ("visited site", "viewed product", "signed up", "purchased", "refunded", "logged in")
EXPERIMENT = "homepage test"
REVENUE = "billing amount"
AMOUNTS = ("49.00", "9.99", "120", "1e2", "0.5", "n/a", "$5", "", " 7 ")
NUMBER = re.compile(r" *[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]{1,4})? *")


def spelled(name: str, rng: random.Random) -> str:
    """A name as exports write it now and then: capitals, surrounding spaces."""
    match rng.randrange(4):
        case 0:
            return name.title()
        case 1:
            return f"  {name.upper()} "
        case _:
            return name


def generate(folder: Path, *, seed: int, people: int = 160, files: int = 5) -> list[Path]:
    """An export of ``files`` files (revisions 101..) with every case the insight functions
    must get right; returns the paths in revision order."""
    rng = random.Random(seed)
    lines: list[dict[str, Any]] = []
    for n in range(people):
        lines += _person(rng, n)
    # A few lines again in a later file with another value: the greater revision must win.
    for line in rng.sample([x for x in lines if "_p2" not in x and len(x) > 3], 20):
        again = {
            key: value
            if key.startswith("_")
            else ("12" if key.strip().lower() == REVENUE else f"{value}-again")
            for key, value in line.items()
        }
        lines.append(again)
    buckets: list[list[dict[str, Any]]] = [[] for _ in range(files)]
    for line in lines:
        buckets[rng.randrange(files)].append(line)
    paths = []
    for k, bucket in enumerate(buckets):
        rng.shuffle(bucket)
        path = folder / "revisions" / f"{101 + k}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(x) + "\n" for x in bucket), encoding="utf-8")
        paths.append(path)
    return paths


def _person(rng: random.Random, n: int) -> list[dict[str, Any]]:
    """One person's lines: identities joined by an alias chain as they go, one session after
    another."""
    ids = [f"anon-{n}-{j}" for j in range(rng.randint(1, 3))]
    if rng.random() < 0.6:
        ids.append(f"person{n}@example.com")
    current = 0
    t = int(START.timestamp()) + rng.randrange(SPAN - 20 * 86400)
    if rng.random() < 0.15:  # start exactly on a boundary
        t = int(rng.choice(BOUNDARIES).timestamp())
    variant = rng.choice(("control", "variant b"))
    lines: list[dict[str, Any]] = []

    def event(name: str | None, **props: str) -> dict[str, Any]:
        line: dict[str, Any] = {"_p": ids[current], "_t": t}
        if name is not None:
            line["_n"] = spelled(name, rng)
        for key, value in props.items():
            line[spelled(key.replace("_", " "), rng)] = value
        lines.append(line)
        return line

    for _session in range(rng.randint(1, 6)):
        if rng.random() < 0.3 and rng.random() < 0.5:
            variant = "variant b" if variant == "control" else "control"  # sees both
        event("visited site", **{"homepage_test": variant})
        for _ in range(rng.randint(0, 3)):
            t += rng.choice((0, 1, 5, 60, 3600))
            event("viewed product", product=rng.choice(("band", "strap", "watch")))
            if rng.random() < 0.2:  # several actions at one second
                event("logged in")
        if current + 1 < len(ids) and rng.random() < 0.6:
            # Join the next identity, mid-funnel, in either argument order.
            pair = [ids[current], ids[current + 1]]
            rng.shuffle(pair)
            lines.append({"_p": pair[0], "_p2": pair[1], "_t": t})
            current += 1
        if rng.random() < 0.35:
            t += rng.choice((0, 2, 600))
            event("signed up", plan=rng.choice(("trial", "starter")))
        if rng.random() < 0.3:
            t += rng.choice((0, 30, 86400))
            event(
                None, plan=rng.choice(("pro", "team", "starter")), city=rng.choice(("Oslo", "Lima"))
            )
        if rng.random() < 0.3:
            t += rng.choice((1, 120, 2 * 86400))
            event("purchased", billing_amount=rng.choice(AMOUNTS))
            if rng.random() < 0.25:
                t += rng.choice((0, 3600, 9 * 86400))
                event("refunded", billing_amount="-" + rng.choice(("49.00", "9.99", "0.5")))
        t += rng.choice((3600, 86400, 3 * 86400, 8 * 86400))
        if rng.random() < 0.1:
            t = max(t, int(rng.choice(BOUNDARIES).timestamp()))
    return lines


# ---------------------------------------------------------------------------------------------
# The facts, as the README defines them


@dataclass
class Facts:
    person_of: dict[str, str] = field(default_factory=dict)
    """identity -> person name (the least identity name of the person)."""
    actions: dict[str, dict[int, set[str]]] = field(default_factory=dict)
    """person -> second -> the actions of the person's events at that second."""
    events: dict[str, set[tuple[str, int]]] = field(default_factory=dict)
    """person -> its events (identity, second)."""
    settings: dict[tuple[str, int, str], tuple[int, int, str]] = field(default_factory=dict)
    """(identity, second, key) -> (revision, line number, value): the line that wins."""
    identity_actions: dict[tuple[str, int], set[str]] = field(default_factory=dict)
    """(identity, second) -> the actions of that event."""

    def person_settings(self, key: str) -> dict[str, list[tuple[int, int, int, str]]]:
        """person -> its settings of key as (second, revision, line number, value)."""
        out: dict[str, list[tuple[int, int, int, str]]] = defaultdict(list)
        for (identity, t, k), (revision, lineno, value) in self.settings.items():
            if k == key:
                out[self.person_of[identity]].append((t, revision, lineno, value))
        return out


def read_facts(paths: list[Path]) -> Facts:
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    names: set[str] = set()
    raw_events: dict[tuple[str, int], set[str]] = defaultdict(set)
    settings: dict[tuple[str, int, str], tuple[int, int, str]] = {}
    for path in paths:
        revision = int(path.name.split(".")[0])
        for lineno, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            line = json.loads(text)
            p, t = line["_p"], int(line["_t"])
            names.add(p)
            if "_p2" in line:
                names.add(line["_p2"])
                a, b = find(p), find(line["_p2"])
                if a != b:
                    parent[max(a, b)] = min(a, b)
                continue
            actions = raw_events[(p, t)]
            if "_n" in line:
                actions.add(line["_n"].strip().lower())
            for key, value in line.items():
                if key.startswith("_"):
                    continue
                slot = (p, t, key.strip().lower())
                candidate = (revision, lineno, value)
                if slot not in settings or candidate > settings[slot]:
                    settings[slot] = candidate
    members: dict[str, list[str]] = defaultdict(list)
    for name in names:
        members[find(name)].append(name)
    facts = Facts(settings=settings, identity_actions=dict(raw_events))
    facts.person_of = {n: min(group) for group in members.values() for n in group}
    for (identity, t), acts in raw_events.items():
        person = facts.person_of[identity]
        facts.actions.setdefault(person, {}).setdefault(t, set()).update(acts)
        facts.events.setdefault(person, set()).add((identity, t))
    return facts


def seconds(t: datetime) -> float:
    return t.timestamp()


def utc(t: int) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def share(part: int, whole: int) -> Decimal:
    if whole == 0:
        return Decimal(0)
    return (Decimal(part) / Decimal(whole)).quantize(Decimal("0.0001"), ROUND_HALF_UP)


# ---------------------------------------------------------------------------------------------
# The answers


def funnel(
    facts: Facts, steps: list[str], since: datetime, until: datetime, within: timedelta
) -> list[tuple[int, str, int, Decimal, Decimal]]:
    reached = [0] * len(steps)
    for seconds_actions in facts.actions.values():
        times = sorted(seconds_actions)
        firsts = [
            t
            for t in times
            if steps[0] in seconds_actions[t] and since.timestamp() <= t < until.timestamp()
        ]
        if not firsts:
            continue
        t1 = previous = firsts[0]
        limit = (utc(t1) + within).timestamp()
        reached[0] += 1
        for k in range(1, len(steps)):
            later = [t for t in times if previous <= t <= limit and steps[k] in seconds_actions[t]]
            if not later:
                break
            previous = later[0]
            reached[k] += 1
    rows = []
    for k, name in enumerate(steps):
        of_previous = share(reached[k], reached[k - 1]) if k else share(reached[0], reached[0])
        rows.append((k + 1, name, reached[k], share(reached[k], reached[0]), of_previous))
    return rows


def unit_start(day: date, unit: str) -> date:
    if unit == "day":
        return day
    if unit == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def units_between(cohort: date, later: date, unit: str) -> int:
    if unit == "day":
        return (later - cohort).days
    if unit == "week":
        return (later - cohort).days // 7
    return (later.year - cohort.year) * 12 + later.month - cohort.month


def retention(
    facts: Facts,
    first: str,
    back: str,
    since: datetime,
    until: datetime,
    unit: str,
    periods: int,
) -> list[tuple[date, int, int, int, Decimal]]:
    cohorts: dict[date, list[tuple[str, int]]] = defaultdict(list)
    for person, seconds_actions in facts.actions.items():
        starts = [t for t, acts in seconds_actions.items() if first in acts]
        if starts and since.timestamp() <= min(starts) < until.timestamp():
            start = min(starts)
            cohorts[unit_start(utc(start).date(), unit)].append((person, start))
    rows = []
    for cohort, people in sorted(cohorts.items()):
        returned = [0] * periods
        for person, start in people:
            periods_seen = {
                units_between(cohort, unit_start(utc(t).date(), unit), unit)
                for t, acts in facts.actions[person].items()
                if back in acts and t >= start
            }
            for n in periods_seen:
                if n < periods:
                    returned[n] += 1
        for n in range(periods):
            rows.append((cohort, len(people), n, returned[n], share(returned[n], len(people))))
    return rows


@dataclass(frozen=True)
class Arm:
    variant: str
    people: int
    converted: int
    rate: Decimal
    z: float | None
    p_value: float | None


def ab_test(facts: Facts, key: str, conversion: str, since: datetime, until: datetime) -> list[Arm]:
    lo, hi = since.timestamp(), until.timestamp()
    arms: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for person, settings in facts.person_settings(key).items():
        inside = [s for s in settings if lo <= s[0] < hi]
        if not inside:
            continue
        exposure, _, _, variant = min(inside)
        arm = arms[variant]
        arm[0] += 1
        arm[1] += any(
            exposure <= t < hi and conversion in acts for t, acts in facts.actions[person].items()
        )
    if not arms:
        return []
    control = min(arms, key=lambda v: (-arms[v][0], v))
    n_c, c_c = arms[control]
    result = [Arm(control, n_c, c_c, share(c_c, n_c), None, None)]
    for variant in sorted(v for v in arms if v != control):
        n, c = arms[variant]
        pooled = (c + c_c) / (n + n_c)
        se = math.sqrt(pooled * (1 - pooled) * (1 / n + 1 / n_c))
        z = 0.0 if se == 0 else (c / n - c_c / n_c) / se
        result.append(Arm(variant, n, c, share(c, n), z, math.erfc(abs(z) / math.sqrt(2))))
    return result


def revenue(
    facts: Facts, key: str, since: datetime, until: datetime, unit: str
) -> list[tuple[date, Decimal, int, Decimal]]:
    periods: dict[date, tuple[Decimal, set[str]]] = {}
    for (identity, t, k), (_, _, value) in facts.settings.items():
        if k != key or not since.timestamp() <= t < until.timestamp():
            continue
        if not NUMBER.fullmatch(value):
            continue
        period = unit_start(utc(t).date(), unit)
        total, payers = periods.get(period, (Decimal(0), set()))
        payers.add(facts.person_of[identity])
        periods[period] = (total + Decimal(value.strip()), payers)
    return [
        (
            period,
            total,
            len(payers),
            (total / len(payers)).quantize(Decimal("0.0001"), ROUND_HALF_UP),
        )
        for period, (total, payers) in sorted(periods.items())
    ]


def person_properties(facts: Facts) -> set[tuple[str, str, str, datetime, str, datetime]]:
    keys = {k for (_, _, k) in facts.settings}
    rows = set()
    for key in keys:
        for person, settings in facts.person_settings(key).items():
            last, first = max(settings), min(settings)
            rows.add((person, key, last[3], utc(last[0]), first[3], utc(first[0])))
    return rows


def property_at(facts: Facts, person: str, key: str, at: datetime) -> str | None:
    settings = [s for s in facts.person_settings(key).get(person, []) if s[0] <= at.timestamp()]
    return max(settings)[3] if settings else None
