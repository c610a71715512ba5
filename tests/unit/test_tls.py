"""TLS settings: what each sslmode verifies, the roots it trusts, and one-line errors for roots
that cannot work (raised before connecting, never as an unavailable database)."""

from __future__ import annotations

import re
import ssl
from pathlib import Path

import pytest

from km2pg import db, tls
from km2pg.dsn import ConnectionSettings, parse_dsn
from km2pg.errors import ConfigError, DatabaseUnavailable


@pytest.fixture(autouse=True)
def no_default_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """libpq's default root file does not exist unless a test makes it."""
    monkeypatch.setenv("PGSSLROOTCERT", str(tmp_path / "no-root.crt"))


def pem_of_the_rds_bundle(path: Path) -> Path:
    path.write_bytes(tls.RDS_CA_BUNDLE.read_bytes())
    return path


def test_require_encrypts_but_verifies_nothing() -> None:
    context = ConnectionSettings(host="db.example.com", sslmode="require").ssl_context()
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_NONE
    assert context.check_hostname is False


def test_require_ignores_an_unusable_root() -> None:
    settings = parse_dsn("host=db.example.com sslmode=require sslrootcert=/nonexistent/ca.pem")
    assert isinstance(settings.ssl_context(), ssl.SSLContext)


@pytest.mark.parametrize("mode", ["verify-ca", "verify-full"])
def test_verifying_modes_require_a_chain_and_verify_full_the_host_name(
    mode: str, tmp_path: Path
) -> None:
    root = pem_of_the_rds_bundle(tmp_path / "ca.pem")
    context = ConnectionSettings(host="h", sslmode=mode, sslrootcert=str(root)).ssl_context()
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is (mode == "verify-full")
    assert context.cert_store_stats()["x509_ca"] == root.read_text().count("BEGIN CERTIFICATE")


def test_sslrootcert_system_trusts_the_operating_systems_roots() -> None:
    settings = parse_dsn("host=db.example.com sslrootcert=system")
    assert settings.sslmode == "verify-full"  # as libpq 16: system implies verify-full
    context = settings.ssl_context()
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.get_ca_certs() == ssl.create_default_context().get_ca_certs()


@pytest.mark.parametrize("mode", ["require", "verify-ca"])
def test_sslrootcert_system_refuses_modes_without_the_host_name_check(mode: str) -> None:
    with pytest.raises(ConfigError, match="sslrootcert=system needs sslmode=verify-full"):
        parse_dsn(f"host=db.example.com sslmode={mode} sslrootcert=system")


def test_sslrootcert_rds_is_the_bundle_inside_the_package() -> None:
    assert tls.root_file("rds") == str(tls.RDS_CA_BUNDLE)
    package = Path(tls.__file__).resolve().parent
    assert package.parent / tls.RDS_CA_BUNDLE_PACKAGE_PATH == tls.RDS_CA_BUNDLE
    context = parse_dsn(
        "host=x.rds.amazonaws.com sslmode=verify-full sslrootcert=rds"
    ).ssl_context()
    assert isinstance(context, ssl.SSLContext)
    bundled = tls.RDS_CA_BUNDLE.read_text().count("BEGIN CERTIFICATE")
    assert bundled > 50
    assert context.cert_store_stats()["x509_ca"] == bundled


def test_libpqs_default_root_file_is_used_when_no_root_is_given(tmp_path: Path) -> None:
    root = pem_of_the_rds_bundle(tmp_path / "no-root.crt")  # the fixture's PGSSLROOTCERT
    context = parse_dsn("host=h sslmode=verify-ca").ssl_context()
    assert isinstance(context, ssl.SSLContext)
    assert context.cert_store_stats()["x509_ca"] == root.read_text().count("BEGIN CERTIFICATE")


@pytest.mark.parametrize("mode", ["verify-ca", "verify-full"])
def test_a_verifying_mode_without_a_root_says_what_to_give(mode: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_dsn(f"host=h sslmode={mode}").ssl_context()
    message = str(info.value)
    assert f"sslmode={mode} needs sslrootcert" in message
    assert "'system'" in message
    assert "'rds'" in message
    assert "\n" not in message


def test_a_missing_root_file_is_named() -> None:
    with pytest.raises(ConfigError, match=r"^sslrootcert file /nonexistent/ca.pem not found$"):
        parse_dsn("host=h sslmode=verify-full sslrootcert=/nonexistent/ca.pem")
    settings = ConnectionSettings(host="h", sslmode="verify-ca", sslrootcert="/nonexistent/ca.pem")
    with pytest.raises(ConfigError, match=r"^sslrootcert file /nonexistent/ca.pem not found$"):
        settings.ssl_context()


def test_a_root_file_without_pem_is_named(tmp_path: Path) -> None:
    for name, content in {"empty.pem": b"", "der.pem": b"\x30\x82\x01\x0a garbage"}.items():
        path = tmp_path / name
        path.write_bytes(content)
        settings = parse_dsn(f"host=h sslmode=verify-full sslrootcert={path}")
        with pytest.raises(
            ConfigError, match=f"^sslrootcert file {re.escape(str(path))} holds no PEM"
        ):
            settings.ssl_context()


def test_an_unreadable_root_is_named(tmp_path: Path) -> None:
    settings = parse_dsn(f"host=h sslmode=verify-full sslrootcert={tmp_path}")
    with pytest.raises(
        ConfigError, match=f"^sslrootcert file {re.escape(str(tmp_path))} cannot be read: "
    ):
        settings.ssl_context()


def test_a_missing_rds_bundle_says_to_reinstall(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tls, "RDS_CA_BUNDLE", Path("/nonexistent/rds-global-bundle.pem"))
    with pytest.raises(
        ConfigError, match=r"bundled Amazon RDS CA file \(reinstall km2pg\) not found"
    ):
        parse_dsn("host=h sslmode=verify-full sslrootcert=rds").ssl_context()


def test_an_unusable_root_fails_connect_as_a_configuration_error_not_as_unavailable() -> None:
    # Port 1 on loopback refuses at once: had connect opened a socket first, this would be
    # "database unavailable", which the loader retries until the dead-letter queue.
    settings = ConnectionSettings(
        host="127.0.0.1", port=1, sslmode="verify-full", sslrootcert="/nonexistent/ca.pem"
    )
    with pytest.raises(ConfigError, match="not found") as info:
        db.connect(settings)
    assert not isinstance(info.value, DatabaseUnavailable)
