"""Parsing database DSNs: both forms, defaults, validation, and the password kept out of sight."""

from __future__ import annotations

import ssl

import pytest

from km2pg.contract import SSLMODES
from km2pg.dsn import ConnectionSettings, parse_dsn, settings_from_values
from km2pg.errors import ConfigError

SECRET = "s3cr3t-Pw"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PGPASSWORD", "PGUSER"):
        monkeypatch.delenv(name, raising=False)


# ---------------------------------------------------------------------------------------------
# URI form


def test_uri_with_every_part() -> None:
    s = parse_dsn("postgresql://alice:pw@db.example.com:6543/analytics?sslmode=verify-full")
    assert (s.host, s.port, s.database, s.user, s.password, s.sslmode) == (
        "db.example.com",
        6543,
        "analytics",
        "alice",
        "pw",
        "verify-full",
    )


def test_postgres_scheme_is_accepted_too() -> None:
    assert parse_dsn("postgres://bob@h/db").user == "bob"


def test_uri_defaults() -> None:
    s = parse_dsn("postgresql://")
    assert (s.host, s.port, s.user, s.database, s.password) == (
        "localhost",
        5432,
        "postgres",
        "postgres",
        None,
    )
    assert s.sslmode == "disable"
    assert s.connect_timeout == 10.0
    assert s.application_name == "km2pg"


def test_database_defaults_to_the_user_name() -> None:
    assert parse_dsn("postgresql://carol@h").database == "carol"
    assert parse_dsn("host=h user=carol").database == "carol"


def test_uri_percent_encoded_password_and_user() -> None:
    s = parse_dsn("postgresql://us%40er:p%40ss%3Aw%2Fo%23rd%20x@h/d%20b")
    assert s.user == "us@er"
    assert s.password == "p@ss:w/o#rd x"
    assert s.database == "d b"


def test_uri_query_parameters() -> None:
    s = parse_dsn(
        "postgresql://u@h/db?sslmode=verify-ca&connect_timeout=3&application_name=app"
        "&options=-c%20search_path%3Dx"
    )
    assert s.sslmode == "verify-ca"
    assert s.connect_timeout == 3.0
    assert s.application_name == "app"
    assert s.options == "-c search_path=x"


def test_options_reach_the_uri_and_back() -> None:
    s = parse_dsn("host=/tmp/x dbname=d options='-c statement_timeout=5s -c lock_timeout=1s'")
    assert s.options == "-c statement_timeout=5s -c lock_timeout=1s"
    assert parse_dsn(s.uri()) == s
    assert parse_dsn("host=h options=''").options is None


def test_uri_unix_socket_host_in_the_query() -> None:
    s = parse_dsn("postgresql://u@/db?host=/tmp/x")
    assert s.host == "/tmp/x"
    assert s.unix_socket == "/tmp/x/.s.PGSQL.5432"
    assert s.sslmode == "disable"
    assert s.ssl_context() is False
    assert s.describe() == "u@socket /tmp/x:5432/db"


def test_uri_unix_socket_with_port_and_trailing_slash() -> None:
    s = parse_dsn("postgresql://u@/db?host=/var/run/postgresql/&port=5433")
    assert s.unix_socket == "/var/run/postgresql/.s.PGSQL.5433"


def test_uri_percent_encoded_socket_host() -> None:
    s = parse_dsn("postgresql://u@%2Fvar%2Frun%2FPG/db")
    assert s.host == "/var/run/PG"
    assert s.unix_socket == "/var/run/PG/.s.PGSQL.5432"


def test_uri_ipv6_host() -> None:
    s = parse_dsn("postgresql://u@[::1]:5433/db")
    assert s.host == "::1"
    assert s.port == 5433
    assert s.sslmode == "disable"
    assert s.uri() == "postgresql://u@[::1]:5433/db?sslmode=disable"


def test_uri_round_trip_without_the_password() -> None:
    s = parse_dsn(f"postgresql://al%20ice:{SECRET}@h:1/d%2Fb?sslmode=prefer")
    assert SECRET not in s.uri()
    again = parse_dsn(s.uri())
    assert again == ConnectionSettings(
        host="h", port=1, database="d/b", user="al ice", sslmode="prefer"
    )


def test_uri_of_a_socket_names_host_and_port() -> None:
    s = parse_dsn("postgresql://u@/db?host=/tmp/x&port=7")
    assert s.uri() == "postgresql://u@/db?host=/tmp/x&port=7"
    assert parse_dsn(s.uri()).unix_socket == "/tmp/x/.s.PGSQL.7"


# ---------------------------------------------------------------------------------------------
# key=value form


def test_keyword_dsn() -> None:
    s = parse_dsn("host=db.example.com port=6000 dbname=a user=b password=c sslmode=prefer")
    assert (s.host, s.port, s.database, s.user, s.password, s.sslmode) == (
        "db.example.com",
        6000,
        "a",
        "b",
        "c",
        "prefer",
    )


def test_keyword_dsn_with_quoted_values() -> None:
    s = parse_dsn("host=h password='a b=c' application_name='my app' options=''")
    assert s.password == "a b=c"
    assert s.application_name == "my app"


@pytest.mark.parametrize(
    ("dsn", "password"),
    [("host=h password='it\\'s'", "it's"), ("host=h password='a\\\\b'", "a\\b")],
)
def test_keyword_dsn_quoted_value_escapes_follow_libpq(dsn: str, password: str) -> None:
    assert parse_dsn(dsn).password == password


def test_keyword_dsn_unix_socket() -> None:
    s = parse_dsn("host=/tmp/sock dbname=x")
    assert s.unix_socket == "/tmp/sock/.s.PGSQL.5432"
    assert s.sslmode == "disable"


def test_keyword_hostaddr_is_used_when_host_is_missing() -> None:
    assert parse_dsn("hostaddr=10.0.0.1").host == "10.0.0.1"


def test_an_empty_dsn_is_an_error() -> None:
    with pytest.raises(ConfigError, match="empty"):
        parse_dsn("   ")


def test_a_dsn_of_neither_form_is_an_error() -> None:
    with pytest.raises(ConfigError, match="neither"):
        parse_dsn("mysql://u@h/db")


def test_an_unbalanced_quote_is_an_error() -> None:
    with pytest.raises(ConfigError, match="unbalanced quote"):
        parse_dsn("host=h password='abc")


def test_a_part_without_equals_is_an_error() -> None:
    with pytest.raises(ConfigError, match="not a list of key=value pairs"):
        parse_dsn("host=h dbname")


# ---------------------------------------------------------------------------------------------
# sslmode


@pytest.mark.parametrize(
    "dsn",
    [
        "host=localhost",
        "host=127.0.0.1",
        "host=::1",
        "host=/tmp",
        "postgresql://localhost/db",
        "postgresql://127.0.0.1:5432/db",
        "postgresql://[::1]/db",
        "postgresql:///db?host=/var/run/postgresql",
        "dbname=x",
    ],
)
def test_sslmode_defaults_to_disable_for_local_connections(dsn: str) -> None:
    assert parse_dsn(dsn).sslmode == "disable"


@pytest.mark.parametrize(
    "dsn",
    [
        "host=db.example.com",
        "host=10.0.0.5",
        "postgresql://db.example.com/x",
        "postgresql://[2001:db8::1]/x",
        "hostaddr=192.168.1.1",
    ],
)
def test_sslmode_defaults_to_require_otherwise(dsn: str) -> None:
    assert parse_dsn(dsn).sslmode == "require"


def test_an_explicit_sslmode_wins_over_the_default() -> None:
    assert parse_dsn("host=localhost sslmode=require").sslmode == "require"
    assert parse_dsn("host=db.example.com sslmode=disable").sslmode == "disable"


def test_an_unknown_sslmode_is_an_error() -> None:
    with pytest.raises(ConfigError, match="unknown sslmode 'on'"):
        parse_dsn("host=h sslmode=on")


def test_a_missing_sslrootcert_is_an_error_for_verifying_modes() -> None:
    with pytest.raises(ConfigError, match="sslrootcert file not found"):
        parse_dsn("host=h sslmode=verify-full sslrootcert=/nonexistent/ca.pem")
    # Not checked when it would not be used.
    assert parse_dsn("host=h sslmode=require sslrootcert=/nonexistent/ca.pem").sslmode == "require"


def test_ssl_context_per_mode() -> None:
    def context(mode: str, host: str = "db.example.com") -> object:
        return ConnectionSettings(host=host, sslmode=mode).ssl_context()

    assert context("disable") is False
    assert context("allow") is None
    assert context("prefer") is None
    assert context("require") is True
    for mode in ("verify-ca", "verify-full"):
        ctx = context(mode)
        assert isinstance(ctx, ssl.SSLContext)
        assert ctx.verify_mode == ssl.CERT_REQUIRED
        assert ctx.check_hostname is (mode == "verify-full")
    # A unix socket never uses TLS, whatever the mode says.
    assert context("require", host="/tmp") is False
    assert context("verify-full", host="/tmp") is False


def test_sslmodes_are_libpqs() -> None:
    assert set(SSLMODES) == {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}


# ---------------------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize(
    "dsn", ["host=h foo=1", "postgresql://u@h/db?foo=1", "postgresql://u@h/db?sslmode=require&x"]
)
def test_unknown_parameters_are_an_error(dsn: str) -> None:
    with pytest.raises(ConfigError, match="unknown DSN parameter"):
        parse_dsn(dsn)


def test_unknown_parameters_are_all_named() -> None:
    with pytest.raises(ConfigError, match="unknown DSN parameter\\(s\\): a, b"):
        parse_dsn("host=h b=1 a=2")


@pytest.mark.parametrize(
    ("dsn", "message"),
    [
        ("host=h port=abc", "port is not a number"),
        ("host=h port=0", "port is out of range"),
        ("host=h port=70000", "port is out of range"),
        ("host=h port=-1", "port is out of range"),
        ("postgresql://u@h:abc/db", "not a valid URI"),
        ("postgresql://u@h:70000/db", "not a valid URI"),
        ("postgresql://u@h:0/db", "port is out of range"),
        ("postgresql://u@h/db?port=x", "port is not a number"),
    ],
)
def test_a_bad_port_is_an_error(dsn: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_dsn(dsn)


def test_a_bad_connect_timeout_is_an_error() -> None:
    with pytest.raises(ConfigError, match="connect_timeout"):
        parse_dsn("host=h connect_timeout=soon")


def test_a_non_positive_connect_timeout_falls_back_to_ten_seconds() -> None:
    assert parse_dsn("host=h connect_timeout=0").connect_timeout == 10.0
    assert parse_dsn("host=h connect_timeout=-3").connect_timeout == 10.0


def test_settings_from_values_validates_like_a_dsn() -> None:
    s = settings_from_values({"host": "h", "port": "5", "password": "x"})
    assert (s.host, s.port, s.password) == ("h", 5, "x")
    with pytest.raises(ConfigError):
        settings_from_values({"hots": "h"})


def test_with_database_changes_only_the_database() -> None:
    s = parse_dsn("postgresql://u:pw@h/a")
    t = s.with_database("b")
    assert t.database == "b"
    assert (t.host, t.user, t.password) == (s.host, s.user, s.password)


# ---------------------------------------------------------------------------------------------
# PGPASSWORD and PGUSER


def test_pgpassword_is_used_when_the_dsn_has_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", "from-env")
    assert parse_dsn("host=h").password == "from-env"
    assert parse_dsn("postgresql://u@h/db").password == "from-env"


def test_a_password_in_the_dsn_wins_over_pgpassword(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", "from-env")
    assert parse_dsn("host=h password=inline").password == "inline"
    assert parse_dsn("postgresql://u:inline@h/db").password == "inline"


def test_no_password_anywhere_is_none() -> None:
    assert parse_dsn("host=h").password is None
    assert parse_dsn("host=h password=").password is None


def test_pguser_is_the_default_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGUSER", "envuser")
    s = parse_dsn("host=h")
    assert s.user == "envuser"
    assert s.database == "envuser"


# ---------------------------------------------------------------------------------------------
# The password stays hidden


@pytest.mark.parametrize(
    "dsn",
    [
        f"postgresql://u:{SECRET}@db.example.com/x",
        f"postgresql://u:{SECRET}@/x?host=/tmp",
        f"host=db.example.com password={SECRET}",
        f"host=db.example.com password='{SECRET}'",
    ],
)
def test_the_password_is_never_in_repr_describe_or_uri(dsn: str) -> None:
    s = parse_dsn(dsn)
    assert s.password == SECRET
    assert SECRET not in repr(s)
    assert SECRET not in str(s)
    assert SECRET not in s.describe()
    assert SECRET not in s.uri()


def test_the_password_from_pgpassword_is_never_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", SECRET)
    s = parse_dsn("host=h")
    assert SECRET not in repr(s)
    assert SECRET not in s.describe()


@pytest.mark.parametrize(
    "dsn",
    [
        f"postgresql://u:{SECRET}@h:abc/db",
        f"postgresql://u:{SECRET}@h:99999/db",
        f"postgresql://u:{SECRET}@[::1/db",
        f"postgresql://u:{SECRET}@h/db?sslmode=bogus",
        f"postgresql://u:{SECRET}@h/db?bogus=1",
        f"postgresql://u:{SECRET}@h/db?port=x",
        f"postgresql://u:{SECRET}@h/db?connect_timeout=x",
        f"postgresql://u:{SECRET}@h:0/db",
        f"host=h password={SECRET} port=abc",
        f"host=h password={SECRET} sslmode=on",
        f"host=h password={SECRET} bogus=1",
        f"host=h password='{SECRET}",
        f"host=h password={SECRET} dangling",
        f"host=h password={SECRET} =x",
        f"password={SECRET} port=0",
        f"{SECRET}",
        f"mysql://u:{SECRET}@h/db",
        f"host=h password={SECRET} sslmode=verify-ca sslrootcert=/nonexistent",
    ],
)
def test_the_password_is_never_in_an_error_message(dsn: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_dsn(dsn)
    assert SECRET not in str(info.value)
    assert "\n" not in str(info.value)


def test_blanks_around_equals_are_allowed_as_in_libpq() -> None:
    settings = parse_dsn(f"host = db.example.com password= {SECRET} dbname =x")
    assert (settings.host, settings.password, settings.database) == ("db.example.com", SECRET, "x")
    assert SECRET not in repr(settings)


@pytest.mark.parametrize("cut", ["/", "#", "?"])
def test_the_password_is_not_in_the_error_for_an_unencoded_uri_delimiter(cut: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_dsn(f"postgresql://u:{SECRET}{cut}x@db.example.com/db")
    assert SECRET not in str(info.value)
