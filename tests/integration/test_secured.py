"""intentflow against a secured broker: TLS, SASL/SCRAM, mutual TLS and ACLs.

One local KRaft broker (``intentflow kafka start --security``'s code) serves three client
listeners side by side: SASL_SSL, SSL with required client certificates, and SASL_PLAINTEXT.
Every principal gets only the ACLs of ``streams.kafka.access``. Each client path runs as the
principal it is meant for: the worker (Faust, aiokafka) as ``intentflow``, the simulator
(librdkafka) as ``simulator``, ``intentflow scores`` (kafka-python) and the example consumer as
``marketing``, topic admin as ``admin``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import orjson
import pytest
from pydantic import SecretStr

from streams.devtools.certs import CertificateAuthority
from streams.devtools.kafka_security import (
    ADMIN,
    MARKETING,
    PRIVACY,
    SIMULATOR,
    WORKER,
    Security,
    provision,
    settings_env,
    settings_overrides,
)
from streams.devtools.localkafka import LocalKafka, free_port
from streams.kafka.access import Grant, Op, grant, worker_grants
from streams.kafka.connection import KafkaConnection
from streams.kafka.topics import create_topics
from streams.settings import SaslMechanism, Settings, load_settings
from tests.bundles import make_bundle, point
from tests.integration.harness import WorkerProcess

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "score_consumer.py"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """One secured broker for the module: SASL_SSL (main), SSL (mutual TLS), SASL_PLAINTEXT."""
    kafka = LocalKafka(
        home=tmp_path_factory.mktemp("kafka-secured"),
        port=free_port(),
        controller_port=free_port(),
        security=Security.SASL_SSL,
        extra_listeners=((Security.SSL, free_port()), (Security.SASL_PLAINTEXT, free_port())),
    )
    kafka.start(timeout=180)
    try:
        yield kafka
    finally:
        kafka.stop()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("model")
    current = tmp / "current"
    point(current, make_bundle(tmp / "bundles" / "v1", "test-v1", seed=1))
    return current


def conn(
    broker: LocalKafka,
    user: str,
    security: Security,
    mechanism: SaslMechanism = SaslMechanism.SCRAM_SHA_512,
) -> KafkaConnection:
    found = broker.connection(user, security)
    assert found is not None
    if found.uses_sasl:
        return replace(found, sasl_mechanism=mechanism)
    return found


@dataclass
class App:
    """One intentflow app's topics and group on the secured broker, provisioned as admin."""

    settings: Settings
    env: dict[str, str]  # topics, group, model: everything but the connection
    tmp: Path

    def as_(self, connection: KafkaConnection, **extra: str) -> dict[str, str]:
        """The environment of a process that connects as ``connection``."""
        return {**self.env, **settings_env(connection), **extra}


def make_app(
    broker: LocalKafka, model: Path, tmp: Path, unique: str, *, grants: bool = True
) -> App:
    env = {
        "INTENTFLOW_TOPIC_EVENTS": f"events-{unique}",
        "INTENTFLOW_TOPIC_SCORES": f"scores-{unique}",
        "INTENTFLOW_TOPIC_DLQ": f"dlq-{unique}",
        "INTENTFLOW_APP_ID": f"app-{unique}",
        "INTENTFLOW_PARTITIONS": "2",
        "INTENTFLOW_MODEL_PATH": str(model),
        "INTENTFLOW_MODEL_POLL_SECONDS": "0.5",
        "INTENTFLOW_KAFKA_CONNECT_TIMEOUT_SECONDS": "10",
    }
    admin = conn(broker, ADMIN, Security.SASL_SSL)
    settings = load_settings(
        **{k.removeprefix("INTENTFLOW_").lower(): v for k, v in env.items()},
        **settings_overrides(admin),
    )
    if grants:
        provision(admin, settings)
    else:
        create_topics(settings)
    return App(settings, env, tmp)


def simulate(app: App, connection: KafkaConnection, tmp: Path, events: int) -> set[str]:
    """Run ``intentflow simulate --kafka`` (librdkafka) as ``connection``; return the event ids
    it produced (the same seed written to a file first: same seed, same bytes)."""
    args = ["--users", "100", "--duration", "12h", "--seed", "5", "--max-events", str(events)]
    out = tmp / "sim.jsonl"
    run_cli(["simulate", *args, "--out", str(out)], app.env, check=True)
    result = run_cli(["simulate", *args, "--kafka"], app.as_(connection), check=True)
    assert "all acknowledged" in result.stdout, result.stdout + result.stderr
    ids = {orjson.loads(line)["event_id"] for line in out.read_bytes().splitlines()}
    assert len(ids) == events
    return ids


def run_cli(
    args: list[str], env: dict[str, str], *, check: bool = False, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("INTENTFLOW_")} | env
    result = subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        env=full, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    if check:
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result


def read_scores(
    connection: KafkaConnection, topic: str, want: set[str], timeout: float
) -> set[str]:
    """event_ids of the scores topic, read with kafka-python as ``connection``."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**connection.kafka_python(), enable_auto_commit=False)
    seen: set[str] = set()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        consumer.seek_to_beginning()
        deadline = time.monotonic() + timeout
        while not want <= seen and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                seen.update(orjson.loads(r.value)["event_id"] for r in batch)
    finally:
        consumer.close()
    return seen


def test_end_to_end_over_sasl_ssl_with_scram_sha_512(
    broker: LocalKafka, model: Path, tmp_path: Path, unique: str
) -> None:
    app = make_app(broker, model, tmp_path, unique)
    worker = WorkerProcess(
        app.as_(conn(broker, WORKER, Security.SASL_SSL), INTENTFLOW_DATA_DIR=str(tmp_path / "w")),
        tmp_path / "worker.log",
    ).start()
    try:
        worker.wait_ready(timeout=150)
        log = worker.log(tail=4000)
        assert "Authenticated as intentflow via SCRAM-SHA-512" in log
        # The simulator logs in with the other SCRAM mechanism, as a producer-only principal.
        sim = conn(broker, SIMULATOR, Security.SASL_SSL, SaslMechanism.SCRAM_SHA_256)
        ids = simulate(app, sim, tmp_path, events=400)
        marketing = app.as_(conn(broker, MARKETING, Security.SASL_SSL))
        tail = run_cli(
            ["scores", "--from-beginning", "--json", "--max", str(len(ids)), "--timeout", "90"],
            marketing,
            check=True,
            timeout=150,
        )
        scored = [orjson.loads(line)["event_id"] for line in tail.stdout.splitlines()]
        assert set(scored) == ids
        # The example consumer, as a marketing service runs it: same variables, its own group.
        full = {k: v for k, v in os.environ.items() if not k.startswith("INTENTFLOW_")}
        example = subprocess.run(
            [sys.executable, str(EXAMPLE), "--topic", app.settings.topic_scores,
             "--group", f"marketing-{unique}", "--from-beginning", "--max", str(len(ids)),
             "--idle-timeout", "60"],
            env=full | marketing, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert example.returncode == 0, example.stderr[-2000:]
        assert {orjson.loads(line)["event_id"] for line in example.stdout.splitlines()} == ids
        assert f"handled {len(ids)}, duplicates 0, invalid 0" in example.stderr
        # A privacy team erases a shopper with only the eraser's ACLs; a score reader cannot.
        shopper = orjson.loads((tmp_path / "sim.jsonl").read_bytes().splitlines()[0])["user_id"]
        erase = ["erase", "--user-id", shopper, "--wait", "60"]
        erased = run_cli(erase, app.as_(conn(broker, PRIVACY, Security.SASL_SSL)), check=True)
        assert "#1" in erased.stdout and "profile erased on partition" in erased.stdout
        assert shopper not in erased.stdout + erased.stderr
        refused = run_cli(erase, marketing)
        assert_clear_failure(
            refused, "User:marketing", "lacks ACLs that intentflow erase needs",
            f"topic '{app.settings.topic_erasure}': WRITE",
        )  # fmt: skip
    finally:
        worker.stop()


def test_end_to_end_over_mutual_tls(
    broker: LocalKafka, model: Path, tmp_path: Path, unique: str
) -> None:
    app = make_app(broker, model, tmp_path, unique)
    worker = WorkerProcess(
        app.as_(conn(broker, WORKER, Security.SSL), INTENTFLOW_DATA_DIR=str(tmp_path / "w")),
        tmp_path / "worker.log",
    ).start()
    try:
        worker.wait_ready(timeout=150)
        # The web surface: the worker's three pages and nothing of Faust's.
        for path in ("/metrics", "/livez", "/readyz"):
            assert worker.get(path)[0] == 200, path
        for path in ("/", "/router/", "/table/", "/graph/", "/stats/", "/performance/"):
            assert worker.get(path)[0] == 404, path
        ids = simulate(app, conn(broker, SIMULATOR, Security.SSL), tmp_path, events=300)
        seen = read_scores(
            conn(broker, MARKETING, Security.SSL), app.settings.topic_scores, ids, 90
        )
        assert seen == ids
    finally:
        worker.stop()


def assert_clear_failure(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output[-3000:]
    for text in expected:
        assert text in output, output[-3000:]
    return output


def test_a_wrong_password_stops_the_worker_with_a_clear_error(
    broker: LocalKafka, model: Path, tmp_path: Path, unique: str
) -> None:
    app = make_app(broker, model, tmp_path, unique)
    right = conn(broker, WORKER, Security.SASL_SSL)
    wrong = replace(right, sasl_password=SecretStr(f"not-{unique}"))
    began = time.monotonic()
    result = run_cli(["worker"], app.as_(wrong, INTENTFLOW_DATA_DIR=str(tmp_path / "w")))
    output = assert_clear_failure(
        result, "refused the SASL login of user 'intentflow' with SCRAM-SHA-512",
        "INTENTFLOW_KAFKA_SASL_PASSWORD",
    )  # fmt: skip
    assert time.monotonic() - began < 60
    assert f"not-{unique}" not in output
    assert right.sasl_password is not None
    assert right.sasl_password.get_secret_value() not in output
    # Tools that connect through topic admin (kafka-python) explain the same failure.
    tail = run_cli(
        ["scores", "--max", "1"],
        app.as_(replace(conn(broker, MARKETING, Security.SASL_SSL), sasl_password=SecretStr("x")),
                INTENTFLOW_KAFKA_CONNECT_TIMEOUT_SECONDS="3"),
    )  # fmt: skip
    assert_clear_failure(tail, "refused the SASL login of user 'marketing'")


def test_an_untrusted_ca_stops_the_worker_with_a_clear_error(
    broker: LocalKafka, model: Path, tmp_path: Path, unique: str
) -> None:
    app = make_app(broker, model, tmp_path, unique)
    other = CertificateAuthority(tmp_path / "other-ca", name="some other CA")
    untrusting = replace(conn(broker, WORKER, Security.SASL_SSL), ssl_cafile=other.cert_path)
    result = run_cli(["worker"], app.as_(untrusting, INTENTFLOW_DATA_DIR=str(tmp_path / "w")))
    assert_clear_failure(
        result, "presented a TLS certificate", str(other.cert_path), "does not verify",
        "self-signed certificate in certificate chain",
    )  # fmt: skip


def test_a_missing_client_certificate_stops_the_worker_with_a_clear_error(
    broker: LocalKafka, model: Path, tmp_path: Path, unique: str
) -> None:
    app = make_app(broker, model, tmp_path, unique)
    anonymous = replace(conn(broker, WORKER, Security.SSL), ssl_certfile=None, ssl_keyfile=None)
    result = run_cli(["worker"], app.as_(anonymous, INTENTFLOW_DATA_DIR=str(tmp_path / "w")))
    assert_clear_failure(result, "refused the TLS client certificate", "mutual TLS")


def test_a_missing_acl_stops_the_worker_with_a_clear_error(
    broker: LocalKafka, model: Path, tmp_path: Path, unique: str
) -> None:
    app = make_app(broker, model, tmp_path, unique, grants=False)
    scores = app.settings.topic_scores
    # Every ACL of the worker but WRITE on the scores topic.
    grants = [
        Grant(g.resource, g.name, tuple(op for op in g.operations if op is not Op.WRITE))
        if g.name == scores
        else g
        for g in worker_grants(app.settings)
    ]
    grant(conn(broker, ADMIN, Security.SASL_SSL), WORKER, grants)
    result = run_cli(
        ["worker"],
        app.as_(conn(broker, WORKER, Security.SASL_SSL), INTENTFLOW_DATA_DIR=str(tmp_path / "w")),
    )
    output = assert_clear_failure(
        result, "User:intentflow", "lacks ACLs that the intentflow worker needs",
        f"topic '{scores}': WRITE",
    )  # fmt: skip
    listed = [line for line in output.splitlines() if line.startswith(("  topic", "  group"))]
    assert listed == [f"  topic '{scores}': WRITE (to publish scores)"], output  # that one only


def test_sasl_plain_over_plaintext_is_refused_unless_allowed(
    broker: LocalKafka, model: Path, tmp_path: Path, unique: str
) -> None:
    app = make_app(broker, model, tmp_path, unique)
    plain = conn(broker, ADMIN, Security.SASL_PLAINTEXT, SaslMechanism.PLAIN)
    refused = run_cli(["topics", "create"], app.as_(plain))
    assert_clear_failure(
        refused, "SASL PLAIN over SASL_PLAINTEXT", "INTENTFLOW_KAFKA_ALLOW_PLAIN_OVER_PLAINTEXT"
    )
    assert plain.sasl_password is not None
    assert plain.sasl_password.get_secret_value() not in refused.stdout + refused.stderr
    allowed = run_cli(
        ["topics", "create"], app.as_(plain, INTENTFLOW_KAFKA_ALLOW_PLAIN_OVER_PLAINTEXT="true")
    )
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    assert f"{app.settings.topic_events}: exists" in allowed.stdout
    # SCRAM over the same plaintext listener never sends the password: no setting needed.
    scram = conn(broker, ADMIN, Security.SASL_PLAINTEXT, SaslMechanism.SCRAM_SHA_512)
    assert run_cli(["topics", "create"], app.as_(scram)).returncode == 0


def test_the_bench_tools_connect_through_the_same_settings(
    broker: LocalKafka, tmp_path: Path, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The benchmark's harness (librdkafka) and a system under test (aiokafka, its own
    process) reach a SASL_SSL broker from the INTENTFLOW_KAFKA_* variables alone."""
    from bench import kafkautil
    from bench.procs import child_env

    admin = conn(broker, ADMIN, Security.SASL_SSL)
    for name, value in settings_env(admin).items():
        monkeypatch.setenv(name, value)
    source, sink = f"bench-in-{unique}", f"bench-out-{unique}"
    kafkautil.create_topics(admin.bootstrap, [source, sink])
    records = [(f"k{i % 37}".encode(), f"v{i}".encode()) for i in range(500)]
    assert kafkautil.produce_all(admin.bootstrap, source, records) == 500
    system = subprocess.Popen(
        [sys.executable, "-m", "bench.systems.passthrough", "--bootstrap", admin.bootstrap,
         "--input", source, "--output", sink, "--group", f"bench-{unique}"],
        env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    counter = kafkautil.Counter(admin.bootstrap, sink)
    try:
        deadline = time.monotonic() + 90
        while counter.count() < 500 and time.monotonic() < deadline and system.poll() is None:
            time.sleep(0.5)
    finally:
        counter.close()
        system.terminate()
        output, _ = system.communicate(timeout=30)
    copied = kafkautil.read_all(admin.bootstrap, sink)
    assert sorted((k, v) for k, v, _ in copied) == sorted(records), output.decode()[-2000:]
