"""Why a connection to Kafka failed, in one sentence an operator can act on.

Client libraries retry a refused TLS handshake or SASL login until a timeout and then report
"unable to bootstrap", the same words as for a broker that is down. ``diagnose`` finds the
real cause with the same ``KafkaConnection``: a TCP connect to each bootstrap server, a TLS
handshake with the connection's own SSL context followed by one Kafka request (a broker that
rejects the client certificate says so only then), and a SASL login through librdkafka, which
reports the broker's own reason. Messages name the address, the user and the files; never the
password.
"""

from __future__ import annotations

import re
import socket
import ssl
import struct
import time

from streams.errors import (
    BrokerUnreachableError,
    IntentflowError,
    KafkaAuthenticationError,
    KafkaTlsError,
)
from streams.kafka.connection import KafkaConnection

# ApiVersions v0 with correlation id 1 and client id "intentflow-probe": the smallest request
# every broker answers before authentication.
_CLIENT_ID = b"intentflow-probe"
_API_VERSIONS = struct.pack(">hhih", 18, 0, 1, len(_CLIENT_ID)) + _CLIENT_ID
_API_VERSIONS = struct.pack(">i", len(_API_VERSIONS)) + _API_VERSIONS
_REJECTED_CERT = ("certificate required", "unknown ca", "bad certificate", "certificate unknown")


def diagnose(conn: KafkaConnection, timeout: float) -> IntentflowError | None:
    """The first problem found connecting as ``conn`` (None: it connects and logs in)."""
    reached = []
    for server in conn.bootstrap_servers:
        host, _, port = server.rpartition(":")
        try:
            sock = socket.create_connection((host, int(port)), timeout=timeout)
        except OSError:
            continue
        reached.append(server)
        with sock:
            problem = _check_listener(conn, sock, host, server, timeout)
        if problem is not None:
            return problem
    if not reached:
        return BrokerUnreachableError(
            f"no Kafka broker answered at {conn.bootstrap} within {timeout:.0f}s (nothing "
            "accepts connections there). Start one with `intentflow kafka start`, or set "
            "INTENTFLOW_KAFKA_BOOTSTRAP to a running broker."
        )
    if conn.uses_sasl:
        return _check_sasl(conn, timeout)
    return None


def _check_listener(
    conn: KafkaConnection, sock: socket.socket, host: str, server: str, timeout: float
) -> IntentflowError | None:
    if not conn.uses_tls:
        try:
            sock.sendall(_API_VERSIONS)
            answered = _is_kafka_response(sock.recv(8))
        except OSError:
            answered = False
        if answered:
            return None
        return KafkaTlsError(
            f"the broker at {server} closed the connection on a plaintext Kafka request: the "
            "listener probably requires TLS. Set INTENTFLOW_KAFKA_SECURITY_PROTOCOL to SSL or "
            f"SASL_SSL (it is {conn.security_protocol.value}) and INTENTFLOW_KAFKA_SSL_CAFILE."
        )
    context = conn.ssl_context()
    assert context is not None
    cafile = f"INTENTFLOW_KAFKA_SSL_CAFILE={conn.ssl_cafile}" if conn.ssl_cafile else (
        "the system's CA store (INTENTFLOW_KAFKA_SSL_CAFILE is unset)"
    )  # fmt: skip
    try:
        with context.wrap_socket(sock, server_hostname=host) as tls:
            tls.settimeout(timeout)
            tls.sendall(_API_VERSIONS)
            if not _is_kafka_response(tls.recv(8)):
                raise ssl.SSLError("the broker closed the connection after the handshake")
    except ssl.SSLCertVerificationError as exc:
        return KafkaTlsError(
            f"the broker at {server} presented a TLS certificate that {cafile} does not "
            f"verify: {exc.verify_message}. Point INTENTFLOW_KAFKA_SSL_CAFILE at the CA that "
            "signed the broker's certificate (and check that it names this host)."
        )
    except ssl.SSLError as exc:
        reason = (exc.reason or str(exc)).replace("_", " ").lower()
        if any(word in reason for word in _REJECTED_CERT):
            mine = (
                f"INTENTFLOW_KAFKA_SSL_CERTFILE={conn.ssl_certfile}"
                if conn.ssl_certfile
                else "no client certificate (INTENTFLOW_KAFKA_SSL_CERTFILE is unset)"
            )
            return KafkaTlsError(
                f"the broker at {server} refused the TLS client certificate ({reason}); the "
                f"client sent {mine}. The listener requires mutual TLS with a certificate "
                "signed by a CA the broker trusts, with INTENTFLOW_KAFKA_SSL_KEYFILE its key."
            )
        if "wrong version" in reason or "record layer" in reason or "packet length" in reason:
            return KafkaTlsError(
                f"the listener at {server} does not speak TLS ({reason}). Set "
                "INTENTFLOW_KAFKA_SECURITY_PROTOCOL to what it expects (PLAINTEXT or "
                f"SASL_PLAINTEXT; it is {conn.security_protocol.value}) or use its TLS port."
            )
        return KafkaTlsError(f"TLS with the broker at {server} failed: {reason}.")
    except OSError as exc:
        return KafkaTlsError(
            f"the broker at {server} closed the TLS connection ({exc}). If the listener "
            "requires mutual TLS, set INTENTFLOW_KAFKA_SSL_CERTFILE and "
            "INTENTFLOW_KAFKA_SSL_KEYFILE."
        )
    return None


def _is_kafka_response(head: bytes) -> bool:
    """The first bytes of a Kafka response to ``_API_VERSIONS``: a size, correlation id 1."""
    return len(head) == 8 and struct.unpack(">ii", head)[1] == 1


def _check_sasl(conn: KafkaConnection, timeout: float) -> IntentflowError | None:
    """Log in with librdkafka, which passes on the broker's reason for a refused login."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient

    errors: list[str] = []

    def on_error(err: KafkaError) -> None:
        if err.code() == KafkaError._AUTHENTICATION:
            errors.append(err.str())

    config = conn.librdkafka() | {
        "error_cb": on_error,
        "socket.timeout.ms": int(timeout * 1000),
        "log_level": 0,  # the reason comes through error_cb, not as log lines on stderr
    }
    admin = AdminClient(config)
    deadline = time.monotonic() + timeout
    while not errors and time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=0.5)
            return None
        except KafkaException:
            admin.poll(0.1)  # serves error_cb
    if not errors:
        return None
    reason = errors[0].split("SASL authentication error: ", 1)[-1]
    reason = re.sub(r"\s*\(after \d+ms in state \w+.*\)$", "", reason)
    assert conn.sasl_mechanism is not None
    return KafkaAuthenticationError(
        f"the broker at {conn.bootstrap} refused the SASL login of user "
        f"{conn.sasl_username!r} with {conn.sasl_mechanism.value}: {_redact(reason, conn)}. "
        "Check INTENTFLOW_KAFKA_SASL_USERNAME, INTENTFLOW_KAFKA_SASL_PASSWORD and "
        "INTENTFLOW_KAFKA_SASL_MECHANISM (the user needs credentials for that mechanism)."
    )


def _redact(text: str, conn: KafkaConnection) -> str:
    secret = conn.sasl_password.get_secret_value() if conn.sasl_password else ""
    return text.replace(secret, "***") if secret else text
