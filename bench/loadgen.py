"""A paced producer for the latency scenario, run in its own process.

Reads event templates (one JSON object per line: ``{"key": ..., "event": {...}}``), and sends
them at ``--rate`` events per second for ``--seconds``, each with a fresh ``event_id``
(``<prefix>-<n>``) and ``occurred_at`` set to the wall time of the send. Writes the send time
of every event id (unix seconds) as JSON lines to ``--sent``. Sends are paced on a 1 ms tick
against the elapsed time, so a slow tick is caught up, never lost.
"""

from __future__ import annotations

import argparse
import time

import orjson

from bench.data import rfc3339_now
from bench.kafkautil import producer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--templates", required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--offset", type=int, default=0, help="First template to use.")
    parser.add_argument("--sent", required=True)
    args = parser.parse_args()

    with open(args.templates, "rb") as fh:
        templates = [orjson.loads(line) for line in fh]
    p = producer(args.bootstrap, **{"linger.ms": 0, "acks": "all"})
    total = int(args.rate * args.seconds)
    sent_at: list[float] = []
    started = time.perf_counter()
    n = 0
    while n < total:
        due = min(total, int((time.perf_counter() - started) * args.rate) + 1)
        while n < due:
            t = templates[(args.offset + n) % len(templates)]
            event = dict(t["event"])
            event["event_id"] = f"{args.prefix}-{n}"
            now = time.time()
            event["occurred_at"] = rfc3339_now(now)
            p.produce(args.topic, key=t["key"].encode(), value=orjson.dumps(event))
            sent_at.append(now)
            n += 1
        p.poll(0)
        time.sleep(0.001)
    elapsed = time.perf_counter() - started
    if p.flush(60):
        raise SystemExit("loadgen: events not acknowledged within 60 s")
    with open(args.sent, "wb") as fh:
        fh.write(orjson.dumps({"prefix": args.prefix, "sent_at": sent_at, "elapsed": elapsed}))


if __name__ == "__main__":
    main()
