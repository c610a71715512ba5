"""Synthetic Kissmetrics raw-data exports: realistic, deterministic, and streamed to disk.

:func:`generate_export` writes a bucket-like folder (``revisions/N.json``, ``index.csv``,
``status.csv``) for the demo, the benchmark and the tests. The data is a population of visitors of
"heartr", a small fitness-gadget shop with paid plans: anonymous visits, product views, carts,
sign-ups joined to an email identity by alias lines (sometimes from a second device, sometimes in
reverse argument order), property sets (some with non-ASCII values), a checkout funnel with
billing amounts and some refunds, and a homepage A/B experiment.

Lines are written in receive order: each line slot has a clock that walks the span with a daily
rhythm, and the line is the next due event of the sessions open at that moment, so ``_t`` mostly
increases through the files. About 2% of lines arrive late (their ``_t`` hours to a day older) and
about 0.5% are exact duplicates. ``messy=True`` adds the damage real exports show (see
:data:`MESS_RATES`), each kind at a small, fixed rate.

Memory stays bounded whatever the size: lines go to disk in chunks, the open sessions are a few
hundred, and the visitor pool is capped at :data:`MAX_VISITORS`. Everything comes from one
``random.Random(seed)``, so the same arguments write the same bytes.
"""

from __future__ import annotations

import base64
import gzip as gzip_module
import heapq
import math
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson

__all__ = ["MESS_RATES", "ExportSummary", "generate_export"]

Obj = dict[str, Any]
Step = tuple[int, Obj]
"""One planned line of a session: seconds after the previous line, and the JSON object."""

# ---------------------------------------------------------------------------------------------
# Rates (shares of line slots, or of sessions where said)

LATE_RATE: Final = 0.02
"""Lines whose ``_t`` is 1 to 24 hours older than the receive clock."""

DUPLICATE_RATE: Final = 0.005
"""Lines written twice in a row, byte for byte."""

SAME_SECOND_RATE: Final = 0.05
"""Steps of a session that happen in the same second as the previous one."""

RETURNING_CUSTOMER_RATE: Final = 0.20
"""Sessions by a visitor who already signed up (when there is one)."""

RETURNING_VISITOR_RATE: Final = 0.20
"""Sessions by a known visitor drawn from the whole pool."""

NEW_DEVICE_RATE: Final = 0.20
"""Returning signed-up visitors who come from a new device (a new anonymous id, aliased again)."""

SIGNUP_RATE: Final = 0.12
"""Sessions of anonymous visitors that end in a sign-up."""

REVERSED_ALIAS_RATE: Final = 0.15
"""Alias lines written as (email, anonymous id) instead of (anonymous id, email)."""

VARIANT_B_SIGNUP_LIFT: Final = 1.3
"""The homepage experiment's effect: visitors shown "Variation B" sign up this much more often."""

SECOND_VARIANT_RATE: Final = 0.03
"""Visits that show a visitor the other homepage variation than the one they were assigned."""

REFUND_RATE: Final = 0.06
"""Successful checkouts refunded later in the session (a negative billing amount)."""

CHECKOUT_AFTER_SIGNUP_RATE: Final = 0.45
CHECKOUT_LATER_RATE: Final = 0.20
CHECKOUT_SUCCESS_RATE: Final = 0.80
REPEAT_PURCHASE_RATE: Final = 0.05

MIN_AWAY_SECONDS: Final = 1800
"""A visitor drawn to return within this long of their last visit's end is replaced by a new one."""

MAX_VISITORS: Final = 100_000
"""The visitor pool's bound; when full, a new visitor replaces a random old one."""

MAX_CUSTOMERS: Final = 50_000
"""The bound of the pool of signed-up visitors."""

MESS_RATES: Final[dict[str, float]] = {
    "blank": 0.003,  # an empty line
    "crlf": 0.004,  # the line ends with \r\n
    "octal": 0.003,  # non-ASCII text written as C-style octal escapes of its UTF-8 bytes
    "millis": 0.002,  # _t in milliseconds
    "string_t": 0.002,  # _t as a numeric string
    "float_t": 0.002,  # _t as a float with a fraction
    "name_case": 0.003,  # event name with capitals and surrounding spaces
    "key_case": 0.003,  # property keys with capitals
    "typed_value": 0.003,  # a number, boolean or null property value
    "nested": 0.001,  # a nested object (and array) as a property value
    "nul": 0.001,  # a NUL character inside a value
    "truncated": 0.002,  # not JSON: the object is cut short
    "not_object": 0.001,  # JSON, but not an object
    "missing_p": 0.001,  # no _p
    "empty_p": 0.001,  # "_p": ""
    "missing_t": 0.001,  # no _t
}
"""Messy mode: the share of line slots given each kind of damage (3.4% in all).

Lines a reader must reject (truncated, not_object, missing_p, empty_p, missing_t, and millis,
whose ``_t`` is far in the future) are 0.8%; blank lines (0.3%) are skipped. Besides these,
messy mode starts the first file with a UTF-8 BOM and ends the last file without a final newline.
"""

_INVALID_MESS: Final = frozenset(
    {"blank", "truncated", "not_object", "missing_p", "empty_p", "missing_t", "millis"}
)
"""Kinds that leave no usable person and time (a millisecond ``_t`` reads as far in the future);
they count in neither ``index.csv`` nor :class:`ExportSummary` time ranges."""

_CHUNK_LINES: Final = 8192
_BOM: Final = b"\xef\xbb\xbf"
_NON_ASCII_BYTE: Final = re.compile(rb"[\x80-\xff]")

# ---------------------------------------------------------------------------------------------
# The shop

_REFERRERS: Final = (
    "www.google.com",
    "www.google.com",
    "www.google.com",
    "www.bing.com",
    "duckduckgo.com",
    "www.facebook.com",
    "t.co",
    "news.ycombinator.com",
    "www.fitnessmagazine.com",
    "www.reddit.com",
    "www.runnersworld.com",
    "",
)
_SEARCH_ENGINES: Final = frozenset({"www.google.com", "www.bing.com", "duckduckgo.com"})
_SEARCH_TERMS: Final = (
    "heart rate monitor",
    "fitness tracker",
    "best hrm for running",
    "chest strap vs wrist",
    "heartr",
    "heartr coupon",
    "resting heart rate app",
    "pulsómetro barato",
    "心拍計 おすすめ",
    "herzfrequenzmesser test",
)
_CAMPAIGNS: Final = (
    ("newsletter", "spring-sale"),
    ("adwords", "brand"),
    ("adwords", "hrm-generic"),
    ("facebook", "lookalike-runners"),
    ("partner", "fitnessmagazine-review"),
    ("newsletter", "black friday"),
)
_PRODUCTS: Final = (
    ("Pulse Band", "wearables", "79.00"),
    ("Pulse Band Pro", "wearables", "129.00"),
    ("Chest Strap HR", "wearables", "59.00"),
    ("heartr Watch", "wearables", "199.00"),
    ("Spare Strap", "accessories", "14.00"),
    ("Charging Dock", "accessories", "24.00"),
    ("Sweatband 3-pack", "apparel", "12.50"),
    ("Coach Plan Gift Card", "gift cards", "50.00"),
)
_PLANS: Final = (("Starter", "9.00"), ("Pro", "49.00"), ("Pro", "49.00"), ("Team", "199.00"))
_SIGNUP_PLANS: Final = ("Trial", "Trial", "Starter", "Pro")
_GEO: Final = (
    ("United States", "New York"),
    ("United States", "San Francisco"),
    ("United States", "Austin"),
    ("United States", "Chicago"),
    ("United Kingdom", "London"),
    ("Canada", "Montréal"),
    ("Brazil", "São Paulo"),
    ("Brazil", "Paraná"),
    ("Switzerland", "Zürich"),
    ("Japan", "東京"),
    ("Germany", "München"),
    ("Poland", "Kraków"),
    ("France", "Paris"),
    ("Spain", "A Coruña"),
    ("Iceland", "Reykjavík"),
    ("Türkiye", "İstanbul"),
    ("Russia", "Москва"),
    ("Australia", "Sydney"),
)
_NON_ASCII_CITIES: Final = tuple(city for _, city in _GEO if not city.isascii())
_BROWSERS: Final = ("Chrome", "Chrome", "Safari", "Firefox", "Edge", "Mobile Safari")
_PLATFORMS: Final = ("Windows", "macOS", "iOS", "Android", "Linux")
_LOGIN_METHODS: Final = ("password", "password", "google", "magic link")
_FIRST_NAMES: Final = (
    "ana",
    "joao",
    "maria",
    "li",
    "yuki",
    "sam",
    "alex",
    "jordan",
    "lena",
    "omar",
    "priya",
    "lucas",
    "emma",
    "noah",
    "sofia",
    "jan",
)
_LAST_NAMES: Final = (
    "silva",
    "souza",
    "smith",
    "tanaka",
    "muller",
    "kowalski",
    "garcia",
    "nguyen",
    "brown",
    "rossi",
    "novak",
    "okafor",
)
_EMAIL_DOMAINS: Final = ("example.com", "example.org", "example.net", "mail.example.com")
_NOT_OBJECTS: Final = (b"[1,2]", b'"x"', b"42", b"null", b"true", b'["visited site"]')
_TYPED_VALUES: Final = (
    ("quantity", 2),
    ("price", 19.5),
    ("newsletter", True),
    ("returning", False),
    ("coupon", None),
    ("billing amount", 49),
)


# ---------------------------------------------------------------------------------------------
# Public API


@dataclass(frozen=True)
class ExportSummary:
    """What :func:`generate_export` wrote."""

    folder: Path
    files: list[Path]
    """The ``revisions/N.json`` (or ``.json.gz``) paths written, in revision order."""
    lines: int
    """Physical lines written in all files, blank and bad ones included."""
    first_revision: int
    min_t: int
    """Smallest ``_t`` (unix seconds; a string or float ``_t`` read as its whole seconds) of the
    lines a reader can use: JSON objects with a person and a timestamp in seconds."""
    max_t: int


def generate_export(
    folder: Path,
    *,
    lines: int,
    files: int = 1,
    days: float = 28.0,
    end: datetime | None = None,
    seed: int = 0,
    first_revision: int = 22770,
    messy: bool = False,
    gzip: bool = False,
) -> ExportSummary:
    """Write a synthetic Kissmetrics export into ``folder`` and describe it.

    ``lines`` lines (exactly) are spread evenly over ``files`` files numbered from
    ``first_revision``; their events fall in ``(end - days, end]``; ``end`` must be timezone-aware
    and defaults to now, to the second. The same arguments always write the same bytes.
    """
    if files < 1:
        raise ValueError(f"files must be at least 1, not {files}")
    if lines < files:
        raise ValueError(f"lines ({lines}) must be at least files ({files})")
    if not days > 0:
        raise ValueError(f"days must be positive, not {days}")
    if end is None:
        end = datetime.now(UTC).replace(microsecond=0)
    elif end.tzinfo is None or end.utcoffset() is None:
        raise ValueError("end must be timezone-aware (UTC)")
    hi = math.floor(end.timestamp())
    lo = math.floor(hi - days * 86_400) + 1
    lo = min(lo, hi)

    revisions = folder / "revisions"
    revisions.mkdir(parents=True, exist_ok=True)
    writer = _Writer(random.Random(seed), lines=lines, lo=lo, hi=hi, messy=messy)  # noqa: S311
    suffix = ".json.gz" if gzip else ".json"
    paths: list[Path] = []
    ranges: list[tuple[int, int]] = []
    base, extra = divmod(lines, files)
    for k in range(files):
        path = revisions / f"{first_revision + k}{suffix}"
        count = base + (1 if k < extra else 0)
        with gzip_module.GzipFile(path, "wb", 6, mtime=0) if gzip else path.open("wb") as out:
            if messy and k == 0:
                out.write(_BOM)
            ranges.append(writer.write_file(out.write, count, last=k == files - 1))
        paths.append(path)

    min_t = min(lo for lo, _ in ranges)
    max_t = max(hi for _, hi in ranges)
    _write_index(folder / "index.csv", [p.relative_to(folder).as_posix() for p in paths], ranges)
    _write_status(folder / "status.csv", first_revision + files - 1, max_t)
    return ExportSummary(
        folder=folder,
        files=paths,
        lines=lines,
        first_revision=first_revision,
        min_t=min_t,
        max_t=max_t,
    )


# ---------------------------------------------------------------------------------------------
# Files


def _utc_minute(ts: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M GMT", time.gmtime(ts))


def _write_index(path: Path, names: list[str], ranges: list[tuple[int, int]]) -> None:
    rows = ["filename,min_timestamp,max_timestamp,min_utc_date,max_utc_date"]
    for name, (lo, hi) in zip(names, ranges, strict=True):
        rows.append(f"{name},{lo},{hi},{_utc_minute(lo)},{_utc_minute(hi)}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


def _write_status(path: Path, last_revision: int, max_t: int) -> None:
    header = (
        "Total Revisions,Exported Revisions,"
        "Max Exported Revision Timestamp,Max Exported Revision UTC Timestamp"
    )
    row = f"{last_revision},{last_revision},{max_t},{_utc_minute(max_t)}"
    path.write_text(f"{header}\n{row}\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# The clock: line slot -> receive time, busier in the (UTC) afternoon than at night


class _Clock:
    """Maps line slot ``i`` of ``lines`` to a receive time in ``[lo, hi]``, never decreasing."""

    def __init__(self, lines: int, lo: int, hi: int) -> None:
        self.hi = hi
        self.inv_lines = 1.0 / lines
        starts: list[float] = []
        cum: list[float] = [0.0]
        scale: list[float] = []
        total = 0.0
        t = lo
        while True:
            length = min(3600, hi - t)
            mid = time.gmtime(t + length // 2)
            rhythm = 0.35 + 0.65 * (0.5 - 0.5 * math.cos(2 * math.pi * (mid.tm_hour - 4) / 24))
            weight = rhythm * (0.75 if mid.tm_wday >= 5 else 1.0) * length
            starts.append(float(t))
            scale.append(float(length))
            total += weight
            cum.append(total)
            t += length
            if t >= hi:
                break
        if total <= 0:
            cum = [0.0, 1.0]
            starts, scale = [float(lo)], [0.0]
        else:
            cum = [c / total for c in cum]
        # scale[h] turns a fraction inside bucket h into seconds
        self.starts = starts
        self.cum = cum
        self.scale = [
            s / (cum[h + 1] - cum[h]) if cum[h + 1] > cum[h] else 0.0 for h, s in enumerate(scale)
        ]
        self.bucket = 0

    def at(self, i: int) -> int:
        f = (i + 0.5) * self.inv_lines
        cum = self.cum
        h = self.bucket
        last = len(self.starts) - 1
        while h < last and f > cum[h + 1]:
            h += 1
        self.bucket = h
        c = int(self.starts[h] + (f - cum[h]) * self.scale[h])
        return c if c < self.hi else self.hi


# ---------------------------------------------------------------------------------------------
# Visitors and sessions


class _Visitor:
    __slots__ = ("anon", "busy_until", "email", "paid", "variant")

    def __init__(self, anon: str) -> None:
        self.anon = anon
        self.email: str | None = None
        self.paid = False
        self.variant = ""
        self.busy_until = 0


class _Writer:
    """Holds the random state, the visitor pools and the open sessions across files."""

    def __init__(self, rng: random.Random, *, lines: int, lo: int, hi: int, messy: bool) -> None:
        self.rng = rng
        self.lines = lines
        self.lo = lo
        self.hi = hi
        self.messy = messy
        self.clock = _Clock(lines, lo, hi)
        self.slot = 0
        self.seq = 0
        self.heap: list[tuple[int, int, list[Step], int]] = []
        self.visitors: list[_Visitor] = []
        self.customers: list[_Visitor] = []
        self.email_count = 0
        kinds = list(MESS_RATES)
        self.mess_kinds = kinds
        self.mess_cum: list[float] = []
        acc = 0.0
        for kind in kinds:
            acc += MESS_RATES[kind]
            self.mess_cum.append(acc)
        self.mess_total = acc
        self.dup_cut = LATE_RATE + DUPLICATE_RATE
        self.mess_cut = self.dup_cut + (acc if messy else 0.0)

    # -- identities ---------------------------------------------------------------------------

    def _anon_id(self) -> str:
        return base64.b64encode(self.rng.getrandbits(160).to_bytes(20, "big")).decode("ascii")

    def _email(self) -> str:
        rng = self.rng
        self.email_count += 1
        first = _FIRST_NAMES[rng.randrange(len(_FIRST_NAMES))]
        last = _LAST_NAMES[rng.randrange(len(_LAST_NAMES))]
        domain = _EMAIL_DOMAINS[rng.randrange(len(_EMAIL_DOMAINS))]
        return f"{first}.{last}{self.email_count}@{domain}"

    def _new_visitor(self) -> _Visitor:
        v = _Visitor(self._anon_id())
        if len(self.visitors) < MAX_VISITORS:
            self.visitors.append(v)
        else:
            self.visitors[self.rng.randrange(MAX_VISITORS)] = v
        return v

    def _add_customer(self, v: _Visitor) -> None:
        if len(self.customers) < MAX_CUSTOMERS:
            self.customers.append(v)
        else:
            self.customers[self.rng.randrange(MAX_CUSTOMERS)] = v

    # -- line objects ---------------------------------------------------------------------------

    def _event(self, name: str, p: str, props: tuple[tuple[str, Any], ...] = ()) -> Obj:
        """An event object keyed like real exports: a property, _n, _p, the rest (_t comes last)."""
        d: Obj = {}
        rest = props
        if props and self.rng.random() < 0.75:
            d[props[0][0]] = props[0][1]
            rest = props[1:]
        d["_n"] = name
        d["_p"] = p
        for key, value in rest:
            d[key] = value
        return d

    def _props(self, p: str, props: tuple[tuple[str, Any], ...]) -> Obj:
        """A property-set object; the ``_t`` placeholder keeps its place when filled in."""
        if self.rng.random() < 0.7:
            d: Obj = {"_p": p, "_t": 0}
            d.update(props)
            return d
        d = dict(props)
        d["_p"] = p
        d["_t"] = 0
        return d

    def _alias(self, anon: str, email: str) -> Obj:
        if self.rng.random() < REVERSED_ALIAS_RATE:
            return {"_p": email, "_p2": anon}
        return {"_p": anon, "_p2": email}

    def _gap(self) -> int:
        rng = self.rng
        if rng.random() < SAME_SECOND_RATE:
            return 0
        return 1 + int(rng.expovariate(1 / 40))

    def _visit(self, p: str, v: _Visitor) -> Obj:
        rng = self.rng
        referrer = _REFERRERS[rng.randrange(len(_REFERRERS))]
        props: list[tuple[str, Any]] = []
        if referrer:
            props.append(("referrer", referrer))
        if referrer in _SEARCH_ENGINES and rng.random() < 0.4:
            props.append(("search terms", _SEARCH_TERMS[rng.randrange(len(_SEARCH_TERMS))]))
        if rng.random() < 0.2:
            source, name = _CAMPAIGNS[rng.randrange(len(_CAMPAIGNS))]
            props.append(("campaign source", source))
            props.append(("campaign name", name))
        # The homepage experiment: each visitor is assigned a variation on their first visit and
        # sees it again on about half of their visits (a few see the other one).
        if not v.variant or rng.random() < 0.5:
            if not v.variant:
                v.variant = "Variation B" if rng.random() < 0.5 else "Control"
            shown = v.variant
            if rng.random() < SECOND_VARIANT_RATE:
                shown = "Control" if shown == "Variation B" else "Variation B"
            props.append(("homepage variation", shown))
        return self._event("visited site", p, tuple(props))

    # -- one session ------------------------------------------------------------------------------

    def _pick_visitor(self, c: int) -> tuple[_Visitor, bool]:
        rng = self.rng
        r = rng.random()
        v: _Visitor | None = None
        if r < RETURNING_CUSTOMER_RATE and self.customers:
            v = self.customers[rng.randrange(len(self.customers))]
        elif r < RETURNING_CUSTOMER_RATE + RETURNING_VISITOR_RATE and self.visitors:
            v = self.visitors[rng.randrange(len(self.visitors))]
        if v is None or v.busy_until + MIN_AWAY_SECONDS > c:
            return self._new_visitor(), True
        return v, False

    def _plan_session(self, c: int) -> list[Step]:
        """Plan one visit of one visitor starting at ``c``; updates the visitor's funnel state."""
        v, first = self._pick_visitor(c)
        steps: list[Step] = []
        p = self._arrive(steps, v, first)
        self._browse(steps, p)
        just_signed_up = False
        lift = VARIANT_B_SIGNUP_LIFT if v.variant == "Variation B" else 1.0
        if v.email is None and self.rng.random() < SIGNUP_RATE * lift:
            p = self._sign_up(steps, v)
            just_signed_up = True
        if v.email is not None:
            self._maybe_checkout(steps, v, p, just_signed_up)
        total = 0
        for step_gap, _ in steps:
            total += step_gap
        v.busy_until = c + total
        return steps

    def _arrive(self, steps: list[Step], v: _Visitor, first: bool) -> str:
        """The visit, a first visitor's location, a known person's log-in; returns the ``_p``."""
        rng = self.rng
        new_device = v.email is not None and rng.random() < NEW_DEVICE_RATE
        if new_device:
            v.anon = self._anon_id()
        p = v.email if v.email is not None and not new_device else v.anon
        steps.append((0, self._visit(p, v)))
        if first and rng.random() < 0.6:
            country, city = _GEO[rng.randrange(len(_GEO))]
            geo: tuple[tuple[str, Any], ...] = (("country", country), ("city", city))
            if rng.random() < 0.3:
                browser = _BROWSERS[rng.randrange(len(_BROWSERS))]
                platform = _PLATFORMS[rng.randrange(len(_PLATFORMS))]
                geo = (*geo, ("browser", browser), ("platform", platform))
            steps.append((self._gap(), self._props(p, geo)))
        if v.email is None:
            return p
        method = (("method", _LOGIN_METHODS[rng.randrange(len(_LOGIN_METHODS))]),)
        if new_device:
            # A second device: log in anonymously, then join the new id to the person.
            steps.append((self._gap(), self._event("logged in", v.anon, method)))
            steps.append((0, self._alias(v.anon, v.email)))
            return v.email
        if rng.random() < 0.5:
            steps.append((self._gap(), self._event("logged in", p, method)))
            if rng.random() < 0.1:  # repeating an alias is harmless, and happens
                steps.append((0, self._alias(v.anon, v.email)))
        return p

    def _browse(self, steps: list[Step], p: str) -> None:
        rng = self.rng
        views = 1 + min(7, int(rng.expovariate(0.55)))
        for _ in range(views):
            product, category, price = _PRODUCTS[rng.randrange(len(_PRODUCTS))]
            view = (("product", product), ("category", category))
            steps.append((self._gap(), self._event("viewed product", p, view)))
            if rng.random() < 0.25:
                cart = (("product", product), ("price", price), ("quantity", "1"))
                steps.append((self._gap(), self._event("added to cart", p, cart)))

    def _sign_up(self, steps: list[Step], v: _Visitor) -> str:
        rng = self.rng
        email = self._email()
        plan = _SIGNUP_PLANS[rng.randrange(len(_SIGNUP_PLANS))]
        steps.append((self._gap(), self._event("signed up", v.anon, (("plan name", plan),))))
        steps.append((0, self._alias(v.anon, email)))
        v.email = email
        self._add_customer(v)
        if rng.random() < 0.5:
            steps.append((self._gap(), self._props(email, (("plan", plan), ("newsletter", "yes")))))
        return email

    def _maybe_checkout(self, steps: list[Step], v: _Visitor, p: str, just_signed_up: bool) -> None:
        rng = self.rng
        if v.paid:
            rate = REPEAT_PURCHASE_RATE
        else:
            rate = CHECKOUT_AFTER_SIGNUP_RATE if just_signed_up else CHECKOUT_LATER_RATE
        if rng.random() >= rate:
            return
        plan, amount = _PLANS[rng.randrange(len(_PLANS))]
        steps.append((self._gap(), self._event("checkout started", p, (("plan name", plan),))))
        if rng.random() < CHECKOUT_SUCCESS_RATE:
            paid = (("billing amount", amount), ("plan name", plan))
            steps.append((self._gap(), self._event("checkout successful", p, paid)))
            v.paid = True
            if rng.random() < 0.7:
                steps.append((0, self._props(p, (("plan", plan), ("customer", "yes")))))
            if rng.random() < REFUND_RATE:
                refund = (("billing amount", f"-{amount}"), ("plan name", plan))
                steps.append((self._gap() + 600, self._event("refunded", p, refund)))

    # -- writing --------------------------------------------------------------------------------

    def _next(self) -> tuple[int, Obj]:
        """The next line in receive order: (its event time, its object without ``_t`` set)."""
        c = self.clock.at(self.slot)
        self.slot += 1
        heap = self.heap
        if not heap or heap[0][0] > c:
            self.seq += 1
            heapq.heappush(heap, (c, self.seq, self._plan_session(c), 0))
        t, seq, steps, k = heap[0]
        obj = steps[k][1]
        k += 1
        if k < len(steps):
            heapq.heapreplace(heap, (t + steps[k][0], seq, steps, k))
        else:
            heapq.heappop(heap)
        return t, obj

    def _line(self, clean: bool) -> tuple[bytes, bytes | None, int]:
        """One line with its end: (line, the same again if it is to be duplicated, its ``_t``).

        The ``_t`` is -1 for a line without a usable person and timestamp.
        """
        t, obj = self._next()
        r = self.rng.random()
        if r < LATE_RATE:
            t = max(self.lo, t - 3600 - int(self.rng.random() * 82_800))
        obj["_t"] = t
        if self.dup_cut <= r < self.mess_cut and not clean:
            line, valid = self._mess(obj, t)
            return line, None, t if valid else -1
        line = orjson.dumps(obj) + b"\n"
        return line, line if LATE_RATE <= r < self.dup_cut else None, t

    def write_file(
        self, write: Callable[[bytes], object], count: int, *, last: bool
    ) -> tuple[int, int]:
        """Write the next ``count`` lines; returns the file's (min, max) usable ``_t``."""
        final = count - 1 if last and self.messy else -1
        f_min = self.hi + 1
        f_max = -1
        chunk: list[bytes] = []
        pending: bytes | None = None
        for n in range(count):
            if pending is not None:
                line, pending = pending, None
                self.slot += 1
            else:
                line, pending, t = self._line(n == final)
                if t >= 0:
                    f_min = min(f_min, t)
                    f_max = max(f_max, t)
            if len(chunk) >= _CHUNK_LINES:
                write(b"".join(chunk))
                chunk.clear()
            chunk.append(line)
        if final >= 0:  # messy: the last file has no final newline
            chunk[-1] = chunk[-1].rstrip(b"\r\n")
        write(b"".join(chunk))
        if f_max < 0:  # no usable line in this file: use the clock
            f_min = f_max = self.clock.at(self.slot - 1)
        return f_min, f_max

    # -- messy mode -------------------------------------------------------------------------------

    def _mess(self, obj: Obj, t: int) -> tuple[bytes, bool]:
        """Damage one line as messy mode does; returns the line (with its end) and its validity."""
        r = self.rng.random() * self.mess_total
        kind = self.mess_kinds[-1]
        for name, cut in zip(self.mess_kinds, self.mess_cum, strict=True):
            if r < cut:
                kind = name
                break
        line = self._mess_line(kind, obj)
        if line is None:
            line = orjson.dumps(self._mess_object(kind, obj, t))
        return line + (b"\r\n" if kind == "crlf" else b"\n"), kind not in _INVALID_MESS

    def _mess_line(self, kind: str, obj: Obj) -> bytes | None:
        """The kinds that write the line itself; None for the others."""
        rng = self.rng
        match kind:
            case "blank":
                return b""
            case "octal":
                obj["city"] = _NON_ASCII_CITIES[rng.randrange(len(_NON_ASCII_CITIES))]
                return _NON_ASCII_BYTE.sub(_octal, orjson.dumps(obj))
            case "truncated":
                text = orjson.dumps(obj).decode("utf-8")
                return text[: rng.randrange(1, len(text) - 1)].encode("utf-8")
            case "not_object":
                return _NOT_OBJECTS[rng.randrange(len(_NOT_OBJECTS))]
        return None

    def _mess_object(self, kind: str, obj: Obj, t: int) -> Obj:
        """The kinds that change the object; the others leave it as it is."""
        match kind:
            case "millis":
                obj["_t"] = t * 1000
            case "string_t":
                obj["_t"] = str(t)
            case "float_t":
                obj["_t"] = t + 0.7
            case "name_case" if isinstance(obj.get("_n"), str):
                obj["_n"] = f" {obj['_n'].title()} "
            case "key_case":
                return {key if key.startswith("_") else key.title(): obj[key] for key in obj}
            case "typed_value":
                key, value = _TYPED_VALUES[self.rng.randrange(len(_TYPED_VALUES))]
                obj[key] = value
            case "nested":
                obj["context"] = {"page": "/pricing", "experiment": {"id": 7, "arms": ["a", "b"]}}
            case "nul":
                props = [key for key in obj if not key.startswith("_")]
                obj[props[0] if props else "note"] = "free\x00shipping"
            case "missing_p":
                del obj["_p"]
            case "empty_p":
                obj["_p"] = ""
            case "missing_t":
                del obj["_t"]
        return obj


def _octal(match: re.Match[bytes]) -> bytes:
    return b"\\%03o" % match.group()[0]
