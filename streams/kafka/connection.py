"""ONE Kafka connection: the bootstrap address, security protocol, SASL and TLS settings, and
their spelling for every client library intentflow uses.

Faust (through aiokafka) runs the worker, kafka-python does topic admin and tools, and
librdkafka (confluent-kafka) produces the simulator's load. Each library names the same options
differently; this module is the only place that knows those names, so a secured cluster is
configured once, in ``INTENTFLOW_KAFKA_*``, and every client path gets the same connection.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from streams.settings import SaslMechanism, SecurityProtocol, Settings

_TLS = {SecurityProtocol.SSL, SecurityProtocol.SASL_SSL}
_SASL = {SecurityProtocol.SASL_PLAINTEXT, SecurityProtocol.SASL_SSL}


@dataclass(frozen=True)
class KafkaConnection:
    """How to reach the cluster. The password stays a ``SecretStr`` until a client needs it."""

    bootstrap_servers: tuple[str, ...]
    security_protocol: SecurityProtocol = SecurityProtocol.PLAINTEXT
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = field(default=None, repr=False)
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaConnection:
        return cls(
            bootstrap_servers=tuple(settings.bootstrap_servers),
            security_protocol=settings.kafka_security_protocol,
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_username=settings.kafka_sasl_username,
            sasl_password=settings.kafka_sasl_password,
            ssl_cafile=settings.kafka_ssl_cafile,
            ssl_certfile=settings.kafka_ssl_certfile,
            ssl_keyfile=settings.kafka_ssl_keyfile,
        )

    @property
    def bootstrap(self) -> str:
        """``host:port,host:port`` (what error messages and librdkafka show)."""
        return ",".join(self.bootstrap_servers)

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in _TLS

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in _SASL and self.sasl_mechanism is not None

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context (server verification against the CA, client cert for mTLS)."""
        if not self.uses_tls:
            return None
        context = ssl.create_default_context(
            purpose=ssl.Purpose.SERVER_AUTH,
            cafile=str(self.ssl_cafile) if self.ssl_cafile else None,
        )
        if self.ssl_certfile:
            context.load_cert_chain(
                str(self.ssl_certfile), str(self.ssl_keyfile) if self.ssl_keyfile else None
            )
        return context

    def _password(self) -> str | None:
        return self.sasl_password.get_secret_value() if self.sasl_password else None

    def aiokafka(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka's clients."""
        opts: dict[str, Any] = {
            "bootstrap_servers": list(self.bootstrap_servers),
            "security_protocol": self.security_protocol.value,
        }
        if self.uses_tls:
            opts["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            assert self.sasl_mechanism is not None
            opts["sasl_mechanism"] = self.sasl_mechanism.value
            opts["sasl_plain_username"] = self.sasl_username
            opts["sasl_plain_password"] = self._password()
        return opts

    def kafka_python(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python's clients."""
        return self._spelled(_KAFKA_PYTHON) | {"bootstrap_servers": list(self.bootstrap_servers)}

    def librdkafka(self) -> dict[str, Any]:
        """Configuration for librdkafka (confluent-kafka)."""
        return self._spelled(_LIBRDKAFKA) | {"bootstrap.servers": self.bootstrap}

    def _spelled(self, spelling: dict[str, str]) -> dict[str, Any]:
        sasl = self.uses_sasl
        values: dict[str, object | None] = {
            "protocol": self.security_protocol.value,
            "mechanism": self.sasl_mechanism.value if sasl and self.sasl_mechanism else None,
            "username": self.sasl_username if sasl else None,
            "password": self._password() if sasl else None,
            "cafile": str(self.ssl_cafile) if self.ssl_cafile else None,
            "certfile": str(self.ssl_certfile) if self.ssl_certfile else None,
            "keyfile": str(self.ssl_keyfile) if self.ssl_keyfile else None,
        }
        return {spelling[k]: v for k, v in values.items() if v is not None}


_KAFKA_PYTHON = {
    "protocol": "security_protocol", "mechanism": "sasl_mechanism",
    "username": "sasl_plain_username", "password": "sasl_plain_password",
    "cafile": "ssl_cafile", "certfile": "ssl_certfile", "keyfile": "ssl_keyfile",
}  # fmt: skip
_LIBRDKAFKA = {
    "protocol": "security.protocol", "mechanism": "sasl.mechanism",
    "username": "sasl.username", "password": "sasl.password",
    "cafile": "ssl.ca.location", "certfile": "ssl.certificate.location",
    "keyfile": "ssl.key.location",
}  # fmt: skip


def connection(settings: Settings) -> KafkaConnection:
    """The connection the settings describe."""
    return KafkaConnection.from_settings(settings)
