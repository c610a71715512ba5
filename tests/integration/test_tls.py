"""TLS against a real PostgreSQL, with a server certificate from a test CA made here.

The embedded PostgreSQL is built without TLS ("SSL is not supported by this build"), so a small
TLS front stands before it: it listens on 127.0.0.1, answers PostgreSQL's SSLRequest, does the
TLS handshake with the test certificate, and passes the session through to the embedded server.
The client side, everything km2pg does, is exactly what a TLS-enabled server would meet. The
certificate names ``localhost`` only, so ``127.0.0.1`` is the wrong host name.
"""

from __future__ import annotations

import select
import shutil
import socket
import ssl
import struct
import tempfile
import threading
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from km2pg import db
from km2pg.cli.commands import main
from km2pg.dsn import ConnectionSettings, parse_dsn
from km2pg.errors import DatabaseUnavailable, ServerNotTrusted

SSL_REQUEST = struct.pack("!ii", 8, 80877103)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, certificate


def make_server_certificate(
    ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, dns_name: str
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(dns_name))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, certificate


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


class TlsFront:
    """Accepts only TLS connections on 127.0.0.1 and relays them to a PostgreSQL server."""

    def __init__(self, backend: ConnectionSettings, context: ssl.SSLContext) -> None:
        self.backend = backend
        self.context = context
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with client:
            if client.recv(8, socket.MSG_WAITALL) != SSL_REQUEST:
                return  # TLS only, as a hostssl-only server
            client.sendall(b"S")
            try:
                secure = self.context.wrap_socket(client, server_side=True)
            except (ssl.SSLError, OSError):
                return  # the client refused our certificate
            with secure, self._open_backend() as backend:
                self._relay(secure, backend)

    def _open_backend(self) -> socket.socket:
        path = self.backend.unix_socket
        if path is None:
            return socket.create_connection((self.backend.host, self.backend.port))
        backend = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        backend.connect(path)
        return backend

    @staticmethod
    def _relay(secure: ssl.SSLSocket, backend: socket.socket) -> None:
        with suppress(OSError):
            while True:
                # Bytes already decrypted wait inside the TLS object, unseen by select.
                ready = (
                    [secure] if secure.pending() else select.select([secure, backend], [], [])[0]
                )
                for source in ready:
                    data = source.recv(65536)
                    if not data:
                        return
                    (backend if source is secure else secure).sendall(data)


@dataclass(frozen=True)
class TlsServer:
    port: int
    ca: Path
    other_ca: Path

    def dsn(
        self,
        host: str,
        sslmode: str,
        sslrootcert: Path | str | None = None,
        database: str = "postgres",
    ) -> str:
        root = f" sslrootcert={sslrootcert}" if sslrootcert else ""
        return (
            f"host={host} port={self.port} user=postgres dbname={database} sslmode={sslmode}{root}"
        )


@pytest.fixture(scope="module")
def tls_server(pg_admin: ConnectionSettings) -> Iterator[TlsServer]:
    """The test server behind a TLS front whose certificate the test CA issued for localhost."""
    folder = Path(tempfile.mkdtemp(prefix="km2pg-tls-"))
    ca_key, ca = make_ca("km2pg test CA")
    _, other_ca = make_ca("km2pg other CA")
    server_key, server_certificate = make_server_certificate(ca_key, ca, "localhost")
    (folder / "server.pem").write_bytes(
        _pem(server_certificate)
        + server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (folder / "ca.pem").write_bytes(_pem(ca))
    (folder / "other-ca.pem").write_bytes(_pem(other_ca))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "server.pem")
    front = TlsFront(pg_admin, context)
    try:
        yield TlsServer(port=front.port, ca=folder / "ca.pem", other_ca=folder / "other-ca.pem")
    finally:
        front.close()
        shutil.rmtree(folder, ignore_errors=True)


def encrypted(dsn: str) -> bool:
    """Connected, over TLS, to the PostgreSQL behind the front."""
    with db.connection(parse_dsn(dsn)) as con:
        assert db.scalar(con, "SELECT 1") == 1
        return isinstance(con._usock, ssl.SSLSocket) and con._usock.version() is not None


def test_verify_full_with_the_right_ca_connects(tls_server: TlsServer) -> None:
    assert encrypted(tls_server.dsn("localhost", "verify-full", tls_server.ca))


def test_verify_ca_with_the_right_ca_connects_whatever_the_host_name(tls_server: TlsServer) -> None:
    assert encrypted(tls_server.dsn("127.0.0.1", "verify-ca", tls_server.ca))


@pytest.mark.parametrize("mode", ["verify-ca", "verify-full"])
def test_another_ca_fails_with_a_clear_message(tls_server: TlsServer, mode: str) -> None:
    with pytest.raises(ServerNotTrusted) as info:
        db.connect(parse_dsn(tls_server.dsn("localhost", mode, tls_server.other_ca)))
    message = str(info.value)
    assert message.startswith("the database server at postgres@localhost:")
    assert f"failed TLS verification (sslmode={mode}, sslrootcert={tls_server.other_ca})" in message
    assert message.endswith("unable to get local issuer certificate")
    assert not isinstance(info.value, DatabaseUnavailable)


def test_the_wrong_host_name_fails_with_a_clear_message(tls_server: TlsServer) -> None:
    # The certificate names localhost; 127.0.0.1 is the same server under a name it lacks.
    with pytest.raises(ServerNotTrusted) as info:
        db.connect(parse_dsn(tls_server.dsn("127.0.0.1", "verify-full", tls_server.ca)))
    message = str(info.value)
    assert "failed TLS verification (sslmode=verify-full" in message
    assert "mismatch, certificate is not valid for '127.0.0.1'" in message
    assert "\n" not in message


def test_require_still_connects_encrypted_without_any_root(tls_server: TlsServer) -> None:
    assert encrypted(tls_server.dsn("127.0.0.1", "require"))
    # It verifies nothing: a root that would fail verification is not even read.
    assert encrypted(tls_server.dsn("127.0.0.1", "require", tls_server.other_ca))


def test_the_cli_connects_with_verify_full_and_refuses_another_ca_in_one_line(
    tls_server: TlsServer, database: ConnectionSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    right = tls_server.dsn("localhost", "verify-full", tls_server.ca, database.database)
    assert main(["status", "--dsn", right]) == 0
    assert "files:" in capsys.readouterr().out
    dsn = tls_server.dsn("localhost", "verify-full", tls_server.other_ca, database.database)
    assert main(["status", "--dsn", dsn]) == 2
    err = capsys.readouterr().err
    assert err.startswith("km2pg: error: the database server at postgres@localhost:")
    assert err.count("\n") == 1
