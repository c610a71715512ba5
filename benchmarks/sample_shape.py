"""Hourly files shaped like a real export: the real Kissmetrics sample's people, every hour.

The synthetic export (cli/synth.py) is made for volume: its visitors barely come back within an
hour, so each file's property settings touch about 0.65 new (person, key) pairs per setting. The
real sample (``../shared/samples/kissmetrics-demo/revisions/1.json``, read in place, never copied
into the project) has 7,525 settings on 310 pairs: people who come back and set the same few keys
again. Files made of it keep that shape at any size: ``copies`` renamed copies of its people per
file (``name #3``), the same people in every file, each file's times shifted by its own number of
minutes so that no event of one file is an event of another (as in Kissmetrics' hourly files; the
sample's times are whole hours, so file k is shifted by k minutes).
The same arguments always write the same bytes.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import combinations
from pathlib import Path
from typing import Any, Final

import orjson

MINUTE: Final = 60


def read_sample(sample: Path) -> list[dict[str, Any]]:
    with sample.open("rb") as source:
        return [orjson.loads(line) for line in source if line.strip()]


def shift_step(lines: list[dict[str, Any]], files: int) -> int:
    """The smallest whole number of minutes between files such that no two lines of one identity
    in the sample are k steps apart (k < files): then shifted copies never share a second."""
    seconds: dict[str, set[int]] = defaultdict(set)
    for line in lines:
        seconds[str(line["_p"])].add(int(line["_t"]))
    gaps = {abs(a - b) for times in seconds.values() for a, b in combinations(times, 2)}
    step = MINUTE
    while any(k * step in gaps for k in range(1, files)):
        step += MINUTE
    return step


def write_sample_shaped_export(
    sample: Path, folder: Path, *, files: int, copies: int, first_revision: int = 1
) -> list[Path]:
    """Write ``files`` files of ``copies`` renamed copies of the sample's lines each into
    ``folder/revisions``; returns their paths in load order."""
    lines = read_sample(sample)
    step = shift_step(lines, files)
    revisions = folder / "revisions"
    revisions.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(files):
        path = revisions / f"{first_revision + k}.json"
        with path.open("wb") as out:
            for line in lines:
                for copy in range(copies):
                    out.write(orjson.dumps(_copy(line, copy, k * step)) + b"\n")
        paths.append(path)
    return paths


def _copy(line: dict[str, Any], copy: int, shift: int) -> dict[str, Any]:
    renamed = dict(line)
    for name in ("_p", "_p2"):
        if name in line:
            renamed[name] = f"{line[name]} #{copy}"
    renamed["_t"] = int(line["_t"]) + shift
    return renamed
