"""Metrics observed per batch equal metrics observed per value."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from streams.worker.metrics import LATENCY_BUCKETS, Metrics, observe_many


def _samples(registry: CollectorRegistry) -> list[str]:
    return [
        line
        for line in generate_latest(registry).decode().splitlines()
        if not line.startswith("#") and "_created" not in line
    ]


def test_observe_many_equals_one_observe_per_value() -> None:
    rng = np.random.default_rng(1)
    # Values on, below, between and above the bucket bounds, and zero.
    values = np.concatenate(
        [
            rng.exponential(0.05, 500),
            np.array(LATENCY_BUCKETS),
            [0.0, 1e6],
            [LATENCY_BUCKETS[3]] * 3,
        ]
    )
    one, many = CollectorRegistry(), CollectorRegistry()
    a = Histogram("x_seconds", "x", buckets=LATENCY_BUCKETS, registry=one)
    b = Histogram("x_seconds", "x", buckets=LATENCY_BUCKETS, registry=many)
    for v in values.tolist():
        a.observe(v)
    observe_many(b, values[:300])
    observe_many(b, values[300:])
    observe_many(b, np.zeros(0))
    got, expected = _samples(many), _samples(one)
    assert len(got) == len(LATENCY_BUCKETS) + 3  # every bucket, +Inf, count, sum
    for g, e in zip(got, expected, strict=True):
        name_g, value_g = g.rsplit(" ", 1)
        name_e, value_e = e.rsplit(" ", 1)
        assert name_g == name_e
        assert float(value_g) == pytest.approx(float(value_e), rel=1e-9)


def test_the_worker_histograms_have_the_bounds_observe_many_reads() -> None:
    m = Metrics()
    for h in (m.event_to_score_latency, m.ingest_to_score_latency, m.purchase_probability):
        assert h._upper_bounds[-1] == float("inf")
        assert list(h._upper_bounds) == sorted(h._upper_bounds)
