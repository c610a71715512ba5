"""km2pg on a Citus cluster: which tables are sharded, which are copied to every node, and how.

Citus (https://docs.citusdata.com) shards a table across worker nodes by a distribution column,
or copies a small table to every node as a *reference table*. km2pg's layout:

- the dictionaries (users, aliases, actions, keys) are reference tables: every fact joins them,
  and a join with a reference table runs on each worker without moving rows;
- events is distributed by eventid, and event_actions and event_properties are distributed by
  eventid *colocated* with it: the rows of one event sit on one node, so the founding query's
  joins run whole on the workers. Month partitions made later are distributed and colocated
  too (Citus does it for every partition of a distributed table);
- the ledger (files, rejects) and schema_migrations stay plain tables on the coordinator: small,
  written once per file, read by the coordinator alone.

Adding a table to the layout is one line of :data:`LAYOUT`. Distribution happens once: a table
already in Citus' metadata is left alone, so running it again does nothing.
"""

from __future__ import annotations

import re
from contextlib import suppress
from dataclasses import dataclass
from typing import Final

from pg8000.native import Connection

from km2pg.errors import SchemaError


@dataclass(frozen=True)
class Placement:
    """How one km2pg table lives on a cluster: ``column`` None makes a reference table."""

    table: str
    column: str | None = None
    colocate_with: str | None = None

    @property
    def relation(self) -> str:
        return f"km2pg.{self.table}"


# In dependency order: a colocated table after the table it follows.
LAYOUT: Final = (
    Placement("users"),
    Placement("aliases"),
    Placement("actions"),
    Placement("keys"),
    Placement("events", column="eventid"),
    Placement("event_actions", column="eventid", colocate_with="events"),
    Placement("event_properties", column="eventid", colocate_with="events"),
)
DISTRIBUTED_MARKER: Final = "events"
"""The table whose distribution says the schema is laid out for Citus."""


def has_citus(con: Connection) -> bool:
    """Whether the database has the citus extension (so Citus' catalogs can be read)."""
    return bool(con.run("SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus')")[0][0])


def is_cluster(con: Connection) -> bool:
    """Citus with at least one active worker node registered: a cluster to distribute over."""
    if not has_citus(con):
        return False
    return bool(
        con.run("SELECT EXISTS (SELECT FROM pg_catalog.citus_get_active_worker_nodes())")[0][0]
    )


def is_citus_table(con: Connection, relation: str) -> bool:
    """Whether Citus knows the table (distributed, reference or Citus-managed local)."""
    if not has_citus(con):
        return False
    return bool(
        con.run(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_dist_partition"
            " WHERE logicalrelid = to_regclass(CAST(:r AS text)))",
            r=relation,
        )[0][0]
    )


def is_distributed(con: Connection) -> bool:
    """Whether km2pg's schema is laid out for Citus here."""
    return is_citus_table(con, f"km2pg.{DISTRIBUTED_MARKER}")


def distribute(con: Connection) -> list[str]:
    """Distribute every table of :data:`LAYOUT` that is not distributed yet; returns their names.

    Each table in its own transaction (Citus moves any rows already there into shards), so a
    failure halfway leaves the others done and a rerun finishes the job. Then the SQL functions
    Citus cannot run are adapted (:func:`adapt_functions`). The caller holds the migration lock.
    """
    require_coordinator_in_metadata(con)
    done = []
    for placement in LAYOUT:
        if con.run("SELECT to_regclass(CAST(:r AS text)) IS NULL", r=placement.relation)[0][0]:
            continue  # not made by this schema version
        if is_citus_table(con, placement.relation):
            continue
        con.run("BEGIN")
        try:
            _place(con, placement)
        except BaseException:
            with suppress(Exception):  # a lost connection has rolled back already
                con.run("ROLLBACK")
            raise
        con.run("COMMIT")
        done.append(placement.table)
    adapt_functions(con)
    return done


# Citus cannot plan a query that reads its tables inside a SQL-language function ("could not
# create distributed plan ... use of parameters in SQL functions"; and in some statements, such
# as one side of an EXCEPT, Citus 13.2 even read such a function as no rows at all). In PL/pgSQL
# the same query runs as a query of its own, with the parameters' values bound. So on a cluster
# every SQL-language function of the schema that reads tables (all but the IMMUTABLE ones, which
# compute from their arguments alone) is replaced by a PL/pgSQL twin made from its own
# definition: same signature, same query, same answers (the tests compare them with plain
# PostgreSQL's). Applied after every migration of a distributed schema, so that a function a
# later migration adds or redefines is adapted too. The twin is built from the catalog (the
# schema's own code), never from data.
_SQL_READERS: Final = """
SELECT format('km2pg.%I(%s)', p.proname, pg_get_function_identity_arguments(p.oid)),
       quote_ident(p.proname), pg_get_function_arguments(p.oid),
       pg_get_function_result(p.oid), p.proretset, p.provolatile, p.prosrc
  FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_language l ON l.oid = p.prolang
 WHERE p.pronamespace = (SELECT n.oid FROM pg_catalog.pg_namespace n WHERE n.nspname = 'km2pg')
   AND l.lanname = 'sql'
   AND p.provolatile <> 'i'
 ORDER BY 1
"""
_VOLATILITY: Final = {"s": "STABLE", "v": "VOLATILE"}


def plpgsql_twin(
    name: str, arguments: str, result: str, returns_set: bool, volatility: str, body: str
) -> str:
    """The PL/pgSQL function that runs a SQL-language function's one query: a set-returning
    function returns the query's rows, any other its one value. Output columns win over
    parameters of the same name, as in SQL functions' qualified references."""
    query = body.strip().rstrip(";").strip()
    statement = f"RETURN QUERY {query};" if returns_set else f"RETURN ({query});"
    return (
        f"CREATE OR REPLACE FUNCTION km2pg.{name}({arguments}) RETURNS {result}\n"
        f"    LANGUAGE plpgsql {_VOLATILITY[volatility]} AS $twin$\n"
        f"#variable_conflict use_column\nBEGIN\n{statement}\nEND $twin$"
    )


def adapt_functions(con: Connection) -> list[str]:
    """Replace the SQL functions Citus cannot run (those of the schema that read tables) by
    their PL/pgSQL twins; returns the signatures replaced."""
    replaced = []
    for signature, name, arguments, result, returns_set, volatility, body in con.run(_SQL_READERS):
        con.run(plpgsql_twin(name, arguments, result, returns_set, volatility, body))
        replaced.append(signature)
    return replaced


def require_coordinator_in_metadata(con: Connection) -> None:
    """The loader joins its temporary tables with reference tables on the coordinator, which
    needs the coordinator's own copy of them: Citus keeps one only on a registered coordinator
    (else "direct joins between distributed and local tables are not supported")."""
    registered = con.run("SELECT EXISTS (SELECT FROM pg_catalog.pg_dist_node WHERE groupid = 0)")
    if not registered[0][0]:
        raise SchemaError(
            "Citus: register the coordinator before km2pg distributes its tables: "
            "SELECT citus_set_coordinator_host('<its host as the workers reach it>', <port>)"
        )


def _place(con: Connection, placement: Placement) -> None:
    if placement.column is None:
        con.run("SELECT create_reference_table(CAST(:r AS regclass))", r=placement.relation)
        return
    con.run(
        "SELECT create_distributed_table(CAST(:r AS regclass), :column,"
        " colocate_with => :colocate)",
        r=placement.relation,
        column=placement.column,
        colocate=f"km2pg.{placement.colocate_with}" if placement.colocate_with else "default",
    )


# Each shard's own estimate, read on the node that holds it ('%s' is where Citus puts the
# shard's name); a table's rows are counted once however many nodes hold a copy. A shard never
# analyzed yet (reltuples -1) counts its live rows, as km2pg status does on PostgreSQL.
_SHARD_ROWS: Final = (
    "SELECT CASE WHEN c.reltuples >= 0 THEN c.reltuples ELSE coalesce(s.n_live_tup, 0) END"
    " FROM pg_class c LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid"
    " WHERE c.oid = '%s'::regclass"
)
_SIZE_AND_ROWS: Final = """
SELECT coalesce(sum(citus_total_relation_size(p.relid)), 0),
       coalesce(sum((SELECT sum(greatest(CAST(r.result AS real), 0))
                       FROM run_command_on_shards(p.relid, :command) r WHERE r.success)), 0)
  FROM (SELECT relid FROM pg_partition_tree(CAST(:r AS regclass))
        UNION SELECT CAST(:r AS regclass)) AS p
  JOIN pg_class c ON c.oid = p.relid
 WHERE c.relkind <> 'p'  -- a partitioned table's shards count their partitions' rows again
"""


def size_and_rows(con: Connection, relation: str) -> tuple[int, int]:
    """Bytes on all nodes (a reference table's copy on each counts) and estimated rows of a
    Citus table over all its partitions' shards: the coordinator's own tables are empty."""
    size, rows = con.run(_SIZE_AND_ROWS, r=relation, command=_SHARD_ROWS)[0]
    return int(size), int(rows)


def run_migration(con: Connection, sql: str) -> None:
    """Run a migration on a distributed schema (in the caller's transaction): one statement at a
    time, since Citus passes some DDL on to the workers as the text of the query it came in, and
    a migration sent whole is many statements ("cannot insert multiple commands into a prepared
    statement" on the worker); and with the functions adapted after each, so that a statement
    that reads a function the migration has just made (migration 2 fills person_property_state
    from person_properties_recomputed()) reads its PL/pgSQL twin."""
    for statement in statements(sql):
        con.run(statement)
        adapt_functions(con)


_TOKENS: Final = re.compile(
    r"""(?P<dollar>\$(?P<tag>[A-Za-z_][A-Za-z_0-9]*)?\$)"""
    r"""|(?P<skip>--[^\n]*|/\*.*?\*/|'(?:[^']|'')*'|"(?:[^"]|"")*")"""
    r"""|(?P<end>;)""",
    re.DOTALL,
)


def statements(sql: str) -> list[str]:
    """``sql`` (a migration) split into its statements: at semicolons outside strings, quoted
    names, comments and dollar-quoted bodies. Chunks holding only comments are left out."""
    found = []
    start = position = 0
    while (match := _TOKENS.search(sql, position)) is not None:
        if match["dollar"]:
            closing = sql.find(match["dollar"], match.end())
            if closing < 0:
                break  # an unterminated body: the rest is one statement, PostgreSQL will say
            position = closing + len(match["dollar"])
        elif match["skip"]:
            position = match.end()
        else:
            found.append(sql[start : match.end()])
            start = position = match.end()
    found.append(sql[start:])
    return [s.strip() for s in found if _has_code(s)]


def _has_code(chunk: str) -> bool:
    without = re.sub(r"--[^\n]*|/\*.*?\*/", "", chunk, flags=re.DOTALL)
    return bool(without.strip(" \t\r\n;"))
