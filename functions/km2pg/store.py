"""All SQL that loads files, keeps the ledger and merges identities: set-based, in a fixed order.

Concurrency without deadlocks: every load transaction takes its locks in one global order
(the partition lock, the events table in ACCESS SHARE mode, the file's lock, then new rows of
users, actions, keys, events, event_actions, event_properties, aliases and the ledger, each
table's rows in key order, and last the alias lock, under which the persons merge and
person_properties' upkeep run (shared by loads that only fold settings in, in key order too); on
Citus the alias lock comes right after the file's lock, see :func:`_lock_writes_on_citus`).
Two loaders can wait for each other but never in a cycle. New
partitions are created in their own short transaction before the load, since DDL on a
partitioned table waits for every load in flight.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Final

from pg8000.exceptions import DatabaseError

from km2pg import db
from km2pg.db import Connection
from km2pg.sources import ExportFile
from km2pg.staging import STAGE_COLUMNS, STAGE_COLUMNS_DDL, StagedNames

LOCK_FILES_NAMESPACE: Final = db.LOCK_NAMESPACE + 1
MAX_FAILED_REJECTS: Final = 10_000
"""Rejects kept for a file that failed the threshold: enough to see what is wrong with it."""

STAGE: Final = "pg_temp.km2pg_stage"
TEMP_BUFFERS: Final = "64MB"
"""This session's buffers for temporary tables (see SESSION_SETUP); taken only as it uses them."""
UNIQUE_VIOLATION: Final = "23505"
RELAYED_ERROR: Final = "XX000"
"""What Citus reports for an error a worker raised in the COPY that writes an INSERT ... SELECT's
rows into shards (its ReportCopyError keeps the worker's message but not its SQLSTATE), unique
violations included."""

SESSION_SETUP: Final = f"""
-- The staging table and the load's other temporary tables live in this backend's own buffers.
-- At the default 8MB an hourly file's staging (about 30MB for 100,000 lines) spills, and every
-- step that reads it gets it back from the kernel, after writing it out. 64MB holds an hourly
-- file: 4% less CPU per load in a side-by-side run (256MB did no better). Only settable before
-- the session first touches a temporary table: a second setup keeps the value it has.
DO $$
BEGIN
    PERFORM set_config('temp_buffers', '{TEMP_BUFFERS}', false);
EXCEPTION WHEN invalid_parameter_value THEN
    NULL;
END $$;
SET work_mem = '256MB';
-- The staging tables' statistics need row counts and a few common values, not histograms:
-- a 3,000-row sample is a tenth of the default's cost.
SET default_statistics_target = 10;
SET TIME ZONE 'UTC';
-- A loader that dies mid-load (killed, a Lambda timeout) leaves its backend to hold the load's
-- locks until its statement ends, and a lock wait may never end: have the backend check that
-- its client is still there (PostgreSQL 14 and later, where the platform supports it).
DO $$
BEGIN
    IF current_setting('server_version_num')::int >= 140000 THEN
        PERFORM set_config('client_connection_check_interval', '2s', false);
    END IF;
EXCEPTION WHEN invalid_parameter_value OR undefined_object OR insufficient_privilege THEN
    NULL;  -- a platform or a compatible server without the check: loads work as before
END $$;
CREATE TEMP TABLE IF NOT EXISTS km2pg_stage (
    {STAGE_COLUMNS_DDL}
) PARTITION BY LIST (rec);
-- Split by kind, so the steps that read lines or aliases never scan the property rows.
CREATE TEMP TABLE IF NOT EXISTS km2pg_stage_lines PARTITION OF km2pg_stage
    FOR VALUES IN ('e', 'p');
CREATE TEMP TABLE IF NOT EXISTS km2pg_stage_aliases PARTITION OF km2pg_stage
    FOR VALUES IN ('a', 'r');
CREATE TEMP TABLE IF NOT EXISTS km2pg_stage_properties PARTITION OF km2pg_stage
    FOR VALUES IN ('k');
CREATE TEMP TABLE IF NOT EXISTS km2pg_stage_ends PARTITION OF km2pg_stage
    FOR VALUES IN ('n');
TRUNCATE {STAGE};
"""


def setup_session(con: Connection) -> None:
    """Per connection: the staging table (temporary, unlogged) and session settings."""
    con.run(SESSION_SETUP)


def stage(con: Connection, chunks: Iterable[str | bytes]) -> None:
    """COPY a file's rows into the (emptied) staging table and refresh its statistics."""
    con.run(f"TRUNCATE {STAGE}")
    con.run(f"COPY {STAGE} ({STAGE_COLUMNS}) FROM STDIN", stream=chunks)
    # The partitions, not the parent: queries read them pruned, and the parent's ANALYZE would
    # sample every row twice over.
    con.run(f"ANALYZE {STAGE}_lines, {STAGE}_aliases, {STAGE}_properties, {STAGE}_ends")


def clear_stage(con: Connection) -> None:
    con.run(f"TRUNCATE {STAGE}")


# ---------------------------------------------------------------------------------------------
# The ledger


@dataclass(frozen=True)
class LedgerEntry:
    source: str
    path: str
    export_key: str
    revision: int
    etag: str | None
    content_md5: str | None
    size: int | None
    started_at: datetime

    @classmethod
    def for_file(cls, file: ExportFile) -> LedgerEntry:
        """What the ledger knows of a file before reading it (its content hash comes later)."""
        return cls(
            source=file.source,
            path=file.path,
            export_key=file.export_key,
            revision=file.revision,
            etag=file.etag,
            content_md5=None,
            size=file.size,
            started_at=datetime.now(UTC),
        )


@dataclass(frozen=True)
class RowCounts:
    lines: int = 0
    events: int = 0
    actions: int = 0
    properties: int = 0
    aliases: int = 0
    rejects: int = 0
    suppressed: int = 0
    """Lines of forgotten identities (km2pg.forget), dropped rather than loaded or rejected."""
    min_t: datetime | None = None
    max_t: datetime | None = None


@dataclass(frozen=True)
class Added(RowCounts):
    """The rows a load added, and whether it met property rows already stored (then a line of
    this file may have replaced a value person_properties holds as a first value)."""

    properties_met_stored: bool = False


def loaded_fileid(con: Connection, export_key: str, content_md5: str) -> int | None:
    """The ledger row of an earlier successful load of this export file and content, if any."""
    value = db.scalar(
        con,
        "SELECT fileid FROM km2pg.files WHERE export_key = :key AND content_md5 = :md5"
        " AND status = 'loaded'",
        key=export_key,
        md5=content_md5,
    )
    return None if value is None else int(value)


def was_loaded(con: Connection, export_key: str) -> bool:
    """Whether any content of this export file was loaded before (a reload is possible)."""
    return bool(
        db.scalar(
            con,
            "SELECT EXISTS (SELECT FROM km2pg.files WHERE export_key = :key AND status = 'loaded')",
            key=export_key,
        )
    )


def record(
    con: Connection,
    entry: LedgerEntry,
    status: str,
    counts: RowCounts,
    error: str | None = None,
) -> int:
    """Insert one ledger row; returns its fileid."""
    value = db.scalar(
        con,
        """
        INSERT INTO km2pg.files (source, path, export_key, revision, etag, content_md5, size,
            status, lines, events, actions, properties, aliases, rejects, suppressed, min_t,
            max_t, started_at, error)
        VALUES (:source, :path, :export_key, :revision, :etag, :content_md5, :size,
            :status, :lines, :events, :actions, :properties, :aliases, :rejects, :suppressed,
            :min_t, :max_t, :started_at, :error)
        RETURNING fileid
        """,
        # The parameters are named after the fields of the entry and the counts.
        **asdict(entry),
        **asdict(counts),
        status=status,
        error=error,
    )
    return int(value)


def keep_rejects(con: Connection, fileid: int, limit: int | None = None) -> int:
    """Copy the staged rejects into ``km2pg.rejects`` for this ledger row."""
    con.run(
        f"""
        INSERT INTO km2pg.rejects (fileid, lineno, reason, raw)
        SELECT :fileid, lineno, name, value FROM {STAGE} WHERE rec = 'r'
        ORDER BY lineno LIMIT :limit
        """,
        fileid=fileid,
        limit=limit,
    )
    return int(con.row_count or 0)


# ---------------------------------------------------------------------------------------------
# Partitions


def _partition_name(month: tuple[int, int]) -> str:
    return f"events_{month[0]:04d}_{month[1]:02d}"


# pg_class read with this statement's snapshot, not to_regclass(), which answers from this
# session's catalog cache: the answer is then right whenever it is asked, not only after
# _see_partition_changes has brought that cache up to date.
_MISSING_PARTITIONS: Final = """
SELECT name = ANY (SELECT c.relname FROM pg_catalog.pg_class c
                    WHERE c.relnamespace = CAST('km2pg' AS regnamespace))
  FROM unnest(CAST(:names AS text[])) AS name
"""


def missing_partitions(con: Connection, months: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    wanted = sorted(set(months))
    if not wanted:
        return []
    present = db.rows(con, _MISSING_PARTITIONS, names=[_partition_name(m) for m in wanted])
    return [month for month, (exists,) in zip(wanted, present, strict=True) if not exists]


def create_partitions(con: Connection, months: Iterable[tuple[int, int]]) -> int:
    """Create the missing month partitions in a short transaction of their own."""
    if not set(months):
        return 0
    created = 0
    with db.transaction(con):
        con.run(
            "SELECT pg_advisory_xact_lock(:ns, :key)",
            ns=db.LOCK_NAMESPACE,
            key=db.LOCK_PARTITIONS,
        )
        _see_partition_changes(con)
        # Asked again under the lock: another loader may have made them while this one waited.
        for year, month in missing_partitions(con, months):
            made = db.scalar(
                con,
                "SELECT km2pg.ensure_month_partitions(make_timestamptz(:y, :m, 1, 0, 0, 0, 'UTC'))",
                y=year,
                m=month,
            )
            created += bool(made)
    return created


# ---------------------------------------------------------------------------------------------
# The load transaction's steps, in lock order


def _see_partition_changes(con: Connection) -> None:
    """Once the partition lock is held: make this session see the partitions others created or
    dropped while it waited for the lock.

    A session reads other sessions' catalog changes when it starts a transaction or takes a
    table lock, not when it takes an advisory lock; until then its cache answers ``to_regclass``
    with what was there before. Without this, a loader recreated partitions another had just
    made ("already exists"), or took pruned ones for present ("no partition ... found for row").
    """
    con.run("LOCK TABLE ONLY km2pg.events IN ACCESS SHARE MODE")


def lock_for_load(con: Connection, export_key: str) -> None:
    """Hold off pruning (shared partition lock), then serialize loads of the same export key."""
    con.run(
        "SELECT pg_advisory_xact_lock_shared(:ns, :key)",
        ns=db.LOCK_NAMESPACE,
        key=db.LOCK_PARTITIONS,
    )
    _see_partition_changes(con)
    con.run(
        "SELECT pg_advisory_xact_lock(:ns, hashtext(:export_key))",
        ns=LOCK_FILES_NAMESPACE,
        export_key=export_key,
    )
    _lock_writes_on_citus(con)


def _lock_writes_on_citus(con: Connection) -> None:
    """On Citus, take the alias lock now, before the first write, rather than at the merge.

    Citus writes a reference table (users) on every node, so two loaders adding the same new
    identities could each lock them first on a different node, and Citus canceled one ("involved
    in a distributed deadlock"); rows of overlapping files in a distributed table could meet the
    same way, since shards are written in parallel rather than in key order. Loaders therefore
    write one at a time on Citus (they still parse and stage at once). On PostgreSQL the
    statement finds no citus extension and locks nothing.
    """
    con.run(
        "SELECT pg_advisory_xact_lock(:ns, :key) FROM pg_catalog.pg_extension"
        " WHERE extname = 'citus'",
        ns=db.LOCK_NAMESPACE,
        key=db.LOCK_ALIASES,
    )
    # One connection per node for the transaction's writes: a parallel write sends a table's
    # shards over several connections, and a later statement that reads a shard with its
    # partitions, or joins colocated shards (person_properties' upkeep reads event_properties),
    # then fails: "cannot perform query with placements that were modified over multiple
    # connections".
    con.run(
        "SELECT set_config('citus.multi_shard_modify_mode', 'sequential', true)"
        " FROM pg_catalog.pg_extension WHERE extname = 'citus'"
    )


# Staging rows (rec): e event (name = action), p property set, a alias (p2), k property
# (name = key, value; its line's e or p row holds p, t and the action), r reject (name = reason,
# value = raw line), n an identity and key's first and latest setting (see _ENDS_STAGED).
_NAMES_STAGED: Final = f"""
CREATE TEMP TABLE s_names ON COMMIT DROP AS
    SELECT p AS name FROM {STAGE} WHERE rec IN ('e', 'p', 'a')
    UNION
    SELECT p2 FROM {STAGE} WHERE rec = 'a';
ANALYZE s_names;
"""

# Forgotten identities (km2pg.forget): the list holds SHA-256 hashes of names, so the file's
# distinct names are hashed (not its lines), and only while the list is not empty. Their lines go
# from staging before anything is written, as if the file never held them: their events and
# property sets (with them, their properties), their aliases, and their rejected lines (the
# identity read from the raw text: best effort). A name seen only in their alias lines is not
# created either.
_SUPPRESSIONS_EXIST: Final = "SELECT EXISTS (SELECT FROM km2pg.suppressed_identities)"
_SUPPRESSED_NAMES: Final = """
CREATE TEMP TABLE s_suppressed ON COMMIT DROP AS
SELECT name FROM s_names
 WHERE sha256(convert_to(name, 'UTF8')) IN (SELECT name_sha256 FROM km2pg.suppressed_identities);
CREATE TEMP TABLE s_partners (name text NOT NULL) ON COMMIT DROP;
-- A handful of rows: so the planner knows, and hashes them rather than the staged lines.
ANALYZE s_suppressed;
"""
# Joins whose small side is the suppressed names: one pass over the staged lines. Their
# properties may stay staged: they reach the database only through their line's event.
_SUPPRESS_LINES: Final = f"""
WITH lines AS (
    DELETE FROM {STAGE}_lines s USING s_suppressed x WHERE s.p = x.name
    RETURNING s.lineno
), aliases AS (
    DELETE FROM {STAGE}_aliases s
     WHERE s.rec = 'a'
       AND (s.p IN (SELECT name FROM s_suppressed) OR s.p2 IN (SELECT name FROM s_suppressed))
    RETURNING s.p, s.p2
), partners AS (
    INSERT INTO s_partners (name)
    SELECT p FROM aliases UNION SELECT p2 FROM aliases EXCEPT SELECT name FROM s_suppressed
)
SELECT (SELECT count(*) FROM lines) + (SELECT count(*) FROM aliases)
"""
_FORGET_NAMES: Final = "DELETE FROM s_names WHERE name IN (SELECT name FROM s_suppressed)"
# Identities aliased to a forgotten one that no other line of the file names (usually none: a
# person's identities are forgotten together).
_FORGET_PARTNERS: Final = f"""
ANALYZE s_partners;
DELETE FROM s_names
 WHERE name IN (SELECT name FROM s_partners)
   AND name NOT IN (SELECT s.p FROM {STAGE}_lines s JOIN s_partners x ON s.p = x.name
                    UNION ALL
                    SELECT s.p FROM {STAGE}_aliases s JOIN s_partners x ON s.p = x.name
                     WHERE s.rec = 'a'
                    UNION ALL
                    SELECT s.p2 FROM {STAGE}_aliases s JOIN s_partners x ON s.p2 = x.name
                     WHERE s.rec = 'a')
"""
_IDENTITY_IN_RAW: Final = r'"_p2?"\s*:\s*"([^"\\]*)"'
"""An identity as a rejected line spells it (a JSON string without escapes)."""
_SUPPRESS_REJECTS: Final = f"""
DELETE FROM {STAGE} s
 WHERE s.rec = 'r'
   AND EXISTS (SELECT FROM regexp_matches(s.value, :pattern, 'g') AS m (v)
                WHERE sha256(convert_to(m.v[1], 'UTF8'))
                      IN (SELECT name_sha256 FROM km2pg.suppressed_identities))
"""


def suppressions_exist(con: Connection) -> bool:
    """Whether any identity was ever forgotten (one cheap query; loads skip the rest if not)."""
    return bool(db.scalar(con, _SUPPRESSIONS_EXIST))


def suppress_rejects(con: Connection) -> int:
    """Drop the staged rejected lines of forgotten identities; returns how many."""
    con.run(_SUPPRESS_REJECTS, pattern=_IDENTITY_IN_RAW)
    return int(con.row_count or 0)


def _suppress_lines(con: Connection) -> int:
    """Drop the staged lines of forgotten identities (``s_names`` made); returns how many."""
    con.run(_SUPPRESSED_NAMES)
    if not db.scalar(con, "SELECT EXISTS (SELECT FROM s_suppressed)"):
        return 0
    gone = int(db.scalar(con, _SUPPRESS_LINES))
    con.run(_FORGET_NAMES)
    if db.scalar(con, "SELECT EXISTS (SELECT FROM s_partners)"):
        con.run(_FORGET_PARTNERS)
    return gone


# The file's identities already stored, looked up by key (= ANY of an array: an index probe per
# name), once; the identities the load adds join them as they are written. A join let the planner
# hash the whole users table for every file (a file names about 20,000 identities; a site's table
# grows to millions: 0.2 s per scan at 1.65 million rows, and the load made three of them), so a
# file's cost grew with the table instead of with the file.
_USERS_STAGED: Final = """
CREATE TEMP TABLE s_users ON COMMIT DROP AS
    SELECT u.userid, u.name FROM km2pg.users u
     WHERE u.name = ANY (ARRAY(SELECT name FROM s_names))
"""

# New identities take the fast path too: a plain INSERT, redone with ON CONFLICT when a concurrent
# loader added one of the same names first (then _USERS_ADDED_BY_OTHERS finds those).
_USERS: Final = """
INSERT INTO km2pg.users (userid, name, personid)
SELECT id, name, id
  FROM (SELECT nextval('km2pg.users_userid_seq') AS id, name
          FROM (SELECT n.name FROM s_names n
                 WHERE n.name NOT IN (SELECT name FROM s_users)
                 ORDER BY n.name) AS fresh) AS numbered
 ORDER BY name
"""
_USERS_SAFE: Final = f"{_USERS}    ON CONFLICT (name) DO NOTHING"
_USERS_ADDED_BY_OTHERS: Final = """
INSERT INTO s_users
SELECT u.userid, u.name FROM km2pg.users u
 WHERE u.name = ANY (ARRAY(SELECT name FROM s_names EXCEPT SELECT name FROM s_users))
"""

# The identities this load creates, kept for person_properties' upkeep (see _FOLD_FILE): a person
# made of them alone is invisible to every other loader until this one commits, so it cannot
# have stored rows. A fast attempt that is rolled back to its savepoint takes its rows with it
# (from s_users too).
_NEW_USERS_STAGED: Final = "CREATE TEMP TABLE s_new_users (userid bigint NOT NULL) ON COMMIT DROP"


def _adding_to_s_users(insert: str, *, keep_new: bool) -> str:
    """The users insert, with the identities it writes added to s_users (and, with
    ``keep_new``, to s_new_users)."""
    kept = "kept AS (INSERT INTO s_new_users SELECT userid FROM written)" if keep_new else ""
    return f"""
WITH written AS (
{insert}
RETURNING userid, name
){"," if kept else ""}
{kept}
INSERT INTO s_users SELECT userid, name FROM written
"""


_USERS_WRITTEN: Final = {
    keep: (
        _adding_to_s_users(_USERS, keep_new=keep),
        _adding_to_s_users(_USERS_SAFE, keep_new=keep),
    )
    for keep in (True, False)
}

# Action and key names come from the parser (a site has a few hundred); when a file holds too
# many to keep in memory, they are read back from the staging table instead.
# Written as anti-joins (LEFT JOIN ... IS NULL), which PostgreSQL plans exactly as NOT EXISTS and
# Citus also plans: it refuses a correlated subquery beside a set-returning function or a
# subquery in FROM.
_NEW_NAMES: Final = """
INSERT INTO km2pg.{table} (name)
SELECT s.name FROM unnest(CAST(:names AS text[])) AS s (name)
  LEFT JOIN km2pg.{table} d ON d.name = s.name
 WHERE d.name IS NULL
 ORDER BY s.name
    ON CONFLICT (name) DO NOTHING
"""
_NEW_NAMES_STAGED: Final = f"""
INSERT INTO km2pg.{{table}} (name)
SELECT s.name FROM (SELECT DISTINCT name FROM {STAGE} WHERE rec = :rec) AS s
  LEFT JOIN km2pg.{{table}} d ON d.name = s.name
 WHERE d.name IS NULL
 ORDER BY s.name
    ON CONFLICT (name) DO NOTHING
"""

_RESOLVE: Final = f"""
CREATE TEMP TABLE s_ev ON COMMIT DROP AS
SELECT ((s.t - 946684800) << 32) | u.userid AS eventid,
       u.userid,
       s.t,
       a.actionid,
       s.lineno
  FROM {STAGE} s
  JOIN s_users u ON u.name = s.p
  LEFT JOIN km2pg.actions a ON a.name = s.name
 WHERE s.rec IN ('e', 'p');
ANALYZE s_ev;
"""

# Facts go in with a plain INSERT first: it is twice as fast as ON CONFLICT, and in a steady
# stream of new files it almost never meets an existing row. When it does (a line repeated in
# another file, a reload, a concurrent loader), that statement is rolled back to a savepoint and
# done again with ON CONFLICT. Actions and properties of events that are all new cannot exist
# yet, so they take the fast path whenever the events did.
# DISTINCT ON always sorts (a hash aggregate, which a low estimate of distinct rows can pick, needs
# a sort afterwards anyway); an eventid determines its userid and t.
_EVENT_ROWS: Final = """
SELECT DISTINCT ON (eventid) eventid, userid, to_timestamp(t) FROM s_ev ORDER BY eventid
"""
_EVENTS: Final = f"INSERT INTO km2pg.events (eventid, userid, t) {_EVENT_ROWS}"
_EVENTS_SAFE: Final = f"{_EVENTS} ON CONFLICT DO NOTHING"

_EVENT_ACTION_ROWS: Final = """
SELECT DISTINCT ON (eventid, actionid) eventid, actionid
  FROM s_ev WHERE actionid IS NOT NULL ORDER BY eventid, actionid
"""
_EVENT_ACTIONS: Final = f"INSERT INTO km2pg.event_actions (eventid, actionid) {_EVENT_ACTION_ROWS}"
_EVENT_ACTIONS_SAFE: Final = f"{_EVENT_ACTIONS} ON CONFLICT DO NOTHING"

# Within the file the last line wins; across files the greatest (revision, lineno) wins, and value
# and action break the (theoretical) remaining ties, so the outcome never depends on load order.
_EVENT_PROPERTY_ROWS: Final = f"""SELECT DISTINCT ON (1, 2)
       e.eventid, k.keyid, s.value, e.actionid, CAST(:revision AS bigint), s.lineno
  FROM {STAGE} s
  JOIN s_ev e USING (lineno)
  JOIN km2pg.keys k ON k.name = s.name
 WHERE s.rec = 'k'
 ORDER BY 1, 2, s.lineno DESC
"""
_EVENT_PROPERTIES: Final = f"""
INSERT INTO km2pg.event_properties AS ep (eventid, keyid, value, actionid, revision, lineno)
{_EVENT_PROPERTY_ROWS}"""
_EVENT_PROPERTIES_CONFLICT: Final = """
    ON CONFLICT (eventid, keyid) DO UPDATE
   SET value = excluded.value, actionid = excluded.actionid,
       revision = excluded.revision, lineno = excluded.lineno
 WHERE (ep.revision, ep.lineno, ep.value, coalesce(ep.actionid, -1))
     < (excluded.revision, excluded.lineno, excluded.value, coalesce(excluded.actionid, -1))"""

# person_properties' upkeep folds in, for each identity and key, the first and the latest of the
# settings this load wrote (s_ends), not the settings themselves: a file's people set the same few
# keys again and again (the real sample: 7,525 settings on 310 pairs), and a copy of every written
# setting plus a sort of it to each pair's ends cost more than the fold itself.
# A setting's place within a file is (second, line), packed into one bigint (eventid's second
# above 31 bits of lineno, an integer below 2^31): one sort of the written settings by identity,
# key and place then gives each pair's first (the first row) and latest (the frame's last row).
_PLACE: Final = "((eventid >> 32) << 31) | lineno"
_SETTINGS_ENDS_STAGED: Final = """
CREATE TEMP TABLE s_ends (
    userid bigint NOT NULL, keyid integer NOT NULL,
    last_key bigint NOT NULL, last_value text NOT NULL,
    first_key bigint NOT NULL, first_value text NOT NULL
) ON COMMIT DROP
"""
# The rows a load wrote all of (the fast path) or inserted or updated (the safe path: not those
# that lost to a stored line), copied into s_props only on the safe path, whose repair of first
# settings (_REPAIR_FIRST_SETTINGS) needs them one by one.
_PROPS_STAGED: Final = """
CREATE TEMP TABLE s_props (
    eventid bigint NOT NULL, keyid integer NOT NULL, value text NOT NULL, lineno integer NOT NULL
) ON COMMIT DROP
"""
_COPY_WRITTEN: Final = """
copied AS (
    INSERT INTO s_props SELECT eventid, keyid, value, lineno FROM written
),"""


def _keeping_settings(insert: str, *, copy: bool) -> str:
    """The insert, with each identity and key's first and latest written setting kept in s_ends
    (and, with ``copy``, every written row in s_props); the statement's one value is the number
    of rows written."""
    return f"""
WITH written AS (
{insert}
RETURNING ep.eventid, ep.keyid, ep.value, ep.lineno
),{_COPY_WRITTEN if copy else ""}
kept AS (
    INSERT INTO s_ends (userid, keyid, last_key, last_value, first_key, first_value)
    SELECT DISTINCT ON (userid, keyid)
           userid, keyid, last_value(place) OVER w, last_value(value) OVER w, place, value
      FROM (SELECT eventid & 4294967295 AS userid, keyid, value, {_PLACE} AS place
              FROM written) AS settings
    WINDOW w AS (PARTITION BY userid, keyid ORDER BY place
                 ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
     ORDER BY userid, keyid, place
)
SELECT count(*) FROM written
"""


_EVENT_PROPERTIES_KEPT: Final = (
    _keeping_settings(_EVENT_PROPERTIES, copy=False),
    _keeping_settings(_EVENT_PROPERTIES + _EVENT_PROPERTIES_CONFLICT, copy=True),
)
# The parser usually knows the ends already (staging.StageStats.ends), as the fast insert writes
# them, since it writes every staged row that wins its event: it staged one row per identity and
# key, the latest setting (line, key, value; the line's identity and second in s_ev) with the
# first one's second (t), line (first) and value (p2), null when it is the latest. Then the fast
# insert is the plain one and s_ends is made from those rows (a real hourly file: some 5,000 of
# them, against 120,000 written settings to sort). Forgotten identities' rows drop out in the
# join: their lines are not in s_ev.
_ENDS_STAGED: Final = f"""
INSERT INTO s_ends (userid, keyid, last_key, last_value, first_key, first_value)
SELECT e.userid, k.keyid, {_PLACE}, s.value,
       coalesce(((s.t - 946684800) << 31) | s.first, {_PLACE}), coalesce(s.p2, s.value)
  FROM {STAGE} s
  JOIN s_ev e USING (lineno)
  JOIN km2pg.keys k ON k.name = s.name
 WHERE s.rec = 'n'
"""
# Without the upkeep's copy (LoadOptions.person_properties off: the benchmark's switch).
_EVENT_PROPERTIES_ONLY: Final = (_EVENT_PROPERTIES, _EVENT_PROPERTIES + _EVENT_PROPERTIES_CONFLICT)

_ALIASES: Final = f"""
INSERT INTO km2pg.aliases AS al (userid, aliasid, since)
SELECT u1.userid, u2.userid, to_timestamp(min(s.t))
  FROM {STAGE} s
  JOIN s_users u1 ON u1.name = s.p
  JOIN s_users u2 ON u2.name = s.p2
 WHERE s.rec = 'a'
 GROUP BY 1, 2
 ORDER BY 1, 2
    ON CONFLICT (userid, aliasid) DO UPDATE SET since = excluded.since
 WHERE excluded.since < al.since
"""

_PERSON_PAIRS: Final = f"""
SELECT DISTINCT u1.personid AS personid_a, u2.personid AS personid_b
  FROM (SELECT DISTINCT p, p2 FROM {STAGE} WHERE rec = 'a') AS s
  JOIN s_users x1 ON x1.name = s.p
  JOIN s_users x2 ON x2.name = s.p2
  JOIN km2pg.users u1 ON u1.userid = x1.userid
  JOIN km2pg.users u2 ON u2.userid = x2.userid
 WHERE u1.personid <> u2.personid
"""


def insert_facts(
    con: Connection,
    revision: int,
    names: StagedNames,
    timings: dict[str, float] | None = None,
    *,
    suppress: bool = False,
    keep_settings: bool = True,
    ends_staged: bool = False,
) -> Added:
    """Dictionaries, then events, actions and properties, from the staging table.

    Returns the rows this load added (a reload adds none). With ``suppress``, the lines of
    forgotten identities are dropped first and counted. ``timings`` collects each step's seconds.
    ``keep_settings`` False (a benchmark's switch) leaves out the copy of the written properties
    that person_properties' upkeep folds in. ``ends_staged``: the parser staged each identity and
    key's first and latest setting (rec n), which the fast path then takes as they are.
    """
    clock = _Clock(timings)
    con.run(_NAMES_STAGED)
    suppressed = 0
    if suppress:
        clock.lap("users")  # the file's names: part of the users step, as without suppression
        suppressed = _suppress_lines(con)
        clock.lap("suppress")
    con.run(_USERS_STAGED)
    if keep_settings:
        con.run(_NEW_USERS_STAGED)
    _, others = _insert(con, *_USERS_WRITTEN[keep_settings])
    if others:
        con.run(_USERS_ADDED_BY_OTHERS)
    con.run("ANALYZE s_users")
    clock.lap("users")
    _new_names(con, "actions", names.actions, "e")
    _new_names(con, "keys", names.keys, "k")
    con.run(_RESOLVE)
    clock.lap("dictionaries")
    events, clash = _insert(con, _EVENTS, _EVENTS_SAFE)
    clock.lap("events")
    actions, _ = _insert(con, _EVENT_ACTIONS, _EVENT_ACTIONS_SAFE, safe_only=clash)
    clock.lap("event_actions")
    if keep_settings:
        con.run(_SETTINGS_ENDS_STAGED)
        con.run(_PROPS_STAGED)
    fast, safe = _EVENT_PROPERTIES_KEPT if keep_settings else _EVENT_PROPERTIES_ONLY
    ends_known = keep_settings and ends_staged
    if ends_known:
        fast = _EVENT_PROPERTIES
    properties, met_stored = _insert(con, fast, safe, safe_only=clash, revision=revision)
    if ends_known and not met_stored:
        con.run(_ENDS_STAGED)
    clock.lap("event_properties")
    aliases = count_written(con, _ALIASES)
    clock.lap("aliases")
    return Added(
        events=events,
        actions=actions,
        properties=properties,
        aliases=aliases,
        properties_met_stored=met_stored,
        suppressed=suppressed,
    )


class _Clock:
    def __init__(self, timings: dict[str, float] | None) -> None:
        self.timings = timings
        self.last = time.monotonic()

    def lap(self, name: str) -> None:
        now = time.monotonic()
        if self.timings is not None:
            self.timings[name] = self.timings.get(name, 0.0) + now - self.last
        self.last = now


def _new_names(con: Connection, table: str, names: Collection[str] | None, rec: str) -> None:
    # ``table`` is one of our two dictionary tables, never data.
    if names is None:
        con.run(_NEW_NAMES_STAGED.format(table=table), rec=rec)
    elif names:
        con.run(_NEW_NAMES.format(table=table), names=sorted(names))


def count_written(con: Connection, sql: str, **params: object) -> int:
    """Run an INSERT (or upsert) and return the rows it wrote (inserted or updated).

    Counted with RETURNING, not from the command tag: through a Citus coordinator,
    INSERT ... SELECT ... ON CONFLICT reports the rows it sent to the nodes, not the rows written
    (https://github.com/citusdata/citus/issues/3377). On PostgreSQL the two are the same.
    A statement that is already a WITH (a data-modifying WITH cannot nest) counts its written
    rows itself: see :func:`_run_counted`.
    """
    if sql.lstrip().upper().startswith("WITH"):
        return _run_counted(con, sql, **params)
    return int(
        db.scalar(
            con, f"WITH written AS ({sql} RETURNING 1) SELECT count(*) FROM written", **params
        )
    )


def _run_counted(con: Connection, sql: str, **params: object) -> int:
    """Run a statement that writes rows: its one value, when it returns one, is the number of rows
    written (a WITH that keeps what it wrote in temporary tables); otherwise its command tag."""
    result = db.rows(con, sql, **params)
    return int(result[0][0]) if result else int(con.row_count or 0)


def _may_be_unique_violation(error: DatabaseError) -> bool:
    """A unique violation, or an error Citus relayed without its code: either way the ON CONFLICT
    statement is worth running, and an error that was something else comes back from it."""
    return db.sqlstate(error) in {UNIQUE_VIOLATION, RELAYED_ERROR}


def _insert(
    con: Connection, fast: str, safe: str, *, safe_only: bool = False, **params: object
) -> tuple[int, bool]:
    """Run ``fast``; on a unique violation undo it and run ``safe`` instead.

    Returns (rows written, whether existing rows were met).
    """
    if not safe_only:
        con.run("SAVEPOINT km2pg_fast")
        try:
            written = _run_counted(con, fast, **params)
        except DatabaseError as error:
            if not _may_be_unique_violation(error):
                raise
            con.run("ROLLBACK TO SAVEPOINT km2pg_fast")
        else:
            con.run("RELEASE SAVEPOINT km2pg_fast")
            return written, False
    return count_written(con, safe, **params), True


# The person merge, in SQL so that memory stays flat however many aliases a file holds: label
# propagation over the graph of persons this file's aliases join. Every person starts labelled
# with the smallest of itself and its neighbours; each round takes the smallest label among the
# neighbours, then jumps to the label's own label (so a long chain needs about log2 of its length
# rounds, not its length). At the fixed point every person holds its component's smallest
# personid, which names the merged person.
_PERSON_EDGES: Final = f"""
CREATE TEMP TABLE s_person_edges ON COMMIT DROP AS
WITH pairs AS ({_PERSON_PAIRS})
SELECT personid_a AS a, personid_b AS b FROM pairs UNION SELECT personid_b, personid_a FROM pairs;
"""
_PERSON_LABELS: Final = """
CREATE TEMP TABLE s_person_labels ON COMMIT DROP AS
SELECT a AS node, least(a, min(b)) AS label FROM s_person_edges GROUP BY a;
ANALYZE s_person_edges, s_person_labels;
"""
_PROPAGATE: Final = """
UPDATE s_person_labels l SET label = n.label
  FROM (SELECT e.a AS node, min(x.label) AS label
          FROM s_person_edges e JOIN s_person_labels x ON x.node = e.b
         GROUP BY e.a) AS n
 WHERE n.node = l.node AND n.label < l.label
"""
_JUMP: Final = """
UPDATE s_person_labels l SET label = j.label
  FROM s_person_labels j
 WHERE j.node = l.label AND j.label < l.label
"""
# Written as an upsert of rows that all exist, not an UPDATE ... FROM the labels: Citus cannot
# update its tables from a temporary table, but it can INSERT ... SELECT from one (the SELECT runs
# on the coordinator). PostgreSQL updates the same few rows either way. The absorbed persons'
# identities are looked up by key (see _USERS_STAGED): with a few thousand merges in a file, a
# join hashed the whole users table.
_MERGE: Final = """
INSERT INTO km2pg.users AS u (userid, name, personid)
SELECT x.userid, x.name, l.label
  FROM km2pg.users x JOIN s_person_labels l ON x.personid = l.node
 WHERE x.personid = ANY (ARRAY(SELECT node FROM s_person_labels WHERE label <> node))
   AND l.label <> l.node
    ON CONFLICT (userid) DO UPDATE SET personid = excluded.personid
"""


def merge_persons(con: Connection) -> int:
    """Give every person joined by this file's aliases one personid; returns users updated.

    The caller holds the alias lock (see :func:`update_people`), taken last so that it is held
    only briefly; the graph is read after taking it, so no concurrent merge is missed.
    """
    con.run(_PERSON_EDGES)
    return merge_person_graph(con)


def merge_person_graph(con: Connection) -> int:
    """Merge the persons of ``s_person_edges`` (a, b: personids, both ways); users updated.

    Drops the graph's tables when done, so a transaction may merge more than once.
    """
    merged = 0
    if db.scalar(con, "SELECT EXISTS (SELECT FROM s_person_edges)"):
        con.run(_PERSON_LABELS)
        while True:
            con.run(_PROPAGATE)
            changed = con.row_count
            con.run(_JUMP)
            if not (changed or con.row_count):
                break
        merged = count_written(con, _MERGE)
        con.run(_MERGE_PERSON_PROPERTIES)
    con.run("DROP TABLE IF EXISTS s_person_edges, s_person_labels")
    return merged


# ---------------------------------------------------------------------------------------------
# person_properties: one row per person and key, the latest and the first setting
#
# Kept under the alias lock, after the persons merge: every statement then reads users.personid
# as the last merge left it (a merge committed by another loader included), and no merge runs
# until the fold commits. Loads that only fold share the lock (see update_people): two of them
# may fold into one person's rows at once, each upsert waiting for the other's row locks and then
# comparing with the row as the other left it, so no update is lost. Rows only ever move one way:
# a stored setting is replaced only by a line of the same event with a greater (revision,
# lineno), so the latest setting is the greatest of all settings ever written and folds in with a
# comparison. The first setting can be replaced that way too: then the earliest second is looked
# at again (_REPAIR_FIRST_SETTINGS), by a load that holds the lock alone.

# Which of two settings wins: (t, revision, lineno, value) compared, values in "C" order; the
# incoming row (the upsert's ``excluded``) against the stored one (``s``).
_LATER: Final = (
    '(excluded.t, excluded.revision, excluded.lineno, excluded.value COLLATE "C")'
    ' > (s.t, s.revision, s.lineno, s.value COLLATE "C")'
)
_EARLIER: Final = (
    "(excluded.first_t, excluded.first_revision, excluded.first_lineno,"
    ' excluded.first_value COLLATE "C")'
    ' < (s.first_t, s.first_revision, s.first_lineno, s.first_value COLLATE "C")'
)
_STATE_COLUMNS: Final = """
    (personid, keyid, value, t, revision, lineno,
     first_value, first_t, first_revision, first_lineno, first_eventid)
"""
# Rows of ``folded`` (one per person and key) folded into what is stored: new rows inserted,
# stored rows updated where the incoming latest or first setting wins. One upsert, a probe of the
# primary key per row: its cost follows the file, not the table (an UPDATE ... FROM plus an
# anti-join hashed the whole table for every file). In (personid, keyid) order, the primary key's,
# so that loaders folding at once (see update_people) meet each other's rows in one order, never
# in a cycle; the WHERE compares with the row as committed by then, so no concurrent setting is
# lost.
_UPSERT_FOLDED: Final = f"""
INSERT INTO km2pg.person_property_state AS s {_STATE_COLUMNS}
SELECT c.* FROM folded c ORDER BY c.personid, c.keyid
    ON CONFLICT (personid, keyid) DO UPDATE SET
       value = CASE WHEN {_LATER} THEN excluded.value ELSE s.value END,
       t = CASE WHEN {_LATER} THEN excluded.t ELSE s.t END,
       revision = CASE WHEN {_LATER} THEN excluded.revision ELSE s.revision END,
       lineno = CASE WHEN {_LATER} THEN excluded.lineno ELSE s.lineno END,
       first_value = CASE WHEN {_EARLIER} THEN excluded.first_value ELSE s.first_value END,
       first_t = CASE WHEN {_EARLIER} THEN excluded.first_t ELSE s.first_t END,
       first_revision = CASE WHEN {_EARLIER} THEN excluded.first_revision
                        ELSE s.first_revision END,
       first_lineno = CASE WHEN {_EARLIER} THEN excluded.first_lineno ELSE s.first_lineno END,
       first_eventid = CASE WHEN {_EARLIER} THEN excluded.first_eventid
                       ELSE s.first_eventid END
 WHERE {_LATER} OR {_EARLIER}
"""

# The persons of this file's identities, as merged by now (looked up by key: see _USERS_STAGED).
_PERSONS_STAGED: Final = """
CREATE TEMP TABLE s_persons ON COMMIT DROP AS
    SELECT u.userid, u.personid FROM km2pg.users u
     WHERE u.userid = ANY (ARRAY(SELECT userid FROM s_users));
ANALYZE s_persons;
"""

# This file's settings, the latest and the first of each person and key (within one file a
# person's settings of a key differ in (second, lineno)), folded into what is stored: the ends of
# each identity's settings (s_ends) taken to the ends of each person's.
# Persons this load created (personid a userid it inserted: s_new_users) have no stored rows: no
# other loader can see them before this one commits, so only this load's merge can have given
# them rows (checked). Their rows, most of a file's in a steady stream of new visitors, go into a
# plain INSERT (no speculative insertion, no probe before it, no row lock anyone can wait for):
# a person of one identity in the file straight from s_ends, one of several (a visitor who signed
# up in this file: two new identities joined by an alias) from its identities' joined ends. The
# rest go with the upsert, in the primary key's order.
# A person row from its ends (columns: personid, keyid, last_key, last_value, first_key,
# first_value, first_userid): a place holds the second above 31 bits of the line number.
_STATE_ROW: Final = """
    personid, keyid, last_value, km2pg.eventid_time((last_key >> 31) << 32),
    CAST(:revision AS bigint), CAST(last_key & 2147483647 AS integer),
    first_value, km2pg.eventid_time((first_key >> 31) << 32), CAST(:revision AS bigint),
    CAST(first_key & 2147483647 AS integer), ((first_key >> 31) << 32) | first_userid"""
_FOLD_FILE: Final = f"""
WITH several AS MATERIALIZED (
    -- Persons with more than one identity in this file (joined by aliases: few).
    SELECT personid FROM s_persons GROUP BY personid HAVING count(*) > 1
),
-- A new identity is a person of its own unless this load's merge made it one with others: then
-- that person may hold rows moved in by the merge (the only rows anyone can have written for
-- it), and those are looked up by key (= ANY of an array: a probe of the primary key each).
fresh AS MATERIALIZED (
    SELECT userid AS personid FROM s_new_users
    EXCEPT
    SELECT s.personid FROM km2pg.person_property_state s
     WHERE s.personid = ANY (ARRAY(SELECT userid FROM s_new_users))
),
-- The ends of a person of several identities: the greatest latest and the least first of theirs.
joined AS MATERIALIZED (
    SELECT DISTINCT ON (x.personid, e.keyid)
           x.personid, e.keyid, last_value(e.last_key) OVER w AS last_key,
           last_value(e.last_value) OVER w AS last_value, e.first_key, e.first_value,
           e.userid AS first_userid
      FROM s_ends e JOIN s_persons x USING (userid)
     WHERE x.personid IN (SELECT personid FROM several)
    WINDOW w AS (PARTITION BY x.personid, e.keyid ORDER BY e.last_key
                 ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
     ORDER BY x.personid, e.keyid, e.first_key
),
inserted AS (
    INSERT INTO km2pg.person_property_state {_STATE_COLUMNS}
    SELECT {_STATE_ROW}
      FROM (SELECT x.personid, e.keyid, e.last_key, e.last_value, e.first_key, e.first_value,
                   e.userid AS first_userid
              FROM s_ends e JOIN s_persons x USING (userid)
             WHERE x.personid IN (SELECT personid FROM fresh)
               AND x.personid NOT IN (SELECT personid FROM several)
            UNION ALL
            SELECT * FROM joined WHERE personid IN (SELECT personid FROM fresh)) AS c
),
-- Every other person's ends: its one identity's, or its identities' joined.
ends AS (
    SELECT x.personid, e.keyid, e.last_key, e.last_value, e.first_key, e.first_value,
           e.userid AS first_userid
      FROM s_ends e JOIN s_persons x USING (userid)
     WHERE x.personid NOT IN (SELECT personid FROM fresh)
       AND x.personid NOT IN (SELECT personid FROM several)
    UNION ALL
    SELECT * FROM joined WHERE personid NOT IN (SELECT personid FROM fresh)
),
folded {_STATE_COLUMNS} AS (
    SELECT {_STATE_ROW} FROM ends
)
{_UPSERT_FOLDED}"""

# A line of this file replaced the stored setting that a first value came from (same event,
# greater (revision, lineno), or the same line number of another content of the same export
# file with a greater value): the earliest second is still the first one, but which setting of
# it comes first is decided again, over the settings of all the person's identities then.
_REPAIR_FIRST_SETTINGS: Final = """
UPDATE km2pg.person_property_state s
   SET first_value = r.value, first_revision = r.revision, first_lineno = r.lineno,
       first_eventid = r.eventid
  FROM (SELECT DISTINCT ON (s.personid, s.keyid)
               s.personid, s.keyid, ep.value, ep.revision, ep.lineno, ep.eventid
          FROM s_props p
          JOIN s_persons x ON x.userid = p.eventid & 4294967295
          JOIN km2pg.person_property_state s
            ON s.personid = x.personid AND s.keyid = p.keyid AND s.first_eventid = p.eventid
           AND (s.first_revision, s.first_lineno, s.first_value)
               <> (CAST(:revision AS bigint), p.lineno, p.value)
          JOIN km2pg.users u ON u.personid = s.personid
          JOIN km2pg.event_properties ep
            ON ep.eventid = km2pg.make_eventid(u.userid, s.first_t) AND ep.keyid = s.keyid
         ORDER BY s.personid, s.keyid, ep.revision, ep.lineno, ep.value COLLATE "C") AS r
 WHERE s.personid = r.personid AND s.keyid = r.keyid
"""

# Persons joined by aliases: the rows of every absorbed person move to the person that absorbs
# it, each key's latest and first setting the greatest and least of the rows joined. The absorbed
# persons are looked up by key (= ANY of an array: an index scan whatever the planner guesses of
# the labels), not by a join the planner may hash over the whole table for a handful of persons.
_MERGE_PERSON_PROPERTIES: Final = f"""
WITH moved AS MATERIALIZED (
    DELETE FROM km2pg.person_property_state s
     USING s_person_labels l
     WHERE s.personid = ANY (ARRAY(SELECT node FROM s_person_labels WHERE label <> node))
       AND s.personid = l.node
    RETURNING l.label AS personid, s.keyid, s.value, s.t, s.revision, s.lineno,
              s.first_value, s.first_t, s.first_revision, s.first_lineno, s.first_eventid
),
folded AS MATERIALIZED (
    SELECT l.personid, l.keyid, l.value, l.t, l.revision, l.lineno,
           f.first_value, f.first_t, f.first_revision, f.first_lineno, f.first_eventid
      FROM (SELECT DISTINCT ON (personid, keyid) * FROM moved
             ORDER BY personid, keyid, t DESC, revision DESC, lineno DESC,
                      value COLLATE "C" DESC) AS l
      JOIN (SELECT DISTINCT ON (personid, keyid) * FROM moved
             ORDER BY personid, keyid, first_t, first_revision, first_lineno,
                      first_value COLLATE "C") AS f USING (personid, keyid)
)
{_UPSERT_FOLDED}"""


def update_people(
    con: Connection,
    revision: int,
    added: Added,
    *,
    aliases: bool,
    timings: dict[str, float],
    person_properties: bool = True,
) -> None:
    """The last step of a load: merge the persons this file's aliases join, then fold its
    property settings into person_properties, under the alias lock (taken last).

    Only merges and repairs need the lock alone: a merge moves rows between persons and a repair
    decides a first setting from event_properties as it reads them, either of which a concurrent
    fold could undo. A load with neither (no alias lines, no stored property met) only folds its
    own settings in, a greatest and least that any number of loaders may take at once (the
    upsert's row locks order them): it takes the lock shared, and merges wait for it. Which mode
    is known before the lock is taken, so no loader ever upgrades a lock it holds (two would
    deadlock). ``person_properties`` False (a benchmark's switch) leaves the fold out.
    """
    clock = _Clock(timings)
    folding = person_properties and added.properties > 0
    if not (aliases or folding):
        return
    alone = aliases or (folding and added.properties_met_stored)
    lock = "pg_advisory_xact_lock" if alone else "pg_advisory_xact_lock_shared"
    con.run(f"SELECT {lock}(:ns, :key)", ns=db.LOCK_NAMESPACE, key=db.LOCK_ALIASES)
    if aliases:
        merge_persons(con)
        clock.lap("merge_persons")
    if folding:
        con.run(_PERSONS_STAGED)
        con.run(_FOLD_FILE, revision=revision)
        if added.properties_met_stored:
            con.run(_REPAIR_FIRST_SETTINGS, revision=revision)
        clock.lap("person_properties")
