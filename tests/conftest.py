"""Shared fixtures. The integration tests get a real Kafka broker that this session starts on
free ports in a temporary directory and stops at the end."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.devtools.localkafka import LocalKafka, free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = REPO_ROOT / "schemas"
TAOBAO_CSV = REPO_ROOT / "data" / "taobao" / "user_behavior_815_users.csv"


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A real single-node Apache Kafka broker for the whole test session.

    INTENTFLOW_TEST_BOOTSTRAP reuses a broker that is already running (for quick local loops).
    """
    if reuse := os.environ.get("INTENTFLOW_TEST_BOOTSTRAP"):
        host, _, port = reuse.rpartition(":")
        yield LocalKafka(home=tmp_path_factory.mktemp("kafka-reused"), host=host, port=int(port))
        return
    broker = LocalKafka(
        home=tmp_path_factory.mktemp("kafka"), port=free_port(), controller_port=free_port()
    )
    broker.start(timeout=120)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def bootstrap(kafka_broker: LocalKafka) -> str:
    return kafka_broker.bootstrap


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic and group names."""
    return uuid.uuid4().hex[:10]
