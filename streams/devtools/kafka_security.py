"""Security of the local broker: its listeners, throwaway TLS material, SCRAM users and ACLs.

``intentflow kafka start --security sasl_ssl|ssl|sasl_plaintext`` starts the same KRaft broker
as the plaintext one, with:

* a client listener of that protocol. SASL listeners take SCRAM-SHA-512, SCRAM-SHA-256 and
  PLAIN; the SSL listener requires a client certificate (mutual TLS), whose CN is the principal;
* a throwaway CA and a broker certificate for the host (``streams.devtools.certs``), and a
  client certificate per user for mutual TLS;
* SCRAM credentials created when the storage is formatted (salted here: no password on a
  command line);
* ``StandardAuthorizer`` with no access unless an ACL allows it. ``broker`` and ``admin`` are
  super users; ``intentflow`` (the worker), ``simulator`` and ``marketing`` get only the ACLs
  of ``streams.kafka.access``;
* a controller listener with SASL PLAIN, bound like the others, so nothing is anonymous.

Everything lives under ``<home>/secrets`` (files only their owner can read): ``ca.pem``, one
``<user>.env`` per user with the ``INTENTFLOW_KAFKA_*`` settings that connect as that user, and
for mutual TLS ``<user>.pem`` and ``<user>-key.pem``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pydantic import SecretStr

from streams.devtools.certs import CertificateAuthority, write_private
from streams.kafka.connection import KafkaConnection
from streams.settings import SaslMechanism, SecurityProtocol, Settings


class Security(StrEnum):
    """What protects the local broker's client listener."""

    NONE = "none"
    SASL_SSL = "sasl_ssl"
    SSL = "ssl"
    SASL_PLAINTEXT = "sasl_plaintext"

    @property
    def protocol(self) -> SecurityProtocol:
        return (
            SecurityProtocol.PLAINTEXT if self is Security.NONE else SecurityProtocol(self.upper())
        )

    @property
    def sasl(self) -> bool:
        return self in (Security.SASL_SSL, Security.SASL_PLAINTEXT)

    @property
    def tls(self) -> bool:
        return self in (Security.SASL_SSL, Security.SSL)


BROKER = "broker"  # the broker's own principal (inter-broker and controller traffic)
ADMIN = "admin"  # tooling: topics, ACLs, test harnesses
WORKER = "intentflow"  # intentflow worker
SIMULATOR = "simulator"  # writes the input topic
MARKETING = "marketing"  # reads scores (intentflow scores, examples/score_consumer.py)
PRIVACY = "privacy"  # intentflow erase: sends erase commands, reads receipts
SUPER_USERS = (BROKER, ADMIN)
USERS = (BROKER, ADMIN, WORKER, SIMULATOR, MARKETING, PRIVACY)
SCRAM_ITERATIONS = 8192
_MECHANISMS = "SCRAM-SHA-512,SCRAM-SHA-256,PLAIN"


@dataclass(frozen=True)
class Secrets:
    """The TLS material and passwords of one broker home (made once, reused on restart)."""

    directory: Path
    passwords: dict[str, str]
    ca: CertificateAuthority

    @classmethod
    def load_or_create(cls, directory: Path, hosts: tuple[str, ...]) -> Secrets:
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        path = directory / "passwords.json"
        if path.exists():
            passwords = json.loads(path.read_text())
        else:
            passwords = {user: secrets.token_urlsafe(18) for user in USERS}
            write_private(path, json.dumps(passwords, indent=1).encode())
        ca = CertificateAuthority(directory)
        if not (directory / f"{BROKER}.pem").exists():
            names = tuple(dict.fromkeys((*hosts, "localhost", "127.0.0.1")))
            for user in USERS:  # client certificates for mutual TLS; the broker's serves too
                ca.issue(user, server_names=names if user == BROKER else ())
        return cls(directory, passwords, ca)

    @property
    def users(self) -> tuple[str, ...]:
        """The users these secrets were made for (a home made by an older intentflow may
        lack a newer user: delete it and start the broker again to get every one)."""
        return tuple(u for u in USERS if u in self.passwords)

    @property
    def ca_file(self) -> Path:
        return self.ca.cert_path

    def cert(self, user: str) -> tuple[Path, Path]:
        return self.directory / f"{user}.pem", self.directory / f"{user}-key.pem"


def connection_for(
    security: Security,
    bootstrap: str,
    user: str,
    secrets_: Secrets,
    mechanism: SaslMechanism = SaslMechanism.SCRAM_SHA_512,
) -> KafkaConnection:
    """How ``user`` connects to a listener of ``security`` at ``bootstrap``."""
    sasl = security.sasl
    cert, key = secrets_.cert(user) if security is Security.SSL else (None, None)
    return KafkaConnection(
        bootstrap_servers=tuple(bootstrap.split(",")),
        security_protocol=security.protocol,
        sasl_mechanism=mechanism if sasl else None,
        sasl_username=user if sasl else None,
        sasl_password=SecretStr(secrets_.passwords[user]) if sasl else None,
        ssl_cafile=secrets_.ca_file if security.tls else None,
        ssl_certfile=cert,
        ssl_keyfile=key,
    )


def settings_env(conn: KafkaConnection) -> dict[str, str]:
    """The ``INTENTFLOW_KAFKA_*`` variables that describe ``conn``."""
    env = {
        "INTENTFLOW_KAFKA_BOOTSTRAP": conn.bootstrap,
        "INTENTFLOW_KAFKA_SECURITY_PROTOCOL": conn.security_protocol.value,
    }
    if conn.sasl_mechanism is not None and conn.sasl_password is not None:
        env["INTENTFLOW_KAFKA_SASL_MECHANISM"] = conn.sasl_mechanism.value
        env["INTENTFLOW_KAFKA_SASL_USERNAME"] = conn.sasl_username or ""
        env["INTENTFLOW_KAFKA_SASL_PASSWORD"] = conn.sasl_password.get_secret_value()
    for name, path in (
        ("SSL_CAFILE", conn.ssl_cafile),
        ("SSL_CERTFILE", conn.ssl_certfile),
        ("SSL_KEYFILE", conn.ssl_keyfile),
    ):
        if path is not None:
            env[f"INTENTFLOW_KAFKA_{name}"] = str(path)
    return env


def write_env_files(security: Security, bootstrap: str, secrets_: Secrets) -> dict[str, Path]:
    """One ``<user>.env`` per user (not the broker's own), ready for ``set -a; . file``."""
    out = {}
    for user in secrets_.users:
        if user == BROKER:
            continue
        env = settings_env(connection_for(security, bootstrap, user, secrets_))
        path = secrets_.directory / f"{user}.env"
        write_private(path, "".join(f"{k}={v}\n" for k, v in env.items()).encode())
        out[user] = path
    return out


def scram_format_args(secrets_: Secrets) -> list[str]:
    """``--add-scram`` arguments of ``StorageTool format``: every user's SCRAM-SHA-512 and
    SCRAM-SHA-256 credential, salted here so no password appears on a command line."""
    args = []
    for user in secrets_.users:
        password = secrets_.passwords[user].encode()
        for mechanism, digest in (("SCRAM-SHA-512", "sha512"), ("SCRAM-SHA-256", "sha256")):
            salt = secrets.token_bytes(16)
            salted = hashlib.pbkdf2_hmac(digest, password, salt, SCRAM_ITERATIONS)
            args += [
                "--add-scram",
                f"{mechanism}=[name={user},iterations={SCRAM_ITERATIONS},"
                f'salt="{base64.b64encode(salt).decode()}",'
                f'saltedpassword="{base64.b64encode(salted).decode()}"]',
            ]
    return args


def _one_line(pem: bytes) -> str:
    """PEM as one properties value, its newlines escaped (``\\n``: Properties.load reads them
    back as newlines, which Kafka's PEM parser needs between the blocks of a chain)."""
    return pem.decode().strip().replace("\n", "\\n")


def _plain_jaas(secrets_: Secrets, users: tuple[str, ...]) -> str:
    me = secrets_.passwords[BROKER]
    known = " ".join(f'user_{u}="{secrets_.passwords[u]}"' for u in users)
    return (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="{BROKER}" password="{me}" {known};'
    )


def server_properties(
    listeners: list[tuple[Security, int]],
    host: str,
    controller_port: int,
    data: Path,
    secrets_: Secrets,
    *,
    bind: str | None = None,
) -> str:
    """``server.properties`` of a secured single-node KRaft broker with one client listener per
    ``(security, port)`` (see the module doc); the first also carries inter-broker traffic.
    Clients reach it at ``host``; it binds ``bind`` (default: ``host``; ``0.0.0.0`` in a
    container, whose name is not one of its addresses)."""
    names = [security.protocol.value for security, _ in listeners]  # named by their protocol
    at = bind or host

    def spelled(address: str) -> str:
        return ",".join(f"{n}://{address}:{p}" for n, (_, p) in zip(names, listeners, strict=True))

    lines = [
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@{host}:{controller_port}",
        f"listeners={spelled(at)},CONTROLLER://{at}:{controller_port}",
        f"advertised.listeners={spelled(host)}",
        "controller.listener.names=CONTROLLER",
        f"inter.broker.listener.name={names[0]}",
        "listener.security.protocol.map="
        + ",".join(f"{name}:{name}" for name in names) + ",CONTROLLER:SASL_PLAINTEXT",
        "sasl.mechanism.controller.protocol=PLAIN",
        "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
        f"listener.name.controller.plain.sasl.jaas.config={_plain_jaas(secrets_, (BROKER,))}",
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found=false",
        "super.users=" + ";".join(f"User:{u}" for u in SUPER_USERS),
        "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
    ]  # fmt: skip
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule required"
    me = secrets_.passwords[BROKER]
    plain = _plain_jaas(secrets_, secrets_.users)
    for security, _ in listeners:
        lower = security.protocol.value.lower()
        if security.sasl:
            lines += [
                f"listener.name.{lower}.sasl.enabled.mechanisms={_MECHANISMS}",
                f"listener.name.{lower}.scram-sha-512.sasl.jaas.config={scram} "
                f'username="{BROKER}" password="{me}";',
                f"listener.name.{lower}.scram-sha-256.sasl.jaas.config={scram};",
                f"listener.name.{lower}.plain.sasl.jaas.config={plain}",
            ]
        if security is Security.SSL:
            lines.append(f"listener.name.{lower}.ssl.client.auth=required")
    if any(security.tls for security, _ in listeners):
        cert, key = secrets_.cert(BROKER)
        chain = cert.read_bytes() + secrets_.ca_file.read_bytes()
        lines += [
            "ssl.keystore.type=PEM",
            f"ssl.keystore.key={_one_line(key.read_bytes())}",
            f"ssl.keystore.certificate.chain={_one_line(chain)}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.certificates={_one_line(secrets_.ca_file.read_bytes())}",
            "ssl.endpoint.identification.algorithm=https",
            # A client certificate's CN is its principal: User:intentflow, as with SASL.
            "ssl.principal.mapping.rules=RULE:^CN=([^,]+)$/$1/,DEFAULT",
        ]
    lines += [
        f"log.dirs={data}",
        "num.partitions=1",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=4",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        "auto.create.topics.enable=false",
        "log.retention.hours=24",
        "log.segment.bytes=67108864",
    ]
    return "\n".join(lines) + "\n"


def settings_overrides(conn: KafkaConnection) -> dict[str, object]:
    """``load_settings`` overrides that connect as ``conn`` (the other settings unchanged)."""
    return {
        key.removeprefix("INTENTFLOW_").lower(): value for key, value in settings_env(conn).items()
    }


def provision(
    admin: KafkaConnection,
    settings: Settings,
    *,
    worker_creates_topics: bool = False,
    worker: str = WORKER,
    producer: str = SIMULATOR,
    reader: str = MARKETING,
    eraser: str = PRIVACY,
) -> dict[str, int]:
    """Topics and ACLs of one intentflow app on a secured cluster, made as ``admin``: every
    topic of the app and the profile changelog (unless the worker is to create them), and the
    ACLs of the worker, the producer of events, the score readers and the erasure tool (each
    ``User:<name>``).
    Returns the number of ACLs per principal."""
    from streams.kafka.access import (
        changelog_topic,
        eraser_grants,
        grant,
        producer_grants,
        score_reader_grants,
        worker_grants,
    )
    from streams.kafka.topics import create_topics, ensure_changelog
    from streams.settings import load_settings

    if not worker_creates_topics:
        as_admin = load_settings(**(settings.model_dump() | settings_overrides(admin)))
        create_topics(as_admin)
        ensure_changelog(as_admin, changelog_topic(settings))
    return {
        worker: grant(admin, worker, worker_grants(settings, create_topics=worker_creates_topics)),
        producer: grant(admin, producer, producer_grants(settings)),
        reader: grant(admin, reader, score_reader_grants(settings)),
        eraser: grant(admin, eraser, eraser_grants(settings)),
    }


def client_properties(security: Security, secrets_: Secrets, user: str = BROKER) -> str:
    """Java client properties that connect as ``user`` (the broker's own by default: Kafka's
    command-line tools, e.g. a container's health check, with ``--command-config``)."""
    lines = [f"security.protocol={security.protocol.value}"]
    if security.sasl:
        password = secrets_.passwords[user]
        lines += [
            "sasl.mechanism=SCRAM-SHA-512",
            "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{user}" password="{password}";',
        ]
    if security.tls:
        lines += [
            "ssl.truststore.type=PEM",
            f"ssl.truststore.certificates={_one_line(secrets_.ca_file.read_bytes())}",
        ]
    if security is Security.SSL:
        cert, key = secrets_.cert(user)
        lines += [
            "ssl.keystore.type=PEM",
            f"ssl.keystore.key={_one_line(key.read_bytes())}",
            f"ssl.keystore.certificate.chain={_one_line(cert.read_bytes())}",
        ]
    return "\n".join(lines) + "\n"


def container_files(
    directory: Path,
    security: Security,
    *,
    host: str,
    port: int,
    controller_port: int,
    data: Path,
) -> dict[str, Path]:
    """A secured broker's files for a container (``docker-compose.secured.yml``):
    ``directory/clients`` holds the CA, every key and password and one ``<user>.env`` per user
    (for the intentflow containers); ``directory/broker`` holds only what the broker reads:
    ``server.properties`` (bound to 0.0.0.0, reached at ``host``), ``format-args`` (the SCRAM
    credentials for ``kafka-storage.sh format``, one argument a line), ``cluster-id`` and
    ``client.properties`` (the broker's own login, for its health check).
    Made once; running it again keeps the existing secrets."""
    secrets_ = Secrets.load_or_create(directory / "clients", (host,))
    envs = write_env_files(security, f"{host}:{port}", secrets_)
    broker = directory / "broker"
    broker.mkdir(parents=True, exist_ok=True)
    os.chmod(broker, 0o700)
    properties = server_properties(
        [(security, port)], host, controller_port, data, secrets_, bind="0.0.0.0"
    )
    write_private(broker / "server.properties", properties.encode())
    write_private(broker / "format-args", "\n".join(scram_format_args(secrets_)).encode())
    write_private(broker / "client.properties", client_properties(security, secrets_).encode())
    cluster_id = broker / "cluster-id"
    if not cluster_id.exists():
        raw = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")
        cluster_id.write_text(("A" + raw[1:]) if raw.startswith("-") else raw)
    return {"server.properties": broker / "server.properties", **envs}
