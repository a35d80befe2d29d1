"""A throwaway certificate authority for the local broker: its CA, the broker's certificate and
client certificates for mutual TLS, all PEM files made with Python's ``cryptography``.

The broker reads PEM directly (``ssl.keystore.type=PEM``, Kafka 2.7+), and so do Python's
``ssl``, kafka-python and librdkafka, so no JKS or PKCS#12 store is needed. Keys are RSA 2048,
unencrypted (Kafka reads an unencrypted PEM key only inline in its properties, which is where it
goes), in files only their owner can read. Nothing here is fit for production: the CA key sits
beside the certificates it signs.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from streams.errors import ToolMissingError

VALID_DAYS = 365


@dataclass(frozen=True)
class Identity:
    """A certificate and its private key, as PEM files."""

    cert: Path
    key: Path


def _crypto():  # type: ignore[no-untyped-def]
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ModuleNotFoundError:
        raise ToolMissingError(
            "a secured local broker needs Python's `cryptography` package for its throwaway "
            "certificates: pip install cryptography"
        ) from None
    return x509, hashes, serialization, rsa, ExtendedKeyUsageOID, NameOID


def write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


class CertificateAuthority:
    """A CA under ``directory`` (``ca.pem``, ``ca-key.pem``), made on first use, reused after."""

    def __init__(self, directory: Path, name: str = "intentflow local CA") -> None:
        self.directory = directory
        self.cert_path = directory / "ca.pem"
        self.key_path = directory / "ca-key.pem"
        if not (self.cert_path.exists() and self.key_path.exists()):
            self._create(name)

    def _create(self, name: str) -> None:
        x509, hashes, serialization, rsa, _, NameOID = _crypto()  # noqa: N806
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
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
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        write_private(self.key_path, _pkcs8(key, serialization))
        self.cert_path.parent.mkdir(parents=True, exist_ok=True)
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        common_name: str,
        *,
        server_names: tuple[str, ...] = (),
        client: bool = True,
        name: str | None = None,
    ) -> Identity:
        """A certificate for ``common_name`` signed by this CA (``<name>.pem`` and
        ``<name>-key.pem``). ``server_names`` (host names or IP addresses) make it a server
        certificate valid for those names; ``client`` allows client authentication."""
        x509, hashes, serialization, rsa, EKU, NameOID = _crypto()  # noqa: N806
        ca_key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        ca_cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = dt.datetime.now(dt.UTC)
        usages = ([EKU.SERVER_AUTH] if server_names else []) + ([EKU.CLIENT_AUTH] if client else [])
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), False
            )
        )
        if server_names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_general_name(x509, n) for n in server_names]),
                critical=False,
            )
        cert = builder.sign(ca_key, hashes.SHA256())
        stem = name or common_name
        identity = Identity(self.directory / f"{stem}.pem", self.directory / f"{stem}-key.pem")
        write_private(identity.key, _pkcs8(key, serialization))
        identity.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return identity


def _pkcs8(key: object, serialization: object) -> bytes:
    s = serialization
    return key.private_bytes(  # type: ignore[attr-defined]
        encoding=s.Encoding.PEM,  # type: ignore[attr-defined]
        format=s.PrivateFormat.PKCS8,  # type: ignore[attr-defined]
        encryption_algorithm=s.NoEncryption(),  # type: ignore[attr-defined]
    )


def _general_name(x509: object, name: str) -> object:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))  # type: ignore[attr-defined]
    except ValueError:
        return x509.DNSName(name)  # type: ignore[attr-defined]
