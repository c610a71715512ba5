"""Forget persons (privacy requests): delete everything about the persons some identities belong
to, and keep them from coming back.

For each identity named, its whole person goes: every identity joined to it by aliases, their
events with their actions and properties, their aliases, their ``person_properties`` rows, and
the rejected lines that quote one of their names. All in one transaction, which holds loads off
while it runs (loads in flight finish first), so no load can slip the person back in between.

What stays is a suppression: the SHA-256 of each identity name (never the name), in
``km2pg.suppressed_identities``. Every later load, a forced reload of old files included, drops
the lines of those identities and counts them as ``suppressed`` in the ledger. A name given that
km2pg has not seen yet is suppressed all the same, so its lines never load.

Results are counts only: callers print and log them, never the names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from km2pg import db
from km2pg.db import Connection
from km2pg.errors import ConfigError

_PERSONS: Final = """
CREATE TEMP TABLE f_users ON COMMIT DROP AS
SELECT u.userid, u.name, u.personid
  FROM km2pg.users u
 WHERE u.personid IN (SELECT personid FROM km2pg.users WHERE name = ANY(CAST(:names AS text[])))
"""
_NAMES: Final = """
CREATE TEMP TABLE f_names ON COMMIT DROP AS
SELECT name FROM f_users UNION SELECT unnest(CAST(:names AS text[]))
"""

# The same hash the loader compares with (store._SUPPRESSED_NAMES): SHA-256 of the UTF-8 name.
_SUPPRESS: Final = """
INSERT INTO km2pg.suppressed_identities (name_sha256)
SELECT DISTINCT sha256(convert_to(name, 'UTF8')) FROM f_names
    ON CONFLICT DO NOTHING
"""

# events has no index on userid (loads are faster without): one scan finds the person's events,
# whose eventids then reach actions and properties through their primary keys.
_EVENTS: Final = """
CREATE TEMP TABLE f_events ON COMMIT DROP AS
SELECT e.eventid, e.t FROM km2pg.events e WHERE e.userid IN (SELECT userid FROM f_users);
ANALYZE f_events;
"""

_DELETES: Final = {
    "event_properties": """
        DELETE FROM km2pg.event_properties p USING f_events f WHERE p.eventid = f.eventid
    """,
    "event_actions": """
        DELETE FROM km2pg.event_actions a USING f_events f WHERE a.eventid = f.eventid
    """,
    "events": """
        DELETE FROM km2pg.events e USING f_events f WHERE e.eventid = f.eventid AND e.t = f.t
    """,
    # users and aliases by the userids as one array parameter, not a subquery of f_users: Citus
    # cannot modify a reference table with a subquery that reads a temporary table ("relation
    # f_users is not distributed").
    "aliases": """
        DELETE FROM km2pg.aliases
         WHERE userid = ANY(CAST(:userids AS bigint[])) OR aliasid = ANY(CAST(:userids AS bigint[]))
    """,
    # A rejected line is kept as written: it goes when it quotes one of the names as a JSON
    # string.
    "rejects": """
        DELETE FROM km2pg.rejects r
         WHERE EXISTS (SELECT FROM f_names n WHERE strpos(r.raw, CAST(to_json(n.name) AS text)) > 0)
    """,
    "identities": "DELETE FROM km2pg.users WHERE userid = ANY(CAST(:userids AS bigint[]))",
    "person_properties": """
        DELETE FROM km2pg.person_property_state WHERE personid IN (SELECT personid FROM f_users)
    """,
}


@dataclass(frozen=True)
class ForgetResult:
    """What was (or, in a dry run, would be) removed: counts only, never names."""

    dry_run: bool
    given: int
    """Distinct identities named."""
    unknown: int
    """Of those, the ones km2pg has not seen (suppressed all the same)."""
    persons: int
    identities: int
    """Identities removed: the persons' every identity, not only those named."""
    events: int
    event_actions: int
    event_properties: int
    aliases: int
    person_properties: int
    rejects: int
    suppressed: int
    """Identity hashes added to the suppression list (0 for names already forgotten)."""

    def as_json(self) -> dict[str, int | bool]:
        return dict(self.__dict__)


def identity_hash(name: str) -> bytes:
    """What the suppression list keeps of an identity: the SHA-256 of its UTF-8 name."""
    return hashlib.sha256(name.encode("utf-8")).digest()


def forget(con: Connection, identities: Iterable[str], *, dry_run: bool = False) -> ForgetResult:
    """Delete the persons these identities belong to and suppress every identity of theirs.

    A dry run does all of it and rolls back, so it reports exactly what forgetting would do.
    """
    names = sorted(set(identities))
    if not names or any(not name for name in names):
        raise ConfigError("name at least one identity to forget, and no empty one")
    con.run("BEGIN")
    try:
        # Loads hold this lock shared: wait for those in flight, keep new ones out until commit.
        con.run(
            "SELECT pg_advisory_xact_lock(:ns, :key)", ns=db.LOCK_NAMESPACE, key=db.LOCK_PARTITIONS
        )
        con.run(_PERSONS, names=names)
        con.run(_NAMES, names=names)
        con.run("ANALYZE f_users, f_names")
        known, persons = db.rows(
            con,
            "SELECT count(*) FILTER (WHERE name = ANY(CAST(:names AS text[]))),"
            " count(DISTINCT personid) FROM f_users",
            names=names,
        )[0]
        con.run(_SUPPRESS)
        suppressed = int(con.row_count or 0)
        con.run(_EVENTS)
        userids = db.scalar(con, "SELECT coalesce(array_agg(userid), '{}') FROM f_users")
        removed: dict[str, int] = {}
        for what, sql in _DELETES.items():
            con.run(sql, **({"userids": userids} if ":userids" in sql else {}))
            removed[what] = int(con.row_count or 0)
        con.run("DROP TABLE f_users, f_names, f_events")
    except BaseException:
        db.rollback_quietly(con)
        raise
    con.run("ROLLBACK" if dry_run else "COMMIT")
    return ForgetResult(
        dry_run=dry_run,
        given=len(names),
        unknown=len(names) - int(known),
        persons=int(persons),
        suppressed=suppressed,
        **removed,
    )


def describe(result: ForgetResult) -> str:
    """One line of counts for people (never a name)."""
    verb = "dry run: would forget" if result.dry_run else "forgot"
    unknown = f"; {result.unknown} of {result.given} named not seen" if result.unknown else ""
    return (
        f"{verb} {result.persons} person{'s' * (result.persons != 1)} "
        f"({result.identities} identities): {result.events:,} events, "
        f"{result.event_actions:,} event actions, {result.event_properties:,} event properties, "
        f"{result.aliases:,} aliases, {result.person_properties:,} person properties, "
        f"{result.rejects:,} rejected lines; {result.suppressed} identities suppressed from "
        f"later loads{unknown}"
    )
