"""Scenario 5: how fast ``intentflow simulate --kafka`` produces (the CLI, as people run it).

Its own closing line reports payloads per second over its produce loop; the wall time of the
whole command (interpreter start, building the shoppers, producing, waiting for every ack) is
measured here too, and the events that arrived are counted from the topic's end offsets.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from typing import Any

from bench import kafkautil
from bench.procs import child_env, unique


def run(bootstrap: str, users: int, events: int) -> dict[str, Any]:
    topic = unique("sim")
    kafkautil.create_topics(bootstrap, [topic])
    env = child_env(
        {
            "INTENTFLOW_KAFKA_BOOTSTRAP": bootstrap,
            "INTENTFLOW_TOPIC_EVENTS": topic,
            "INTENTFLOW_PARTITIONS": "4",
        }
    )
    cmd = [
        sys.executable,
        "-m",
        "streams.cli",
        "simulate",
        "--users",
        str(users),
        "--duration",
        "7d",
        "--max-events",
        str(events),
        "--kafka",
        "--quiet",
    ]
    started = time.perf_counter()
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"intentflow simulate failed:\n{result.stdout}\n{result.stderr}")
    counter = kafkautil.Counter(bootstrap, topic)
    delivered = counter.count()
    counter.close()
    match = re.search(r"in ([0-9.]+)s \(([0-9,]+)/s\)", result.stdout)
    return {
        "command": " ".join(["intentflow", *cmd[3:]]),
        "users": users,
        "events": events,
        "delivered": delivered,
        "self_reported_per_s": float(match.group(2).replace(",", "")) if match else None,
        "self_reported_seconds": float(match.group(1)) if match else None,
        "wall_seconds": round(wall, 2),
        "wall_per_s": round(delivered / wall, 1),
        "output_tail": result.stdout.strip().splitlines()[-1:],
    }
