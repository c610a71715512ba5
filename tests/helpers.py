"""Test helpers: write export files, dump a database canonically, and an independent oracle.

The canonical dump names everything by its text (identities, actions, keys), never by the
ids a load happened to assign, so two databases loaded in different orders compare equal
exactly when they hold the same facts.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from km2pg import db
from km2pg.export import Line, LineKind, parse_lines


def write_export(folder: Path, revision: int, lines: Sequence[str | dict[str, Any]]) -> Path:
    """Write ``folder/revisions/<revision>.json`` from dicts (as JSON) or raw strings."""
    path = folder / "revisions" / f"{revision}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(
        (line if isinstance(line, str) else json.dumps(line, ensure_ascii=False)) + "\n"
        for line in lines
    )
    path.write_text(text, encoding="utf-8")
    return path


def numbered(lines: Iterable[str | bytes]) -> list[tuple[int, bytes]]:
    """Lines as :func:`km2pg.export.iter_raw_lines` yields them: (number from 1, raw bytes
    without the end of line), the way :func:`km2pg.export.parse_lines` reads them."""
    return [
        (n, (line.encode() if isinstance(line, str) else line).rstrip(b"\r\n"))
        for n, line in enumerate(lines, 1)
    ]


def canonical_dump(con: db.Connection) -> dict[str, list[tuple[Any, ...]]]:
    q = {
        "users": """
            select u.name, min(p.name) over (partition by u.personid)
              from km2pg.users u join km2pg.users p on p.personid = u.personid
        """,
        "aliases": """
            select u.name, a.name, x.since from km2pg.aliases x
              join km2pg.users u on u.userid = x.userid join km2pg.users a on a.userid = x.aliasid
        """,
        "events": "select u.name, e.t from km2pg.events e join km2pg.users u using (userid)",
        "event_actions": """
            select u.name, e.t, a.name from km2pg.events e join km2pg.users u using (userid)
              join km2pg.event_actions using (eventid) join km2pg.actions a using (actionid)
        """,
        "event_properties": """
            select u.name, e.t, k.name, p.value, a.name, p.revision, p.lineno
              from km2pg.events e join km2pg.users u using (userid)
              join km2pg.event_properties p using (eventid)
              join km2pg.keys k using (keyid)
              left join km2pg.actions a on a.actionid = p.actionid
        """,
        "actions": "select name from km2pg.actions",
        "keys": "select name from km2pg.keys",
    }
    dump = {
        name: sorted({tuple(row) for row in db.rows(con, sql)}, key=repr) for name, sql in q.items()
    }
    return dump


def check_invariants(con: db.Connection) -> None:
    """What must hold after any sequence of loads."""
    bad_person = db.scalar(
        con,
        """
        select count(*) from km2pg.users u
         where u.personid <> (select min(userid) from km2pg.users v where v.personid = u.personid)
    """,
    )
    assert bad_person == 0, "personid must be the smallest userid of its person"
    bad_eventid = db.scalar(
        con,
        """
        select count(*) from km2pg.events where eventid <> km2pg.make_eventid(userid, t)
    """,
    )
    assert bad_eventid == 0, "eventid must encode (userid, t)"
    orphans = db.scalar(
        con,
        """
        select (select count(*) from km2pg.event_actions x
                 where not exists (select from km2pg.events e where e.eventid = x.eventid))
             + (select count(*) from km2pg.event_properties x
                 where not exists (select from km2pg.events e where e.eventid = x.eventid))
    """,
    )
    assert orphans == 0, "every action and property belongs to an event"
    loaded_twice = db.scalar(
        con,
        """
        select count(*) from (select export_key, content_md5 from km2pg.files
         where status = 'loaded' group by 1, 2 having count(*) > 1) x
    """,
    )
    assert loaded_twice == 0


def oracle_dump(
    files: Iterable[tuple[int, Sequence[str | bytes]]], now: int | None = None
) -> dict[str, list[tuple[Any, ...]]]:
    """The dump a correct loader produces, computed in plain Python from the parsing rules.

    ``files`` are (revision, lines). Independent of the SQL: no ids, no database.
    """
    latest = (now or int(datetime.now(UTC).timestamp())) + 86400
    names: set[str] = set()
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    aliases: dict[tuple[str, str], int] = {}
    events: set[tuple[str, int]] = set()
    actions: set[tuple[str, int, str]] = set()
    props: dict[tuple[str, int, str], tuple[int, int, str, str | None]] = {}
    action_names: set[str] = set()
    key_names: set[str] = set()
    for revision, lines in files:
        for item in parse_lines(lines, latest):
            if not isinstance(item, Line):
                continue
            names.add(item.person)
            if item.kind is LineKind.ALIAS:
                assert item.alias is not None
                names.add(item.alias)
                pair = (item.person, item.alias)
                aliases[pair] = min(aliases.get(pair, item.t), item.t)
                ra, rb = find(item.person), find(item.alias)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
                continue
            events.add((item.person, item.t))
            if item.name is not None:
                actions.add((item.person, item.t, item.name))
                action_names.add(item.name)
            for key, value in item.properties:
                key_names.add(key)
                candidate = (revision, item.lineno, value, item.name)
                slot = (item.person, item.t, key)
                if slot not in props or _newer(candidate, props[slot]):
                    props[slot] = candidate

    def ts(t: int) -> datetime:
        return datetime.fromtimestamp(t, UTC)

    clusters: dict[str, list[str]] = defaultdict(list)
    for name in names:
        clusters[find(name)].append(name)
    person = {name: min(members) for members in clusters.values() for name in members}
    dump = {
        "users": {(n, person[n]) for n in names},
        "aliases": {(a, b, ts(t)) for (a, b), t in aliases.items()},
        "events": {(p, ts(t)) for p, t in events},
        "event_actions": {(p, ts(t), n) for p, t, n in actions},
        "event_properties": {
            (p, ts(t), k, v[2], v[3], v[0], v[1]) for (p, t, k), v in props.items()
        },
        "actions": {(n,) for n in action_names},
        "keys": {(k,) for k in key_names},
    }
    return {name: sorted(rows, key=repr) for name, rows in dump.items()}


def _newer(a: tuple[int, int, str, str | None], b: tuple[int, int, str, str | None]) -> bool:
    return (a[0], a[1], a[2]) > (b[0], b[1], b[2])
