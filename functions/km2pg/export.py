"""Parse Kissmetrics export lines: pure, streaming, and forgiving of the mess real exports hold.

One JSON object per line. ``_p2`` makes an alias line, else ``_n`` an event line, else the line
sets properties. A line that cannot be used becomes a :class:`Reject` with its line number and a
one-line reason; the rest of the file goes on. Nothing here touches a database.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import IO, Any, Final

import orjson

MAX_LINE_BYTES: Final = 1024 * 1024
"""Lines longer than this are rejected without being parsed."""

MAX_RAW_CHARS: Final = 64 * 1024
"""How much of a rejected line is kept for inspection."""

MIN_TIMESTAMP: Final = 946_684_800
"""2000-01-01T00:00:00Z: nothing in a Kissmetrics export is older."""

FUTURE_SLACK_SECONDS: Final = 86_400
"""Timestamps up to a day ahead of the load time are accepted (clock skew); later ones are not."""

RESERVED_KEYS: Final = frozenset({"_p", "_p2", "_n", "_t"})
_INEXACT: Final = frozenset({float, dict, list})
"""Value types whose text the fast parser may not keep (1.10 -> 1.1): read exactly instead."""
_BOM: Final = b"\xef\xbb\xbf"


class LineKind(StrEnum):
    EVENT = "e"
    PROPERTIES = "p"
    ALIAS = "a"


# Not frozen: a frozen dataclass costs four times as much to create, once per line.
@dataclass(slots=True)
class Line:
    """One usable export line.

    ``name`` is the event name (events only), ``alias`` the second identity (aliases only).
    ``properties`` holds (name, value) pairs: names lowercased and trimmed, values as text.
    """

    lineno: int
    kind: LineKind
    person: str
    t: int
    name: str | None = None
    alias: str | None = None
    properties: tuple[tuple[str, str], ...] = ()
    plain: bool = False
    """True when no text of this line holds a backslash or a control character: COPY and other
    serializers can then skip escaping."""
    inexact: bool = False
    """True when a value came out of the fast parser as a float, whose text may differ from the
    line's; the parser then reads the line again, exactly."""


@dataclass(slots=True)
class Reject:
    """A line that cannot be loaded, and why. ``raw`` is the line as text, cut to 64 KiB."""

    lineno: int
    reason: str
    raw: str


class LineError(ValueError):
    """Raised inside the parser for a line that must be rejected; the message is the reason."""


# ---------------------------------------------------------------------------------------------
# Reading lines


def iter_raw_lines(
    stream: IO[bytes], max_bytes: int = MAX_LINE_BYTES
) -> Iterator[tuple[int, bytes]]:
    """Yield (line number, line without its end of line) from a binary stream.

    Line numbers count every physical line from 1. Memory stays bounded by ``max_bytes`` even for
    a line that never ends: an over-long line is yielded as its first ``max_bytes + 1`` bytes, so
    the caller can tell it apart, and the rest of it is skipped. A UTF-8 BOM at the start of the
    stream, ``\\r\\n`` line ends and a missing final newline are all handled here.
    """
    readline = stream.readline
    lineno = 0
    limit = max_bytes + 3  # room for "\r\n" and one byte that proves the line is too long
    while True:
        # The first line may carry a BOM on top: it must not count towards the line's length.
        read_limit = limit + len(_BOM) if lineno == 0 else limit
        chunk = readline(read_limit)
        if not chunk:
            return
        lineno += 1
        complete = chunk.endswith(b"\n") or len(chunk) < read_limit
        if lineno == 1 and chunk.startswith(_BOM):
            chunk = chunk[len(_BOM) :]
        if chunk.endswith(b"\n"):
            chunk = chunk[:-2] if chunk.endswith(b"\r\n") else chunk[:-1]
        elif not complete:
            # The line goes on: keep its head for the reject, drop the rest.
            while True:
                rest = readline(1 << 20)
                if not rest or rest.endswith(b"\n"):
                    break
            yield lineno, chunk[: max_bytes + 1]
            continue
        elif chunk.endswith(b"\r"):
            chunk = chunk[:-1]
        yield lineno, chunk


# ---------------------------------------------------------------------------------------------
# Repairing and decoding

# A run of C-style octal escapes (\303\241) not preceded by an odd number of backslashes.
_OCTAL_RUN: Final = re.compile(r"(?<!\\)((?:\\\\)*)((?:\\[0-3][0-7]{2})+)")


def _octal_run_to_json(match: re.Match[str]) -> str:
    escaped_backslashes, run = match.group(1), match.group(2)
    raw = bytes(int(run[i + 1 : i + 4], 8) for i in range(0, len(run), 4))
    text = raw.decode("utf-8", errors="replace")
    # Re-escape for JSON: the decoded text may hold quotes, backslashes or control characters.
    return escaped_backslashes + json.dumps(text, ensure_ascii=False)[1:-1]


def repair_octal_escapes(text: str) -> str:
    """Turn C-style octal escapes of UTF-8 bytes into the characters they stand for.

    ``"Paran\\303\\241"`` (not valid JSON) becomes ``"Paraná"``. An escaped backslash followed by
    digits (``"C:\\\\303"``) is left alone.
    """
    if "\\" not in text:
        return text
    return _OCTAL_RUN.sub(_octal_run_to_json, text)


class JsonNumber(str):
    """A number exactly as written in the line (``49.90``, ``1e400``, a 30-digit integer)."""

    __slots__ = ()


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def exact_json(text: str | bytes) -> Any:
    """Parse keeping every number's own text (slow path: only for lines that need it).

    Raises :class:`LineError` for what the fast parser also refuses: NaN, lone surrogates
    (text PostgreSQL could not store), nesting too deep to handle.
    """
    try:
        value = json.loads(
            text, parse_float=JsonNumber, parse_int=JsonNumber, parse_constant=_no_constants
        )
        # Lone surrogate escapes ("\ud800") decode to text that is not UTF-8: refuse the line.
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except RecursionError:
        raise LineError("value nested too deeply") from None
    except UnicodeEncodeError:
        raise LineError("not valid JSON: lone surrogate in a string") from None
    except ValueError as error:
        raise LineError(f"not valid JSON: {_first_line(str(error))}") from None
    return value


def decode_json_line(raw: bytes) -> Any:
    """Parse one JSON line; when the strict parse fails, repair octal escapes and invalid UTF-8.

    Invalid UTF-8 bytes become U+FFFD rather than failing the line. Numbers orjson cannot hold
    (past a double's range) are kept as their text. Raises :class:`LineError`.
    """
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as strict_error:
        text = raw.decode("utf-8", errors="replace")
        repaired = repair_octal_escapes(text)
        try:
            return orjson.loads(repaired)
        except orjson.JSONDecodeError:
            try:
                return exact_json(repaired)
            except LineError as error:
                if "not valid JSON" in str(error):
                    raise LineError(f"not valid JSON: {_first_line(str(strict_error))}") from None
                raise


def _first_line(message: str) -> str:
    return message.splitlines()[0] if message else "parse error"


# ---------------------------------------------------------------------------------------------
# Fields


def normalize_name(name: str) -> str:
    """Event and property names are case-insensitive in Kissmetrics: lowercase and trim them."""
    cached = _NAMES.get(name)
    if cached is None:
        cached = _strip_nul(name).strip().lower()
        if len(_NAMES) < _NAMES_CACHED:
            # A site has a few hundred names at most; the cache saves most of a line's work.
            _NAMES[name] = cached
    return cached


_NAMES: dict[str, str] = {}
_NAMES_CACHED: Final = 50_000


def _strip_nul(text: str) -> str:
    # PostgreSQL text cannot hold NUL.
    return text.replace("\x00", "") if "\x00" in text else text


def value_text(value: Any) -> str | None:
    """A property value as text: strings as they are, numbers, booleans and nested values as JSON.

    ``None`` (JSON null) means "no property". Numbers read by :func:`exact_json` keep their text.
    """
    if value.__class__ is str:
        text: str = value
        return text.replace("\x00", "") if "\x00" in text else text
    if value is None:
        return None
    if isinstance(value, JsonNumber):
        return str.__str__(value)
    if isinstance(value, dict | list):
        return _strip_nul(_json_text(value))
    return _strip_nul(orjson.dumps(value).decode())


def _json_text(value: Any) -> str:
    """Compact JSON, as orjson writes it, but numbers keep the text they were read with."""
    if isinstance(value, JsonNumber):
        return str.__str__(value)
    if isinstance(value, dict):
        items = (f"{orjson.dumps(str(k)).decode()}:{_json_text(v)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_json_text(v) for v in value) + "]"
    return orjson.dumps(value).decode()


def _identity(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if value is None:
        raise LineError(f"missing {key}" if key not in obj else f"{key} is null")
    if isinstance(value, str):
        text = _strip_nul(value)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        text = orjson.dumps(value).decode()
    else:
        raise LineError(f"{key} is not a string")
    if not text.strip():
        raise LineError(f"empty {key}")
    return text


def parse_timestamp(value: Any, latest: int) -> int:
    """``_t`` as whole seconds: an integer, a numeric string or a float (floored).

    Raises :class:`LineError` outside [2000-01-01, ``latest``]: that catches milliseconds.
    """
    if isinstance(value, bool) or value is None:
        raise LineError("missing _t" if value is None else "_t is not a number")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise LineError("_t is not a number")
        seconds = int(value // 1)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise LineError(f"_t is not a number: {value[:40]!r}") from None
        if not math.isfinite(number):
            raise LineError(f"_t is not a number: {value[:40]!r}")
        seconds = int(number // 1)
    else:
        raise LineError("_t is not a number")
    if seconds < MIN_TIMESTAMP:
        raise LineError(f"_t {seconds} is before 2000-01-01")
    if seconds > latest:
        hint = " (milliseconds?)" if seconds > latest * 100 else ""
        raise LineError(f"_t {seconds} is in the future{hint}")
    return seconds


def parse_object(lineno: int, obj: Any, latest: int, plain: bool = False) -> Line:
    """Classify and validate one decoded JSON value. Raises :class:`LineError`.

    ``plain`` promises the raw line held no backslash: then no text in it can hold a NUL or a
    control character (JSON only writes those escaped), and the checks for them are skipped.
    """
    if obj.__class__ is not dict:
        raise LineError(f"not a JSON object ({_json_type(obj)})")
    person = obj.get("_p")
    if not (plain and person.__class__ is str and person and not person.isspace()):
        person = _identity(obj, "_p")
    t = obj.get("_t")
    if not (t.__class__ is int and MIN_TIMESTAMP <= t <= latest):
        if "_t" not in obj:
            raise LineError("missing _t")
        t = parse_timestamp(t, latest)

    if "_p2" in obj:
        return Line(lineno, LineKind.ALIAS, person, t, alias=_identity(obj, "_p2"), plain=plain)

    name: str | None = None
    kind = LineKind.PROPERTIES
    names = _NAMES
    if "_n" in obj:
        raw_name = obj["_n"]
        if raw_name.__class__ is not str:
            raise LineError("_n is not a string")
        name = names.get(raw_name) or normalize_name(raw_name)
        if not name:
            raise LineError("empty _n")
        kind = LineKind.EVENT

    properties, inexact = line_properties(obj, plain)
    return Line(
        lineno,
        kind,
        person,
        t,
        name=name,
        properties=tuple(properties.items()),
        plain=plain,
        inexact=inexact,
    )


Usual = tuple[str, int, str | None, dict[str, str]]
"""A usual line's (person, t, event name or None, properties), as :func:`parse_usual` gives it."""


def parse_usual(raw: bytes, latest: int) -> Usual | None:  # noqa: PLR0911 - flat, for speed
    """The usual event or property-set line, fast; None for any other line.

    Usual means: no backslash (nothing to repair, and no text that needs escaping anywhere), a
    JSON object with a non-blank string ``_p``, an integer ``_t`` in range, no ``_p2``, a string
    ``_n`` or none, and values that are strings, booleans, nulls or non-zero integers (whose text
    cannot differ from the line's). Nearly every line of a real export is usual. For those
    lines the answer is exactly :func:`parse_line`'s, which handles everything else.
    """
    if b"\\" in raw or len(raw) > MAX_LINE_BYTES:
        return None
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if obj.__class__ is not dict:
        return None
    person = obj.get("_p")
    t = obj.get("_t")
    if not (
        person.__class__ is str
        and person
        and not person.isspace()
        and t.__class__ is int
        and MIN_TIMESTAMP <= t <= latest
        and "_p2" not in obj
    ):
        return None
    names = _NAMES
    name = obj.get("_n")
    if name is not None:
        if name.__class__ is not str:
            return None
        name = names.get(name) or normalize_name(name)
        if not name:
            return None
    elif "_n" in obj:
        return None
    properties, inexact = line_properties(obj, plain=True)
    if inexact:
        return None
    return person, t, name, properties


def line_properties(obj: dict[str, Any], plain: bool) -> tuple[dict[str, str], bool]:
    """A line's properties (normalized name -> value text) and whether any value's text may
    differ from the line's (a float, a nested value or a zero: ``1.10`` reads as ``1.1``).

    The one property rule of both parsers. Every key but the reserved ones is a property; null
    means no property; later keys win when two differ only in case or spaces ("Plan", "plan").
    ``plain`` as in :func:`parse_object`.
    """
    names = _NAMES
    properties: dict[str, str] = {}
    inexact = False
    for key, value in obj.items():
        if key in RESERVED_KEYS:
            continue
        text: str | None
        if value.__class__ is str:
            text = value if plain or "\x00" not in value else value.replace("\x00", "")
        else:
            if value.__class__ in _INEXACT or (value.__class__ is int and value == 0):
                inexact = True
            text = value_text(value)
            if text is None:
                continue
        properties[names.get(key) or normalize_name(key)] = text
    return properties, inexact


def _json_type(obj: Any) -> str:
    if isinstance(obj, list):
        return "array"
    if isinstance(obj, str):
        return "string"
    if isinstance(obj, bool):
        return "boolean"
    if isinstance(obj, int | float):
        return "number"
    return "null"


def raw_text(raw: bytes) -> str:
    """A rejected line as storable text: decoded leniently, NUL removed, cut to 64 KiB."""
    return _strip_nul(raw[: MAX_RAW_CHARS * 4].decode("utf-8", errors="replace"))[:MAX_RAW_CHARS]


# ---------------------------------------------------------------------------------------------
# Whole streams


def parse_line(lineno: int, raw: bytes, latest: int) -> Line | Reject | None:
    """Parse one physical line: a :class:`Line`, a :class:`Reject`, or None for a blank line."""
    if len(raw) > MAX_LINE_BYTES:
        return Reject(lineno, "line longer than 1 MiB", raw_text(raw))
    if not raw.strip():
        return None
    plain = b"\\" not in raw
    try:
        return _parse_line(lineno, raw, latest, plain)
    except LineError as error:
        return Reject(lineno, str(error), raw_text(raw))
    except RecursionError:
        return Reject(lineno, "value nested too deeply", raw_text(raw))


def _parse_line(lineno: int, raw: bytes, latest: int, plain: bool) -> Line:
    line = parse_object(lineno, decode_json_line(raw), latest, plain=plain)
    if line.inexact:
        # A float, nested or zero value: read the line again keeping numbers as written
        # ("49.90", not "49.9"). Rare: Kissmetrics values are almost always strings.
        text = repair_octal_escapes(raw.decode("utf-8", errors="replace"))
        line = parse_object(lineno, exact_json(text), latest, plain=plain)
        line.inexact = False
    return line


def parse_stream(stream: IO[bytes], latest: int) -> Iterator[Line | Reject]:
    """Parse a whole export stream lazily; blank lines are skipped."""
    for lineno, raw in iter_raw_lines(stream):
        parsed = parse_line(lineno, raw, latest)
        if parsed is not None:
            yield parsed


def parse_lines(lines: Iterable[bytes | str], latest: int) -> Iterator[Line | Reject]:
    """Parse lines already split (tests, small inputs); numbering starts at 1."""
    for lineno, line in enumerate(lines, start=1):
        raw = line.encode() if isinstance(line, str) else line
        raw = raw.rstrip(b"\r\n")
        if lineno == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
        parsed = parse_line(lineno, raw, latest)
        if parsed is not None:
            yield parsed
