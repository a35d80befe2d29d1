"""The secured local broker's configuration, certificates and SCRAM credentials, without a
broker (the integration tests in tests/integration/test_secured.py run it)."""

from __future__ import annotations

import base64
import hashlib
import re
import ssl
import stat
from pathlib import Path

import pytest

from streams.devtools.kafka_security import (
    ADMIN,
    BROKER,
    SCRAM_ITERATIONS,
    USERS,
    WORKER,
    Secrets,
    Security,
    connection_for,
    scram_format_args,
    server_properties,
    settings_env,
    write_env_files,
)
from streams.settings import SecurityProtocol, load_settings


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> Secrets:
    return Secrets.load_or_create(tmp_path_factory.mktemp("secrets"), ("127.0.0.1",))


def test_secrets_are_made_once_and_readable_by_their_owner_only(secrets: Secrets) -> None:
    again = Secrets.load_or_create(secrets.directory, ("127.0.0.1",))
    assert again.passwords == secrets.passwords
    assert set(secrets.passwords) == set(USERS)
    for path in [secrets.directory / "passwords.json", *secrets.directory.glob("*-key.pem")]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_the_broker_certificate_is_signed_by_the_ca_and_names_the_host(secrets: Secrets) -> None:
    cert, key = secrets.cert(BROKER)
    context = ssl.create_default_context(cafile=str(secrets.ca_file))
    context.load_cert_chain(str(cert), str(key))  # the key belongs to the certificate
    decoded = ssl._ssl._test_decode_cert(str(cert))  # type: ignore[attr-defined]
    assert ("IP Address", "127.0.0.1") in decoded["subjectAltName"]
    assert ("DNS", "localhost") in decoded["subjectAltName"]
    assert decoded["subject"] == ((("commonName", BROKER),),)
    worker = ssl._ssl._test_decode_cert(str(secrets.cert(WORKER)[0]))  # type: ignore[attr-defined]
    assert worker["subject"] == ((("commonName", WORKER),),)  # CN = principal under mutual TLS


def test_scram_credentials_are_salted_here_and_carry_no_password(secrets: Secrets) -> None:
    args = scram_format_args(secrets)
    text = " ".join(args)
    for password in secrets.passwords.values():
        assert password not in text
    entries = [a for a in args if a != "--add-scram"]
    assert len(entries) == 2 * len(USERS)  # SCRAM-SHA-512 and SCRAM-SHA-256 for each user
    found = re.match(
        r'SCRAM-SHA-512=\[name=(\w+),iterations=(\d+),salt="([^"]+)",saltedpassword="([^"]+)"\]',
        entries[0],
    )
    assert found is not None
    user, iterations, salt, salted = found.groups()
    expected = hashlib.pbkdf2_hmac(
        "sha512", secrets.passwords[user].encode(), base64.b64decode(salt), int(iterations)
    )
    assert base64.b64decode(salted) == expected  # RFC 5802 SaltedPassword
    assert int(iterations) == SCRAM_ITERATIONS


def _properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line)


def test_server_properties_secure_every_listener(secrets: Secrets, tmp_path: Path) -> None:
    listeners = [(Security.SASL_SSL, 9093), (Security.SSL, 9095), (Security.SASL_PLAINTEXT, 9096)]
    props = _properties(server_properties(listeners, "127.0.0.1", 9094, tmp_path, secrets))
    assert props["listeners"] == (
        "SASL_SSL://127.0.0.1:9093,SSL://127.0.0.1:9095,SASL_PLAINTEXT://127.0.0.1:9096,"
        "CONTROLLER://127.0.0.1:9094"
    )
    assert "PLAINTEXT:PLAINTEXT" not in props["listener.security.protocol.map"]
    assert props["listener.security.protocol.map"].endswith("CONTROLLER:SASL_PLAINTEXT")
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == "User:broker;User:admin"
    assert props["listener.name.ssl.ssl.client.auth"] == "required"
    for listener in ("sasl_ssl", "sasl_plaintext"):
        assert props[f"listener.name.{listener}.sasl.enabled.mechanisms"] == (
            "SCRAM-SHA-512,SCRAM-SHA-256,PLAIN"
        )
    # The PEM key and chain are one properties value each, newlines escaped.
    assert props["ssl.keystore.key"].startswith("-----BEGIN PRIVATE KEY-----\\n")
    assert props["ssl.keystore.certificate.chain"].count("BEGIN CERTIFICATE") == 2


def test_env_files_describe_each_user_and_load_as_settings(
    secrets: Secrets, tmp_path: Path
) -> None:
    paths = write_env_files(Security.SSL, "127.0.0.1:9095", secrets)
    assert set(paths) == set(USERS) - {BROKER}
    env = dict(line.split("=", 1) for line in paths[WORKER].read_text().splitlines())
    settings = load_settings(**{k.removeprefix("INTENTFLOW_").lower(): v for k, v in env.items()})
    assert settings.kafka_security_protocol is SecurityProtocol.SSL
    assert settings.kafka_ssl_certfile == secrets.cert(WORKER)[0]
    assert settings.kafka_sasl_password is None
    sasl = settings_env(connection_for(Security.SASL_SSL, "h:1", ADMIN, secrets))
    assert sasl["INTENTFLOW_KAFKA_SASL_PASSWORD"] == secrets.passwords[ADMIN]
    assert sasl["INTENTFLOW_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert stat.S_IMODE(paths[WORKER].stat().st_mode) == 0o600
