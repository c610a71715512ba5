"""The schema upgrade harness: a database at every earlier schema version, with data, must
migrate to the current version with nothing lost, and stay loadable.

For each starting version ``v`` (0, the empty database, up to the current one),
:func:`check_upgrade`:

1. creates an empty database and migrates it to exactly version ``v``;
2. applies ``seeds/v<NNNN>.sql``: what a database at version ``v`` holds, written in that
   version's own terms (see ``make_seed.py``) and checked to be representative;
3. reads the database's *facts* (:data:`FACTS`): names, times and values, never ids, so they
   mean the same at every version;
4. migrates to the current version and checks that the migrations applied were exactly
   ``v+1..current``, that every fact is still there and none was invented, that the migration
   history was kept, that :func:`tests.helpers.check_invariants` holds and that migrating again
   changes nothing;
5. loads a new file on top (new and existing identities, actions, keys and months) and
   re-loads a file the seed's ledger records as loaded, which must be skipped.

The schema versions come from :func:`km2pg.db.migrations`, so a new migration is tested from
every earlier version without touching this file. See README.md here for adding one.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from km2pg import db, load
from km2pg.dsn import ConnectionSettings
from km2pg.errors import Km2pgError
from km2pg.sources import local_file
from tests import citus_cluster
from tests.conftest import create_database, drop_database
from tests.helpers import canonical_dump, check_invariants, write_export

HERE: Final = Path(__file__).resolve().parent
SEEDS: Final = HERE / "seeds"
EXPORT: Final = HERE / "export"
PROBE: Final = EXPORT / "revisions" / "90001.json"
"""A file every seed records as loaded: loading it again after an upgrade must be skipped."""
PROBE_KEY: Final = "revisions/90001.json"
PROBE_MD5: Final = hashlib.md5(PROBE.read_bytes(), usedforsecurity=False).hexdigest()
FAILING: Final = EXPORT / "revisions" / "90002.json"
"""A file with too many bad lines: every seed's ledger has it as ``failed``, with its rejects."""

_SEED_NAME: Final = re.compile(r"^v(\d{4})\.sql$")
MAKE_SEED: Final = "python -m tests.migrations.make_seed"


class UpgradeCheckFailed(AssertionError):
    """The harness found a migration path that loses, invents or breaks something."""


class MissingSeed(UpgradeCheckFailed):
    """A schema version has no seed, so its upgrade path cannot be tested."""


# ---------------------------------------------------------------------------------------------
# Versions and seeds


def current_version() -> int:
    return db.migrations()[-1].version


def start_versions() -> list[int]:
    """Every version a database can be at: 0 (empty) and each migration's, current included."""
    return [0, *(m.version for m in db.migrations())]


def version_label(version: int) -> str:
    if version == 0:
        return "v0-empty"
    names = {m.version: m.name for m in db.migrations()}
    return f"v{version}-{names.get(version, 'unknown')}"


def seed_path(version: int, seeds: Path = SEEDS) -> Path:
    return seeds / f"v{version:04d}.sql"


def seed_versions(seeds: Path = SEEDS) -> list[int]:
    """The versions that have a seed file."""
    found = (_SEED_NAME.match(p.name) for p in seeds.iterdir())
    return sorted(int(m.group(1)) for m in found if m)


def read_seed(version: int, seeds: Path = SEEDS) -> str:
    """The seed SQL for a database at ``version`` ('' for version 0: an empty database)."""
    if version == 0:
        return ""
    path = seed_path(version, seeds)
    if not path.exists():
        raise MissingSeed(
            f"schema version {version} has no seed: there is no {path}. A migration is tested "
            f"by upgrading a database that holds data at every earlier version; generate the "
            f"seed for the new version with `{MAKE_SEED}` (see tests/migrations/README.md)"
        )
    return path.read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Facts: what a database knows, in terms that do not depend on the schema version


@dataclass(frozen=True)
class Table:
    """One kind of fact: its column names and its rows (a sorted multiset)."""

    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]

    def column(self, name: str) -> list[Any]:
        index = self.columns.index(name)
        return [row[index] for row in self.rows]


Facts = dict[str, Table]

_FACTS_V1: Final[Mapping[str, str]] = {
    "users": """
            select u.name, (select min(p.name) from km2pg.users p where p.personid = u.personid)
                   as person
              from km2pg.users u
        """,
    "aliases": """
            select u.name as user_name, a.name as alias_name, x.since from km2pg.aliases x
              join km2pg.users u on u.userid = x.userid join km2pg.users a on a.userid = x.aliasid
        """,
    "actions": "select name from km2pg.actions",
    "keys": "select name from km2pg.keys",
    "events": """
            select u.name as user_name, e.t from km2pg.events e join km2pg.users u using (userid)
        """,
    "event_actions": """
            select u.name as user_name, e.t, a.name as action from km2pg.events e
              join km2pg.users u using (userid)
              join km2pg.event_actions using (eventid) join km2pg.actions a using (actionid)
        """,
    "event_properties": """
            select u.name as user_name, e.t, k.name as key, p.value, a.name as action,
                   p.revision, p.lineno
              from km2pg.events e join km2pg.users u using (userid)
              join km2pg.event_properties p using (eventid)
              join km2pg.keys k using (keyid)
              left join km2pg.actions a on a.actionid = p.actionid
        """,
    "files": """
            select source, path, export_key, revision, etag, content_md5, size, status, lines,
                   events, actions, properties, aliases, rejects, min_t, max_t, started_at,
                   finished_at, error
              from km2pg.files
        """,
    "rejects": """
            select f.export_key, f.status, f.started_at, r.lineno, r.reason, r.raw
              from km2pg.rejects r join km2pg.files f using (fileid)
        """,
}
"""Version 1: everything a loaded database knows, named by text and time, not by id."""
FACTS: Final[Mapping[int, Mapping[str, str]]] = {
    1: _FACTS_V1,
    # Version 2 adds person_properties: each person's latest and first setting of each key.
    2: {
        **_FACTS_V1,
        "person_properties": """
            select (select min(u.name) from km2pg.users u where u.personid = p.personid)
                   as person, p.key, p.value, p.t, p.first_value, p.first_t
              from km2pg.person_properties p
        """,
    },
}
"""The queries that read the facts, by the version they were written for: a version uses the
newest entry at or below it. A migration that changes how a fact is stored adds an entry that
reads the same columns from the new tables; one that adds a new kind of fact adds that kind."""


def facts_queries(version: int) -> Mapping[str, str]:
    written = [v for v in FACTS if v <= version]
    return FACTS[max(written)] if written else {}


def facts(con: db.Connection, version: int) -> Facts:
    """The facts of a database at ``version`` (none at version 0)."""
    found: Facts = {}
    for kind, sql in facts_queries(version).items():
        rows = db.rows(con, sql)
        columns = tuple(str(c["name"]) for c in con.columns or [])
        found[kind] = Table(columns, tuple(sorted((tuple(r) for r in rows), key=repr)))
    return found


def statuses_of(files: Table) -> list[str]:
    return [str(s) for s in files.column("status")]


def assert_representative(found: Facts, version: int) -> None:
    """A seed must exercise everything a migration could lose: fail loudly when it does not."""
    problems = [f"no {kind}" for kind, table in found.items() if not table.rows]
    if not problems:
        statuses = set(statuses_of(found["files"]))
        if statuses != {"loaded", "skipped", "failed"}:
            problems.append(f"ledger statuses are {sorted(statuses)}, not loaded/skipped/failed")
        files = found["files"]
        keys, md5s = files.column("export_key"), files.column("content_md5")
        if (PROBE_KEY, PROBE_MD5, "loaded") not in zip(keys, md5s, statuses_of(files), strict=True):
            problems.append(f"the ledger does not record {PROBE_KEY} (the reload probe) as loaded")
        months = {(t.year, t.month) for t in found["events"].column("t")}
        if len(months) < 3:
            problems.append(f"events span {len(months)} month partitions, fewer than 3")
        users = found["users"]
        if len(set(users.column("person"))) == len(users.rows):
            problems.append("no person has more than one identity")
    if problems:
        raise UpgradeCheckFailed(
            f"the seed for version {version} is not representative: {'; '.join(problems)}"
        )


def assert_nothing_lost(before: Facts, after: Facts, start: int, target: int) -> None:
    """Every fact before the upgrade is there after it, and nothing appeared from nowhere."""
    problems = []
    for kind, old in before.items():
        new = after.get(kind)
        if new is None:
            problems.append(f"{kind}: no longer readable at version {target}")
            continue
        if new.columns != old.columns:
            problems.append(f"{kind}: columns {old.columns} became {new.columns}")
            continue
        lost = Counter(old.rows) - Counter(new.rows)
        invented = Counter(new.rows) - Counter(old.rows)
        for verb, rows in (("lost", lost), ("invented", invented)):
            if rows:
                sample = sorted(rows.elements(), key=repr)[:3]
                problems.append(f"{kind}: {rows.total()} rows {verb}, e.g. {sample}")
    if start == 0:
        problems += [f"{kind}: rows from nowhere" for kind, t in after.items() if t.rows]
    if problems:
        raise UpgradeCheckFailed(
            f"upgrading from version {start} to {target} changed the data:\n  "
            + "\n  ".join(problems)
        )


# ---------------------------------------------------------------------------------------------
# The check


@contextmanager
def scratch_database(admin: ConnectionSettings) -> Iterator[ConnectionSettings]:
    """An empty database (no km2pg schema), dropped afterwards; on a Citus cluster one with the
    citus extension and the workers registered, so that migrating distributes it."""
    if citus_cluster.workers():
        name = f"km2pg_test_{uuid.uuid4().hex[:12]}"
        citus_cluster.create_empty(admin, name)
        settings = admin.with_database(name)
    else:
        settings = create_database(admin, "template0")
    try:
        yield settings
    finally:
        drop_database(admin, settings)


def seed_database(con: db.Connection, version: int, seeds: Path = SEEDS) -> Facts:
    """Migrate an empty database to ``version``, apply its seed; return its facts."""
    sql = read_seed(version, seeds)
    db.migrate(con, target=version)
    if db.schema_version(con) != version:
        raise UpgradeCheckFailed(f"migrate(target={version}) left version {db.schema_version(con)}")
    if sql:
        with db.transaction(con):
            con.run(sql)
    return facts(con, version)


def check_upgrade(
    admin: ConnectionSettings, start: int, workdir: Path, seeds: Path = SEEDS
) -> None:
    """Upgrade a seeded database from ``start`` to the current version; see the module doc."""
    target = current_version()
    read_seed(start, seeds)  # a missing seed fails before any database work
    with scratch_database(admin) as settings, db.connection(settings) as con:
        before = seed_database(con, start, seeds)
        if start:
            assert_representative(before, start)
        history = _history(con)

        applied = [m.version for m in db.migrate(con)]
        expected = list(range(start + 1, target + 1))
        if applied != expected or db.schema_version(con) != target:
            raise UpgradeCheckFailed(
                f"from version {start}: applied {applied}, expected {expected}; "
                f"now at version {db.schema_version(con)}, not {target}"
            )
        after = facts(con, target)
        assert_nothing_lost(before, after, start, target)
        if _history(con)[: len(history)] != history:
            raise UpgradeCheckFailed(f"from version {start}: the migration history changed")
        _invariants(con, f"after upgrading from version {start}")
        if db.migrate(con) or facts(con, target) != after:
            raise UpgradeCheckFailed(f"from version {start}: migrating again changed something")

        load.prepare_connection(con)
        _load_on_top(con, workdir, start)
        _reload_is_skipped(con, start)


def _history(con: db.Connection) -> list[tuple[Any, ...]]:
    if not db.schema_version(con):
        return []
    sql = "select version, name, applied_at from km2pg.schema_migrations order by version"
    return [tuple(r) for r in db.rows(con, sql)]


def _invariants(con: db.Connection, when: str) -> None:
    try:
        check_invariants(con)
    except AssertionError as error:
        raise UpgradeCheckFailed(f"invariant broken {when}: {error}") from error


NEW_USER: Final = "zzzz migration check"
"""Sorts after every seeded identity, so joining it to a person keeps the person's name."""
FIRST_USER: Final = "migration check first user"
"""The existing identity of an empty database's first file."""
NEW_ACTION: Final = "migration check"
NEW_KEY: Final = "migration check key"


def _load_on_top(con: db.Connection, workdir: Path, start: int) -> None:
    """A new file loads after the upgrade: new and existing identities, actions, months."""
    before = canonical_dump(con)
    revision = int(db.scalar(con, "select coalesce(max(revision), 0) + 1 from km2pg.files"))
    seeded = before["events"]
    if seeded:
        old_user, old_t = seeded[0]
        old_action = before["actions"][0][0]
        new_t = max(t for _, t in seeded).replace(day=1) + timedelta(days=45)
    else:
        old_user, old_t, old_action = FIRST_USER, datetime(2025, 5, 10, tzinfo=UTC), NEW_ACTION
        new_t = datetime(2025, 6, 15, tzinfo=UTC)
    old, new = int(old_t.timestamp()), int(new_t.timestamp())
    lines = [
        {"_p": old_user, "_t": old, "_n": old_action, NEW_KEY: "on an existing event"},
        {"_p": NEW_USER, "_t": new, "_n": NEW_ACTION, NEW_KEY: "in a new month"},
        {"_p": NEW_USER, "_p2": old_user, "_t": new + 1},
    ]
    path = write_export(workdir, revision, [json.dumps(line) for line in lines])
    try:
        result = load.load_file(con, local_file(path))
        outcome = f"{result.status} {result.error or ''}"
    except Km2pgError as error:
        result, outcome = None, f"{type(error).__name__}: {error}"
    if result is None or result.status != "loaded":
        raise UpgradeCheckFailed(
            f"from version {start}: a new file did not load after the upgrade: {outcome}"
        )
    after = canonical_dump(con)
    problems = [kind for kind, rows in before.items() if not set(rows) <= set(after[kind])]
    expected: dict[str, list[tuple[Any, ...]]] = {
        "events": [(old_user, old_t), (NEW_USER, new_t)],
        "event_actions": [(old_user, old_t, old_action), (NEW_USER, new_t, NEW_ACTION)],
        "event_properties": [
            (old_user, old_t, NEW_KEY, "on an existing event", old_action, revision, 1),
            (NEW_USER, new_t, NEW_KEY, "in a new month", NEW_ACTION, revision, 2),
        ],
        "aliases": [(NEW_USER, old_user, new_t + timedelta(seconds=1))],
        "actions": [(NEW_ACTION,)],
        "keys": [(NEW_KEY,)],
    }
    problems += [
        f"{kind} lacks {row}"
        for kind, rows in expected.items()
        for row in rows
        if row not in after[kind]
    ]
    if problems:
        raise UpgradeCheckFailed(
            f"from version {start}: loading a new file after the upgrade lost or missed data: "
            f"{problems}"
        )
    _invariants(con, f"loading a new file after upgrading from version {start}")


def _reload_is_skipped(con: db.Connection, start: int) -> None:
    """A file the ledger records as loaded is skipped (the empty database loads it first)."""
    if not start:
        first = load.load_file(con, local_file(PROBE))
        if first.status != "loaded":
            raise UpgradeCheckFailed(f"the reload probe did not load: {first.error}")
    before = canonical_dump(con)
    result = load.load_file(con, local_file(PROBE))
    changed = canonical_dump(con) != before
    if result.status != "skipped" or changed:
        raise UpgradeCheckFailed(
            f"from version {start}: re-loading {PROBE_KEY}, which the ledger records as loaded, "
            f"was {result.status}{' and changed the data' if changed else ''}"
        )
