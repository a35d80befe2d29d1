"""docker-compose.secured.yml: a valid override of docker-compose.yml whose every Kafka client
logs in as its own principal over the broker's only (SASL_SSL) listener.

The override's scripts themselves run against a real broker in
tests/integration/test_compose_secured.py.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.settings import load_settings

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "docker-compose.yml"
SECURED = REPO / "docker-compose.secured.yml"
# Which user's env file each Kafka client container sources.
PRINCIPALS = {"topic-init": "admin", "worker": "intentflow", "simulator": "simulator"}


def _compose(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("`docker-compose` is not installed (Debian: apt-get install docker-compose)")
    result = subprocess.run(
        [tool, "-f", str(BASE), "-f", str(SECURED), *args],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(_compose("config").stdout)
    return config["services"]


def _script(service: dict[str, Any]) -> str:
    return " ".join([*(service.get("entrypoint") or []), *service["command"]])


def test_the_override_is_valid_and_quiet() -> None:
    result = _compose("config", "-q")
    assert "WARNING" not in result.stderr, result.stderr


def test_the_broker_starts_from_the_generated_secured_configuration(
    resolved: dict[str, Any],
) -> None:
    secrets, kafka = resolved["kafka-secrets"], resolved["kafka"]
    assert "intentflow kafka secrets --dir /secrets --security sasl_ssl --host kafka" in (
        _script(secrets)
    )
    assert secrets["user"] == "0"  # to hand the broker and the clients their own files
    assert kafka["depends_on"]["kafka-secrets"]["condition"] == "service_completed_successfully"
    script = _script(kafka)
    assert "kafka-storage.sh format" in script and "format-args" in script
    assert "kafka-server-start.sh /secrets/broker/server.properties" in script
    assert "--command-config /secrets/broker/client.properties" in " ".join(
        kafka["healthcheck"]["test"]
    )
    assert any(str(v).startswith("kafka-secrets:/secrets") for v in _volumes(kafka))


def test_every_kafka_client_logs_in_as_its_own_principal(resolved: dict[str, Any]) -> None:
    base = load_settings(
        kafka_bootstrap=resolved["worker"]["environment"]["INTENTFLOW_KAFKA_BOOTSTRAP"]
    )
    host, port = base.bootstrap_servers[0].rsplit(":", 1)
    assert f"--host {host} --port {port}" in _script(resolved["kafka-secrets"])
    for name, user in PRINCIPALS.items():
        service = resolved[name]
        assert f". /secrets/clients/{user}.env" in _script(service), name
        assert "set -a" in _script(service), name  # the file's variables reach the process
        assert any(str(v).startswith("kafka-secrets:/secrets") for v in _volumes(service)), name
    assert "intentflow kafka provision" in _script(resolved["topic-init"])
    assert "intentflow worker" in _script(resolved["worker"])
    # The worker stays scalable and keeps its health check on /readyz.
    assert "ports" not in resolved["worker"]
    assert "/readyz" in " ".join(resolved["worker"]["healthcheck"]["test"])


def _volumes(service: dict[str, Any]) -> list[str]:
    out = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            out.append(f"{volume.get('source')}:{volume['target']}")
        else:
            out.append(str(volume))
    return out
