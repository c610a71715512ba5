"""The end-to-end oracle: what a correct load of export files gives, in plain Python.

Written from the rules (README's "What loading guarantees" and "The schema", and the export
notes in ``../shared/kissmetrics-export.md``), not from km2pg: it imports nothing of km2pg and
reads lines with the standard ``json`` module, its own octal-escape repair and its own
classification. A parser bug (a BOM, CRLF, an octal escape, a reject or time rule) then shows as
a difference between a loaded database's canonical dump and the oracle's, instead of being
copied into the expectation. ``tests/integration/test_oracle.py`` proves that it does.

The dump has the shape of :func:`tests.helpers.canonical_dump`: every table by the text of
what it names, sorted.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

Dump = dict[str, list[tuple[Any, ...]]]

BOM = b"\xef\xbb\xbf"
MAX_LINE_BYTES = 1 << 20  # "over 1 MiB" is refused
FIRST_SECOND = 946_684_800  # 2000-01-01T00:00:00Z
FUTURE_SLACK = 86_400  # "load time + 1 day"
DEFAULT_MAX_REJECT_SHARE = 0.10
RESERVED = {"_p", "_p2", "_n", "_t"}
_REVISION = re.compile(r"(?:^|/)revisions/(\d+)\.json(?:\.gz)?$")
_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


class Refused(Exception):
    """The line cannot be loaded."""


class Number(str):
    """A JSON number, kept as the text the line wrote (values keep it: "49.90", not 49.9)."""

    __slots__ = ()


@dataclass
class Good:
    """A usable line: ``alias`` for alias lines, ``name`` for event lines, else a property set."""

    lineno: int
    person: str
    t: int
    alias: str | None = None
    name: str | None = None
    properties: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Lines of a file


def physical_lines(content: bytes) -> list[tuple[int, bytes]]:
    """(number from 1, bytes without the end of line): a BOM before the first line, ``\\r\\n``
    ends and a missing final newline are all fine."""
    content = content.removeprefix(BOM)
    pieces = content.split(b"\n")
    if pieces and pieces[-1] == b"":
        pieces.pop()  # the file ended with a newline: nothing after it
    return [(n, piece.removesuffix(b"\r")) for n, piece in enumerate(pieces, 1)]


def repair_octal(text: str) -> str:
    """Each run of C-style octal escapes (``\\303\\241``) becomes the UTF-8 text its bytes
    spell (invalid bytes as U+FFFD), escaped again for JSON. Other escapes, an escaped backslash
    before digits (``\\\\303``) among them, are left as they are."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] != "\\":
            out.append(text[i])
            i += 1
            continue
        run = bytearray()
        while _octal_escape_at(text, i):
            run.append(int(text[i + 1 : i + 4], 8))
            i += 4
        if run:
            out.append(json.dumps(run.decode("utf-8", errors="replace"), ensure_ascii=False)[1:-1])
        else:
            out.append(text[i : i + 2])  # any other escape, taken whole
            i += 2
    return "".join(out)


def _octal_escape_at(text: str, i: int) -> bool:
    digits = text[i + 1 : i + 4]
    return (
        text[i : i + 1] == "\\"
        and len(digits) == 3
        and digits[0] in "0123"
        and all(c in "01234567" for c in digits)
    )


def _refuse_constant(name: str) -> Any:
    raise Refused(f"{name} is not JSON")


def decode(raw: bytes) -> Any:
    """The line's JSON value; invalid UTF-8 becomes U+FFFD, octal escapes are repaired."""
    text = raw.decode("utf-8", errors="replace")
    for attempt in (text, repair_octal(text)):
        try:
            value = json.loads(
                attempt, parse_int=Number, parse_float=Number, parse_constant=_refuse_constant
            )
        except ValueError:
            continue
        except RecursionError:
            raise Refused("nested too deeply") from None
        _check_storable(value)
        return value
    raise Refused("not JSON")


def _check_storable(value: Any) -> None:
    """Text PostgreSQL cannot store (a lone surrogate, from ``\\ud800``) refuses the line."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise Refused("lone surrogate") from None
    except RecursionError:
        raise Refused("nested too deeply") from None


def classify(lineno: int, raw: bytes, latest: int) -> Good | None:
    """A usable line, or None for a blank one; raises :class:`Refused` for a rejected line."""
    if len(raw) > MAX_LINE_BYTES:
        raise Refused("over 1 MiB")
    if not raw.strip():
        return None
    obj = decode(raw)
    if not isinstance(obj, dict):
        raise Refused("not an object")
    person = identity(obj, "_p")
    t = seconds(obj, latest)
    if "_p2" in obj:  # _p2 makes an alias line, whatever else the line holds
        return Good(lineno, person, t, alias=identity(obj, "_p2"))
    name = None
    if "_n" in obj:
        if not isinstance(obj["_n"], str) or isinstance(obj["_n"], Number):
            raise Refused("_n is not a string")
        name = normalized(obj["_n"])
        if not name:
            raise Refused("empty _n")
    properties: dict[str, str] = {}
    for key, value in obj.items():
        if key in RESERVED or value is None:  # null means no property
            continue
        properties[normalized(key)] = text_of(value)  # later keys win on the same name
    return Good(lineno, person, t, name=name, properties=properties)


def identity(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if isinstance(value, str):  # a string, or a number as written
        text = value.replace("\x00", "")
    elif value is None:
        raise Refused(f"no {key}")
    else:
        raise Refused(f"{key} is not a string")
    if not text.strip():
        raise Refused(f"empty {key}")
    return str(text)


def seconds(obj: dict[str, Any], latest: int) -> int:
    """``_t`` in whole seconds: a number or a numeric string, a fraction floored; it must lie in
    [2000-01-01, load time + 1 day] (so milliseconds are refused)."""
    if "_t" not in obj:
        raise Refused("no _t")
    value = obj["_t"]
    if not isinstance(value, str):  # JSON numbers are Number, itself a str
        raise Refused("_t is not a number")
    text = value.strip()
    if not _DECIMAL.fullmatch(text):
        raise Refused("_t is not a number")
    if re.fullmatch(r"[+-]?\d+", text):
        t = int(text)
    else:
        number = float(text)
        if not math.isfinite(number):
            raise Refused("_t is not a number")
        t = math.floor(number)
    if not FIRST_SECOND <= t <= latest:
        raise Refused("_t out of range")
    return t


def normalized(name: str) -> str:
    """Event and property names: NUL removed, trimmed, lowercased."""
    return name.replace("\x00", "").strip().lower()


def text_of(value: Any) -> str:
    """A value as text: strings as they are (NUL removed), numbers as written, booleans as
    ``true``/``false``, nested values as compact JSON (their numbers as written too)."""
    if isinstance(value, Number):
        return str.__str__(value)
    if isinstance(value, str):
        return value.replace("\x00", "")
    return compact_json(value)


def compact_json(value: Any) -> str:
    if isinstance(value, Number):
        return str.__str__(value)
    if isinstance(value, dict):
        items = (f"{compact_json(str(k))}:{compact_json(v)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(compact_json(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


# ---------------------------------------------------------------------------------------------
# Files


def read_file(
    revision: int, content: bytes, latest: int, max_reject_share: float
) -> tuple[list[Good], list[int], bool]:
    """(usable lines, rejected line numbers, whether the file fails: more than
    ``max_reject_share`` of its non-blank lines rejected)."""
    good: list[Good] = []
    rejected: list[int] = []
    for lineno, raw in physical_lines(content):
        try:
            line = classify(lineno, raw, latest)
        except Refused:
            rejected.append(lineno)
            continue
        if line is not None:
            good.append(line)
    parsed = len(good) + len(rejected)
    fails = bool(rejected) and len(rejected) / parsed > max_reject_share
    return good, rejected, fails


def revision_of(path: str | Path) -> int:
    """N of ``.../revisions/N.json`` (or ``.json.gz``); 0 for any other name."""
    match = _REVISION.search(str(path))
    return int(match.group(1)) if match else 0


def as_content(lines: bytes | Sequence[str | bytes]) -> bytes:
    """A file's bytes, given whole or as lines without their ends."""
    if isinstance(lines, bytes):
        return lines
    return b"".join((x.encode() if isinstance(x, str) else x) + b"\n" for x in lines)


def oracle_dump(
    files: Iterable[tuple[int, bytes | Sequence[str | bytes]]],
    now: int | None = None,
    max_reject_share: float = DEFAULT_MAX_REJECT_SHARE,
) -> Dump:
    """The canonical dump a correct loader gives for ``files``: (revision, the file's bytes,
    or its lines without their ends), loaded in any order, any number of times. A file whose
    rejected share is over ``max_reject_share`` adds nothing."""
    latest = (int(time.time()) if now is None else now) + FUTURE_SLACK
    state = _State()
    for revision, lines in files:
        good, _rejected, fails = read_file(revision, as_content(lines), latest, max_reject_share)
        if not fails:
            for line in good:
                state.add(revision, line)
    return state.dump()


def oracle_dump_of_paths(paths: Iterable[Path], now: int | None = None) -> Dump:
    """:func:`oracle_dump` of files on disk, each revision read from its name."""
    return oracle_dump(((revision_of(p), p.read_bytes()) for p in paths), now=now)


def oracle_rejects(content: bytes, now: int | None = None) -> list[int]:
    """The line numbers a correct loader rejects in a file."""
    latest = (int(time.time()) if now is None else now) + FUTURE_SLACK
    return read_file(0, content, latest, 1.0)[1]


class _State:
    """Facts accumulated line by line, every table keyed by text."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.parent: dict[str, str] = {}
        self.aliases: dict[tuple[str, str], int] = {}
        self.events: set[tuple[str, int]] = set()
        self.actions: set[tuple[str, int, str]] = set()
        # (person, t, key) -> (revision, lineno, value, action name): greatest (revision,
        # lineno) wins, then the greater value (a tie only two contents of one key can make).
        self.properties: dict[tuple[str, int, str], tuple[int, int, str, str | None]] = {}
        self.keys: set[str] = set()

    def root(self, name: str) -> str:
        while self.parent.get(name, name) != name:
            name = self.parent[name]
        return name

    def add(self, revision: int, line: Good) -> None:
        self.names.add(line.person)
        if line.alias is not None:
            self.names.add(line.alias)
            pair = (line.person, line.alias)
            self.aliases[pair] = min(self.aliases.get(pair, line.t), line.t)
            a, b = self.root(line.person), self.root(line.alias)
            if a != b:
                self.parent[max(a, b)] = min(a, b)
            return
        self.events.add((line.person, line.t))
        if line.name is not None:
            self.actions.add((line.person, line.t, line.name))
        for key, value in line.properties.items():
            self.keys.add(key)
            slot = (line.person, line.t, key)
            candidate = (revision, line.lineno, value, line.name)
            held = self.properties.get(slot)
            if held is None or candidate[:3] > held[:3]:
                self.properties[slot] = candidate

    def dump(self) -> Dump:
        members: dict[str, list[str]] = defaultdict(list)
        for name in self.names:
            members[self.root(name)].append(name)
        person = {name: min(group) for group in members.values() for name in group}
        tables: dict[str, set[tuple[Any, ...]]] = {
            "users": {(n, person[n]) for n in self.names},
            "aliases": {(a, b, _time(t)) for (a, b), t in self.aliases.items()},
            "events": {(p, _time(t)) for p, t in self.events},
            "event_actions": {(p, _time(t), n) for p, t, n in self.actions},
            "event_properties": {
                (p, _time(t), k, value, action, revision, lineno)
                for (p, t, k), (revision, lineno, value, action) in self.properties.items()
            },
            "actions": {(n,) for _, _, n in self.actions},
            "keys": {(k,) for k in self.keys},
            "person_properties": self._person_properties(person),
        }
        return {name: sorted(rows, key=repr) for name, rows in tables.items()}

    def _person_properties(self, person: dict[str, str]) -> set[tuple[Any, ...]]:
        """Per person and key, of the settings kept above: the latest and the first by
        (t, revision, lineno, value)."""
        settings: dict[tuple[str, str], list[tuple[int, int, int, str]]] = defaultdict(list)
        for (p, t, k), (revision, lineno, value, _) in self.properties.items():
            settings[(person[p], k)].append((t, revision, lineno, value))
        return {
            (p, k, max(rows)[3], _time(max(rows)[0]), min(rows)[3], _time(min(rows)[0]))
            for (p, k), rows in settings.items()
        }


def _time(t: int) -> datetime:
    return datetime.fromtimestamp(t, UTC)
