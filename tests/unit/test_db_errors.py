"""Driver errors become km2pg's, with one line that says what happened (the reason a server
gives for closing a connection is checked against a real server in tests/faults)."""

from __future__ import annotations

from pg8000.exceptions import DatabaseError, InterfaceError

from km2pg import db
from km2pg.dsn import ConnectionSettings
from km2pg.errors import DatabaseUnavailable


def test_a_lost_connection_says_so_and_names_the_server() -> None:
    settings = ConnectionSettings(host="db.example.com", database="d", user="u")
    error = db.translate(InterfaceError("network error"), settings)
    assert isinstance(error, DatabaseUnavailable)
    assert (
        str(error)
        == "database unavailable (u@db.example.com:5432/d): connection lost (network error)"
    )


def test_a_statement_timeout_is_transient_with_the_servers_message() -> None:
    timeout = DatabaseError(
        {"S": "ERROR", "C": "57014", "M": "canceling statement due to statement timeout"}
    )
    error = db.translate(timeout)
    assert isinstance(error, DatabaseUnavailable)
    assert str(error) == "database unavailable: canceling statement due to statement timeout"
