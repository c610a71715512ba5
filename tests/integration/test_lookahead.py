"""A serial loader parses the next file in a thread while the server applies this one
(km2pg.lookahead): the same data, the same ledger, and a bad or unused file parsed ahead harms
no other."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from km2pg import db, load, lookahead, store
from km2pg.cli.runner import load_files
from km2pg.cli.synth import generate_export
from km2pg.dsn import ConnectionSettings
from km2pg.sources import ExportFile, content_md5, discover_local, local_file
from tests.helpers import canonical_dump, check_invariants, write_export
from tests.integration.test_load import T0, count
from tests.oracle import oracle_dump_of_paths, oracle_rejects


class TakenAhead:
    """Counts the files whose load took them from the lookahead (parsed ahead)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.labels: list[str] = []
        take = lookahead.Lookahead.take

        def counted(this: lookahead.Lookahead, file: ExportFile) -> lookahead.Ahead | None:
            ahead = take(this, file)
            if ahead is not None:
                self.labels.append(file.label)
            return ahead

        monkeypatch.setattr(lookahead.Lookahead, "take", counted)


def load_chain(con: db.Connection, files: list[ExportFile]) -> list[load.LoadResult]:
    """Load files one after another, each load parsing the next one ahead."""
    with load.Lookahead() as ahead:
        return [
            load.load_file(con, file, lookahead=ahead, next_file=following)
            for file, following in zip(files, [*files[1:], None], strict=True)
        ]


@pytest.mark.parametrize("spool_bytes", [lookahead.SPOOL_BYTES, 40_000])
def test_files_parsed_ahead_load_exactly_what_the_oracle_says(
    con, tmp_path, monkeypatch, spool_bytes
):
    # 40,000 bytes of spool: each file is parsed partly ahead and the rest at its turn.
    monkeypatch.setattr(lookahead, "SPOOL_BYTES", spool_bytes)
    taken = TakenAhead(monkeypatch)
    export = generate_export(tmp_path, lines=20_000, files=4, seed=11, messy=True, days=40)
    files = discover_local(tmp_path)

    results = load_chain(con, files)

    assert [r.status for r in results] == ["loaded"] * 4
    assert taken.labels == [f.label for f in files[1:]]
    assert canonical_dump(con) == oracle_dump_of_paths(export.files)
    assert sum(r.lines for r in results) == export.lines
    assert [r.rejects for r in results] == [
        len(oracle_rejects(path.read_bytes())) for path in export.files
    ]
    md5s = {str(r[0]) for r in db.rows(con, "select content_md5 from km2pg.files")}
    assert md5s == {content_md5(f) for f in files}
    check_invariants(con)


def test_a_file_unreadable_when_parsed_ahead_fails_alone_at_its_turn(
    con, database: ConnectionSettings, tmp_path
):
    first = write_export(tmp_path, 1, [{"_p": "a", "_t": T0, "_n": "x"}])
    third = write_export(tmp_path, 3, [{"_p": "c", "_t": T0, "_n": "z"}])
    broken = tmp_path / "revisions" / "2.json.gz"
    broken.write_bytes(gzip.compress(b'{"_p": "b", "_t": %d, "_n": "y"}\n' % T0)[:-12] + b"bad!")
    files = [local_file(first), local_file(broken), local_file(third)]

    results = list(load_files(database, files))

    assert [r.status for r in results] == ["loaded", "failed", "loaded"]
    assert "cannot read" in (results[1].error or "")
    names = {str(r[0]) for r in db.rows(con, "select name from km2pg.users")}
    assert names == {"a", "c"}


def test_a_file_parsed_ahead_but_loaded_later_is_parsed_again(con, tmp_path, monkeypatch):
    taken = TakenAhead(monkeypatch)
    generate_export(tmp_path, lines=3_000, files=3, seed=12)
    one, two, three = discover_local(tmp_path)
    with load.Lookahead() as ahead:
        # The loader said two comes next, then loaded three: two's parse is dropped.
        assert load.load_file(con, one, lookahead=ahead, next_file=two).status == "loaded"
        assert load.load_file(con, three, lookahead=ahead).status == "loaded"
        assert load.load_file(con, two, lookahead=ahead).status == "loaded"
    assert taken.labels == []
    assert canonical_dump(con) == oracle_dump_of_paths([Path(f.path) for f in (one, two, three)])


def test_a_crash_while_the_next_file_is_parsed_ahead_leaves_no_half_load(
    con, tmp_path, monkeypatch
):
    generate_export(tmp_path, lines=3_000, files=2, seed=13)
    one, two = discover_local(tmp_path)

    def explode(*args: object, **kwargs: object) -> int:
        raise RuntimeError("crash after the facts went in")

    with load.Lookahead() as ahead:
        monkeypatch.setattr(store, "record", explode)
        with pytest.raises(RuntimeError):
            load.load_file(con, one, lookahead=ahead, next_file=two)
        monkeypatch.undo()
        assert count(con, "select count(*) from km2pg.events") == 0
        assert count(con, "select count(*) from km2pg.files") == 0
        # The file parsed ahead loads at its turn, then the one that crashed.
        assert load.load_file(con, two, lookahead=ahead, next_file=one).status == "loaded"
        assert load.load_file(con, one, lookahead=ahead).status == "loaded"
    assert canonical_dump(con) == oracle_dump_of_paths([Path(two.path), Path(one.path)])


def test_a_next_file_loaded_before_is_not_parsed_ahead_and_is_skipped(con, tmp_path, monkeypatch):
    generate_export(tmp_path, lines=3_000, files=2, seed=14)
    one, two = discover_local(tmp_path)
    assert load.load_file(con, two).status == "loaded"
    started: list[ExportFile] = []
    start = lookahead.Lookahead.start
    monkeypatch.setattr(
        lookahead.Lookahead,
        "start",
        lambda this, file, latest: (started.append(file), start(this, file, latest))[1],
    )

    results = load_chain(con, [one, two])

    assert [r.status for r in results] == ["loaded", "skipped"]
    assert started == []
