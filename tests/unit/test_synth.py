"""The synthetic export generator: exact sizes, determinism, realism, and the mess it can add."""

from __future__ import annotations

import csv
import gzip
import itertools
import json
import re
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from km2pg.cli.synth import ExportSummary, generate_export

END = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
END_TS = int(END.timestamp())
DAYS = 28.0
START_TS = END_TS - int(DAYS * 86_400)  # events fall in (START_TS, END_TS]
WEEK = 7 * 86_400
BOM = b"\xef\xbb\xbf"
OCTAL_RUN = re.compile(rb"(?:\\[0-3][0-7]{2})+")
RESERVED = {"_p", "_p2", "_n", "_t"}


# ---------------------------------------------------------------------------------------------
# Reading back what was written


def physical_lines(path: Path) -> list[bytes]:
    """The file's lines as a reader sees them: split on \\n, a final newline ends the last one."""
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    parts = data.split(b"\n")
    if data.endswith(b"\n"):
        parts.pop()
    return parts


def all_lines(summary: ExportSummary) -> list[bytes]:
    return [line for path in summary.files for line in physical_lines(path)]


def _octal_bytes(match: re.Match[bytes]) -> bytes:
    return bytes(int(code, 8) for code in match.group().split(b"\\")[1:])


def parse(raw: bytes) -> Any:
    """Parse a line the forgiving way (BOM, CR, octal escapes); raises ValueError if not JSON."""
    text = OCTAL_RUN.sub(_octal_bytes, raw.removeprefix(BOM).rstrip(b"\r"))
    return json.loads(text)


def seconds(value: Any) -> int:
    return int(float(value))


def kissmetrics_line(raw: bytes) -> dict[str, Any] | None:
    """The line's object if a loader could use it (an object with a person and a time)."""
    try:
        obj = parse(raw)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not obj.get("_p") or "_t" not in obj:
        return None
    if seconds(obj["_t"]) > END_TS:  # milliseconds: far in the future
        return None
    return obj


# ---------------------------------------------------------------------------------------------
# Shared exports (each takes well under a second to write)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> ExportSummary:
    folder = tmp_path_factory.mktemp("clean")
    return generate_export(folder, lines=20_000, files=4, days=DAYS, end=END, seed=7)


@pytest.fixture(scope="module")
def clean_objects(clean: ExportSummary) -> list[dict[str, Any]]:
    objects = []
    for raw in all_lines(clean):
        obj = json.loads(raw)
        assert isinstance(obj, dict)
        objects.append(obj)
    return objects


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> ExportSummary:
    folder = tmp_path_factory.mktemp("messy")
    return generate_export(folder, lines=30_000, files=3, days=DAYS, end=END, seed=7, messy=True)


# ---------------------------------------------------------------------------------------------
# Sizes, names and the CSV files


@pytest.mark.parametrize("messy_mode", [False, True])
def test_writes_exact_line_count_across_files(tmp_path: Path, messy_mode: bool) -> None:
    summary = generate_export(tmp_path, lines=10_001, files=7, end=END, messy=messy_mode)

    assert summary.lines == 10_001
    assert summary.folder == tmp_path
    assert summary.first_revision == 22770
    assert summary.files == [tmp_path / "revisions" / f"{n}.json" for n in range(22770, 22777)]
    counts = [len(physical_lines(path)) for path in summary.files]
    assert sum(counts) == 10_001
    assert max(counts) - min(counts) <= 1


def test_revision_numbers_start_at_first_revision(tmp_path: Path) -> None:
    summary = generate_export(tmp_path, lines=30, files=3, end=END, first_revision=5)

    assert [path.name for path in summary.files] == ["5.json", "6.json", "7.json"]
    assert sorted(p.name for p in (tmp_path / "revisions").iterdir()) == [
        "5.json",
        "6.json",
        "7.json",
    ]


def test_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    def contents(folder: Path, seed: int) -> dict[str, bytes]:
        generate_export(folder, lines=5_000, files=2, end=END, seed=seed, messy=True)
        return {
            p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        }

    first = contents(tmp_path / "a", seed=3)
    assert contents(tmp_path / "b", seed=3) == first
    other = contents(tmp_path / "c", seed=4)
    assert other.keys() == first.keys()
    assert other["revisions/22770.json"] != first["revisions/22770.json"]


def test_index_csv_matches_file_time_ranges(clean: ExportSummary) -> None:
    with (clean.folder / "index.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))

    assert rows[0] == ["filename", "min_timestamp", "max_timestamp", "min_utc_date", "max_utc_date"]
    assert [row[0] for row in rows[1:]] == [f"revisions/{n}.json" for n in range(22770, 22774)]
    for row, path in zip(rows[1:], clean.files, strict=True):
        times = [json.loads(raw)["_t"] for raw in physical_lines(path)]
        assert (int(row[1]), int(row[2])) == (min(times), max(times))
        assert row[3] == time.strftime("%Y-%m-%d %H:%M GMT", time.gmtime(min(times)))
        assert row[4] == time.strftime("%Y-%m-%d %H:%M GMT", time.gmtime(max(times)))
    assert clean.min_t == min(int(row[1]) for row in rows[1:])
    assert clean.max_t == max(int(row[2]) for row in rows[1:])


def test_status_csv_describes_the_last_revision(clean: ExportSummary) -> None:
    with (clean.folder / "status.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    max_utc = time.strftime("%Y-%m-%d %H:%M GMT", time.gmtime(clean.max_t))

    assert rows == [
        [
            "Total Revisions",
            "Exported Revisions",
            "Max Exported Revision Timestamp",
            "Max Exported Revision UTC Timestamp",
        ],
        ["22773", "22773", str(clean.max_t), max_utc],
    ]


def test_gzip_writes_gz_files(tmp_path: Path) -> None:
    plain = generate_export(tmp_path / "plain", lines=3_000, files=2, end=END, seed=1)
    packed = generate_export(tmp_path / "gz", lines=3_000, files=2, end=END, seed=1, gzip=True)

    assert [p.name for p in packed.files] == ["22770.json.gz", "22771.json.gz"]
    for plain_path, gz_path in zip(plain.files, packed.files, strict=True):
        assert gz_path.read_bytes()[:2] == b"\x1f\x8b"
        assert gzip.decompress(gz_path.read_bytes()) == plain_path.read_bytes()
    index = (tmp_path / "gz" / "index.csv").read_text(encoding="utf-8")
    assert "revisions/22770.json.gz," in index
    assert (packed.min_t, packed.max_t) == (plain.min_t, plain.max_t)


# ---------------------------------------------------------------------------------------------
# Clean exports look like real ones


def test_clean_export_lines_all_parse_as_kissmetrics_lines(clean: ExportSummary) -> None:
    lines = all_lines(clean)
    assert len(lines) == clean.lines
    for raw in lines:
        assert raw.strip(), "clean exports have no blank lines"
        obj = json.loads(raw)
        assert isinstance(obj, dict)
        assert isinstance(obj["_p"], str)
        assert obj["_p"]
        assert type(obj["_t"]) is int
        assert START_TS < obj["_t"] <= END_TS
        if "_n" in obj:
            assert obj["_n"] == obj["_n"].strip().lower()
        for key, value in obj.items():
            if key not in RESERVED:
                assert key == key.lower()
                assert isinstance(value, str)


def test_events_span_the_requested_days(clean: ExportSummary) -> None:
    assert START_TS < clean.min_t < START_TS + 6 * 3600
    assert END_TS - 6 * 3600 < clean.max_t <= END_TS


def test_default_end_is_now(tmp_path: Path) -> None:
    before = int(time.time())
    summary = generate_export(tmp_path, lines=500, days=2)
    after = int(time.time())

    assert before - 2 * 86_400 < summary.min_t
    assert summary.max_t <= after


def test_has_aliases_property_sets_and_checkouts_in_last_week(
    clean_objects: list[dict[str, Any]],
) -> None:
    aliases = [obj for obj in clean_objects if "_p2" in obj]
    property_sets = [obj for obj in clean_objects if "_p2" not in obj and "_n" not in obj]
    events = Counter(obj["_n"] for obj in clean_objects if "_p2" not in obj and "_n" in obj)
    emails = {p for obj in aliases for p in (obj["_p"], obj["_p2"]) if "@" in p}
    checkouts = [obj for obj in clean_objects if obj.get("_n") == "checkout successful"]
    last_week = [obj for obj in checkouts if obj["_t"] > END_TS - WEEK]

    assert len(aliases) > 100
    assert len(property_sets) > 500
    assert {
        "visited site",
        "viewed product",
        "added to cart",
        "signed up",
        "logged in",
        "checkout started",
        "checkout successful",
    } <= set(events)
    assert len(last_week) >= 20
    # The funnel: people who pay are people who signed up (and were aliased to an email).
    assert {obj["_p"] for obj in checkouts} <= emails
    assert all(re.fullmatch(r"\d+\.\d\d", obj["billing amount"]) for obj in checkouts)
    assert all(obj["plan name"] for obj in checkouts)


def test_has_refunds_and_a_homepage_experiment_with_two_sticky_variations(
    clean_objects: list[dict[str, Any]],
) -> None:
    refunds = [obj for obj in clean_objects if obj.get("_n") == "refunded"]
    assert len(refunds) >= 10
    assert all(re.fullmatch(r"-\d+\.\d\d", obj["billing amount"]) for obj in refunds)
    shown: defaultdict[str, set[str]] = defaultdict(set)
    for obj in clean_objects:
        if "homepage variation" in obj:
            shown[obj["_p"]].add(obj["homepage variation"])
    assert set().union(*shown.values()) == {"Control", "Variation B"}
    both = sum(len(variations) == 2 for variations in shown.values())
    assert 0 < both < len(shown) / 10, "a few identities see both variations, most see one"


def test_anonymous_ids_look_like_kissmetrics_ids(clean_objects: list[dict[str, Any]]) -> None:
    anonymous = {obj["_p"] for obj in clean_objects if "@" not in obj["_p"]}

    assert len(anonymous) > 1000
    assert all(re.fullmatch(r"[A-Za-z0-9+/]{27}=", p) for p in anonymous)


def test_alias_chains_exist(clean_objects: list[dict[str, Any]]) -> None:
    anonymous_by_email: defaultdict[str, set[str]] = defaultdict(set)
    reversed_order = 0
    for obj in clean_objects:
        if "_p2" in obj:
            first, second = obj["_p"], obj["_p2"]
            if "@" in first:
                first, second = second, first
                reversed_order += 1
            anonymous_by_email[second].add(first)

    assert sum(len(ids) >= 2 for ids in anonymous_by_email.values()) >= 10
    assert reversed_order > 0


def test_property_sets_include_non_ascii_values(clean_objects: list[dict[str, Any]]) -> None:
    values = {
        value
        for obj in clean_objects
        if "_n" not in obj and "_p2" not in obj
        for key, value in obj.items()
        if key not in RESERVED
    }

    assert {"São Paulo", "Zürich", "東京"} & values
    assert any(not value.isascii() for value in values)


def test_lines_are_mostly_in_receive_order_with_some_late(
    clean_objects: list[dict[str, Any]],
) -> None:
    newest = 0
    late = 0
    for obj in clean_objects:
        if obj["_t"] < newest - 3600:
            late += 1
        newest = max(newest, obj["_t"])

    assert 0.01 * len(clean_objects) < late < 0.04 * len(clean_objects)


def test_has_duplicates_and_same_second_events(clean: ExportSummary) -> None:
    lines = all_lines(clean)
    duplicates = sum(a == b for a, b in itertools.pairwise(lines))
    by_person_time: defaultdict[tuple[str, int], set[str]] = defaultdict(set)
    for raw in lines:
        obj = json.loads(raw)
        if "_n" in obj:
            by_person_time[obj["_p"], obj["_t"]].add(obj["_n"])
    same_second = sum(len(names) >= 2 for names in by_person_time.values())

    assert 0.002 * len(lines) < duplicates < 0.01 * len(lines)
    assert same_second > 50


# ---------------------------------------------------------------------------------------------
# Messy exports


def test_messy_export_contains_each_kind_of_mess(messy: ExportSummary) -> None:
    first_file = messy.files[0].read_bytes()
    last_file = messy.files[-1].read_bytes()
    assert first_file.startswith(BOM)
    assert not first_file[3:].startswith(BOM)
    assert not last_file.endswith(b"\n")

    seen: Counter[str] = Counter()
    for raw in all_lines(messy):
        if not raw.removeprefix(BOM).strip():
            seen["blank"] += 1
            continue
        if raw.endswith(b"\r"):
            seen["crlf"] += 1
        if re.search(rb"\\[0-3][0-7]{2}", raw):
            seen["octal"] += 1
        try:
            obj = parse(raw)
        except ValueError:
            seen["truncated" if raw.startswith(b"{") else "other"] += 1
            continue
        if not isinstance(obj, dict):
            seen["not_object"] += 1
            continue
        seen.update(kinds_of_object_mess(obj))

    expected = {
        "blank",
        "crlf",
        "octal",
        "millis",
        "string_t",
        "float_t",
        "name_case",
        "key_case",
        "typed_value",
        "nested",
        "nul",
        "truncated",
        "not_object",
        "missing_p",
        "empty_p",
        "missing_t",
    }
    assert expected <= set(seen), expected - set(seen)
    for kind in expected:
        assert seen[kind] <= 0.01 * messy.lines, kind


def kinds_of_object_mess(obj: dict[str, Any]) -> list[str]:
    kinds = []
    if "_p" not in obj:
        kinds.append("missing_p")
    elif obj["_p"] == "":
        kinds.append("empty_p")
    t = obj.get("_t")
    if "_t" not in obj:
        kinds.append("missing_t")
    elif isinstance(t, str):
        kinds.append("string_t")
    elif isinstance(t, float):
        kinds.append("float_t")
    elif isinstance(t, int) and t > 10**11:
        kinds.append("millis")
    name = obj.get("_n")
    if isinstance(name, str) and name != name.strip().lower():
        kinds.append("name_case")
    props = {key: value for key, value in obj.items() if key not in RESERVED}
    if any(key != key.lower() for key in props):
        kinds.append("key_case")
    if any(value is None or isinstance(value, bool | int | float) for value in props.values()):
        kinds.append("typed_value")
    if any(isinstance(value, dict) for value in props.values()):
        kinds.append("nested")
    if any(isinstance(value, str) and "\x00" in value for value in props.values()):
        kinds.append("nul")
    return kinds


def test_messy_export_rejects_stay_rare(messy: ExportSummary) -> None:
    lines = all_lines(messy)
    usable = [obj for raw in lines if (obj := kissmetrics_line(raw)) is not None]
    rejected = len(lines) - len(usable)

    assert len(lines) == messy.lines
    assert 0.003 * len(lines) < rejected < 0.03 * len(lines)
    assert all(START_TS < seconds(obj["_t"]) <= END_TS for obj in usable)
    assert messy.min_t == min(seconds(obj["_t"]) for obj in usable)
    assert messy.max_t == max(seconds(obj["_t"]) for obj in usable)


def test_octal_escapes_decode_to_utf8_text(messy: ExportSummary) -> None:
    escaped = [raw for raw in all_lines(messy) if re.search(rb"\\[0-3][0-7]{2}", raw)]

    assert escaped
    for raw in escaped:
        with pytest.raises(json.JSONDecodeError, match="escape"):
            json.loads(raw)  # a strict parser rejects the escapes
        obj = parse(raw)
        assert any(isinstance(v, str) and not v.isascii() for v in obj.values())


# ---------------------------------------------------------------------------------------------
# Arguments


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"lines": 0}, "lines"),
        ({"lines": 5, "files": 0}, "files"),
        ({"lines": 5, "files": 6}, "lines"),
        ({"lines": 5, "days": 0}, "days"),
        ({"lines": 5, "end": datetime(2024, 5, 1)}, "timezone"),
    ],
)
def test_rejects_bad_arguments(tmp_path: Path, arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_export(tmp_path, **arguments)


def test_end_in_another_timezone_means_the_same_instant(tmp_path: Path) -> None:
    local = END.astimezone(timezone(timedelta(hours=-3)))
    a = generate_export(tmp_path / "utc", lines=200, end=END)
    b = generate_export(tmp_path / "local", lines=200, end=local)

    assert a.files[0].read_bytes() == b.files[0].read_bytes()
