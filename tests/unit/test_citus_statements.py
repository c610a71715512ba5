"""Citus helpers that need no cluster: migrations split into statements (km2pg.citus.statements)
and the PL/pgSQL twins of SQL functions (km2pg.citus.plpgsql_twin)."""

from __future__ import annotations

from km2pg import citus, db


def test_semicolons_in_strings_comments_and_dollar_bodies_do_not_split() -> None:
    sql = (
        "-- header; not a statement\n"
        "SELECT ';' AS \"a;b\";\n"
        "/* block; comment */ CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$\n"
        "BEGIN RETURN (SELECT $q$;$q$ IS NOT NULL)::int; END $$;\n"
        "COMMENT ON FUNCTION f() IS 'it''s; fine';\n"
        "-- trailing comment only\n"
    )
    assert citus.statements(sql) == [
        "-- header; not a statement\nSELECT ';' AS \"a;b\";",
        "/* block; comment */ CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$\n"
        "BEGIN RETURN (SELECT $q$;$q$ IS NOT NULL)::int; END $$;",
        "COMMENT ON FUNCTION f() IS 'it''s; fine';",
    ]


def test_every_migration_splits_into_whole_statements() -> None:
    for migration in db.migrations():
        parts = citus.statements(migration.sql)
        assert len(parts) > 1, migration.name
        assert all(part.endswith(";") for part in parts), migration.name
        # No function body was cut: every $$ is still there, an even number in each part.
        assert sum(part.count("$$") for part in parts) == migration.sql.count("$$")
        assert all(part.count("$$") % 2 == 0 for part in parts), migration.name


def test_a_scalar_twin_returns_the_value_and_a_set_twin_the_rows() -> None:
    scalar = citus.plpgsql_twin("f", "x integer", "text", False, "s", " SELECT 'a' ;\n")
    rows = citus.plpgsql_twin("g", "", "TABLE(a integer)", True, "v", "SELECT 1")
    assert "RETURN (SELECT 'a');" in scalar
    assert "LANGUAGE plpgsql STABLE" in scalar
    assert "RETURN QUERY SELECT 1;" in rows
    assert "LANGUAGE plpgsql VOLATILE" in rows
