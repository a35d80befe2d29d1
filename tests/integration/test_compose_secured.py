"""docker-compose.secured.yml's own scripts, run here without Docker: the kafka-secrets script
makes the secrets, the kafka script formats and starts a real broker from them (with the
Maven-resolved jars standing in for the image's scripts), topic-init's script provisions the
topics and ACLs as admin, and the worker's principal then has exactly what it needs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from streams.devtools.localkafka import DEFAULT_JARS_DIR, broker_ready, ensure_jars, free_port
from streams.kafka.access import check_access, worker_grants
from streams.kafka.connection import connection
from streams.kafka.probe import diagnose
from streams.settings import load_settings

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def test_the_secured_compose_scripts_start_a_broker_the_worker_may_use(tmp_path: Path) -> None:
    override = yaml.safe_load((REPO / "docker-compose.secured.yml").read_text())["services"]
    base = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    port, controller_port = free_port(), free_port()
    python_cli = f"{sys.executable} -m streams.cli"
    java = f"java -Xmx512m -cp '{ensure_jars(DEFAULT_JARS_DIR)}/*'"

    def local(script: str) -> str:
        """The container's script with this machine's paths, programs and free ports."""
        return (
            script.replace("$$", "$")
            .replace("/secrets", str(tmp_path / "secrets"))
            .replace("/var/lib/kafka/data", str(tmp_path / "data"))
            .replace("--host kafka --port 9092", f"--host 127.0.0.1 --port {port}")
            .replace("--controller-port 9093", f"--controller-port {controller_port}")
            .replace("/opt/kafka/bin/kafka-storage.sh", f"{java} kafka.tools.StorageTool")
            .replace("/opt/kafka/bin/kafka-server-start.sh", f"{java} kafka.Kafka")
            .replace("exec intentflow", f"exec {python_cli}")
            .replace("\nintentflow", f"\n{python_cli}")
        )

    env = {k: v for k, v in os.environ.items() if not k.startswith("INTENTFLOW_")}
    secrets_script = local(override["kafka-secrets"]["command"][-1])
    secrets_script = "\n".join(
        line for line in secrets_script.splitlines() if not line.startswith("chown")
    ).replace("\\\n", " ")
    made = subprocess.run(
        ["/bin/sh", "-ec", secrets_script.replace("intentflow kafka", f"{python_cli} kafka")],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    with open(tmp_path / "kafka.log", "wb") as log:
        broker = subprocess.Popen(
            ["/bin/sh", "-ec", local(override["kafka"]["command"][-1])],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        admin_env = _env_file(tmp_path / "secrets" / "clients" / "admin.env")
        admin = load_settings(
            **{k.removeprefix("INTENTFLOW_").lower(): v for k, v in admin_env.items()}
        )
        deadline = time.monotonic() + 120
        while not broker_ready(admin.kafka_bootstrap, connection=connection(admin)):
            assert broker.poll() is None, (tmp_path / "kafka.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "kafka.log").read_text()[-3000:]
            time.sleep(0.5)
        # topic-init, with the base file's settings, as the override runs it
        settings_env = {
            k: str(v) for k, v in base["worker"]["environment"].items() if k.startswith("INTENT")
        }
        provisioned = subprocess.run(
            ["/bin/sh", "-ec", local(" ".join(override["topic-init"]["command"][2:]))],
            env=env | settings_env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert provisioned.returncode == 0, provisioned.stdout + provisioned.stderr
        assert "User:intentflow" in provisioned.stdout
        worker_env = settings_env | _env_file(tmp_path / "secrets" / "clients" / "intentflow.env")
        worker = load_settings(
            **{k.removeprefix("INTENTFLOW_").lower(): v for k, v in worker_env.items()}
        )
        assert worker.kafka_security_protocol.value == "SASL_SSL"
        assert diagnose(connection(worker), 10) is None
        check_access(connection(worker), worker_grants(worker))  # every ACL it needs
    finally:
        os.killpg(broker.pid, signal.SIGKILL)
        broker.wait(30)
