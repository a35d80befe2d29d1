"""Every Prometheus metric intentflow exposes, in one place.

Names follow ``intentflow_<noun>_<unit>``; labels are low-cardinality (never a user id). Each
worker has its own ``CollectorRegistry``, so tests and several workers in one process never
collide. Faust's own sensors are registered on the same registry with the fixed prefix
``intentflow_`` (not the app id, so dashboards survive a change of INTENTFLOW_APP_ID).
Labelled counters are created at zero for every known label value, so ``increase()`` sees
the first occurrence too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from streams.contracts.events import ErrorClass
from streams.model.bundle import ModelBundle

# Milliseconds to a minute: event-to-score latency spans both in-process and backlog cases.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
INFERENCE_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
PROBABILITY_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))

MODEL_RELOAD_OUTCOMES = ("loaded", "missing", "corrupt", "spec_mismatch")
# Whether a purchase-scores.v2 record carries reasons: "explained", or why not: reasons turned
# off, a bundle without a training reference, or the stacked model call failed.
EXPLAIN_OUTCOMES = ("explained", "off", "no_reference", "failed")
# "valid", "replayed" (applied before a restart, skipped) or a reject class.
EVENT_OUTCOMES = ("valid", "replayed", *(c.value for c in ErrorClass))
ERROR_STAGES = (
    "batch", "model_reload", "observe", "dead_letter", "erase_command", "fenced",
    "checkpoint_encode",
)  # fmt: skip


@dataclass
class Metrics:
    """The worker's metrics, bound to one registry."""

    registry: CollectorRegistry = field(
        default_factory=lambda: CollectorRegistry(auto_describe=True)
    )

    def __post_init__(self) -> None:
        r = self.registry
        self.events_consumed = Counter(
            "intentflow_events_consumed_total",
            "Clickstream events consumed, by outcome: valid, replayed (already applied before a "
            "restart; not scored again) or the reject class.",
            ["outcome"], registry=r,
        )  # fmt: skip
        self.dlq_writes = Counter(
            "intentflow_dlq_writes_total",
            "Rejected events written to the dead-letter topic, by reject class.",
            ["reason"], registry=r,
        )  # fmt: skip
        self.scores_published = Counter(
            "intentflow_scores_published_total",
            "Purchase scores handed to the producer.",
            registry=r,
        )
        self.event_to_score_latency = Histogram(
            "intentflow_event_to_score_latency_seconds",
            "From the event's occurred_at to its score being handed to the producer.",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.ingest_to_score_latency = Histogram(
            "intentflow_ingest_to_score_latency_seconds",
            "From the worker consuming the event to its score being handed to the producer.",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.inference_batch_size = Histogram(
            "intentflow_inference_batch_events",
            "Events scored per onnxruntime call.",
            buckets=BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self.inference_duration = Histogram(
            "intentflow_inference_duration_seconds",
            "Wall time of one onnxruntime batch call, features included.",
            buckets=INFERENCE_BUCKETS, registry=r,
        )  # fmt: skip
        self.purchase_probability = Histogram(
            "intentflow_purchase_probability",
            "Distribution of published purchase probabilities (watch for drift).",
            buckets=PROBABILITY_BUCKETS, registry=r,
        )  # fmt: skip
        self.profile_users = Gauge(
            "intentflow_profile_table_users",
            "Users held in this worker's profile table (its assigned partitions).",
            registry=r,
        )
        self.model_info = Gauge(
            "intentflow_model_info",
            "The model being served (value 1), with its version and feature version.",
            ["model_version", "feature_version"], registry=r,
        )  # fmt: skip
        self.model_loaded_at = Gauge(
            "intentflow_model_loaded_timestamp_seconds",
            "Unix time the serving model was loaded.",
            registry=r,
        )
        self.model_reloads = Counter(
            "intentflow_model_reloads_total",
            "Model load attempts, by outcome: " + ", ".join(MODEL_RELOAD_OUTCOMES) + ".",
            ["outcome"], registry=r,
        )  # fmt: skip
        self.consumer_lag = Gauge(
            "intentflow_consumer_lag_messages",
            "Messages between the committed-or-processed offset and the log end, per partition.",
            ["topic", "partition"], registry=r,
        )  # fmt: skip
        self.last_event_processed = Gauge(
            "intentflow_last_event_processed_timestamp_seconds",
            "Unix time this worker last processed an event (alert on time() minus this).",
            registry=r,
        )
        self.ready = Gauge(
            "intentflow_worker_ready",
            "1 when the worker has a model and its partitions are assigned and recovered.",
            registry=r,
        )
        self.offset_rewinds = Counter(
            "intentflow_offset_rewinds_total",
            "Times a fetch skipped input offsets (around rebalances) and the worker seeked the "
            "partition back to read them, so they were applied in order rather than lost.",
            registry=r,
        )
        self.gc_pause = Histogram(
            "intentflow_gc_pause_seconds",
            "Wall time of each garbage collection, by generation (2: a full pass); the event "
            "loop waits for it.",
            ["generation"], buckets=INFERENCE_BUCKETS, registry=r,
        )  # fmt: skip
        self.checkpoint_duration = Histogram(
            "intentflow_checkpoint_duration_seconds",
            "Wall time of one checkpoint: deliveries awaited, changelog sent, RocksDB written, "
            "offsets committed.",
            buckets=INFERENCE_BUCKETS, registry=r,
        )  # fmt: skip
        self.checkpoint_users = Histogram(
            "intentflow_checkpoint_profiles",
            "Changed profiles written (changelog and RocksDB) per checkpoint.",
            buckets=BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self.erasures = Counter(
            "intentflow_erasures_total",
            "Erase commands executed on this worker's partitions, by whether the partition "
            "held a profile of the shopper.",
            ["outcome"], registry=r,
        )  # fmt: skip
        self.profiles_expired = Counter(
            "intentflow_profiles_expired_total",
            "Profiles deleted because they were idle longer than INTENTFLOW_PROFILE_TTL_DAYS.",
            registry=r,
        )
        self.errors = Counter(
            "intentflow_worker_errors_total",
            "Unexpected errors caught in the worker loop, by stage.",
            ["stage"], registry=r,
        )  # fmt: skip

        self.scores_explained = Counter(
            "intentflow_scores_v2_published_total",
            "purchase-scores.v2 records handed to the producer, by whether they carry reasons: "
            + ", ".join(EXPLAIN_OUTCOMES) + ".",
            ["reasons"], registry=r,
        )  # fmt: skip
        self.feature_drift_psi = Gauge(
            "intentflow_feature_drift_psi",
            "Population stability index of a feature group's live distribution (the scored "
            "rows, decayed window) against the serving model's training data; the group's most "
            "drifted feature. > 0.25: a large shift.",
            ["group"], registry=r,
        )  # fmt: skip
        self.feature_freshness = Gauge(
            "intentflow_feature_freshness_seconds",
            "Age of the newest profile update: now minus the event time of the newest event "
            "applied to a profile by this worker.",
            registry=r,
        )

        for outcome in EVENT_OUTCOMES:
            self.events_consumed.labels(outcome)
        for outcome in EXPLAIN_OUTCOMES:
            self.scores_explained.labels(outcome)
        for error_class in ErrorClass:
            self.dlq_writes.labels(error_class.value)
        for outcome in MODEL_RELOAD_OUTCOMES:
            self.model_reloads.labels(outcome)
        for stage in ERROR_STAGES:
            self.errors.labels(stage)
        for generation in ("0", "1", "2"):
            self.gc_pause.labels(generation)

    def set_model(self, model_version: str, feature_version: str) -> None:
        """Point model_info at the serving model only (one series with value 1)."""
        self.model_info.clear()
        self.model_info.labels(model_version, feature_version).set(1)
        self.model_loaded_at.set(time.time())

    def model_outcome(self, outcome: str, bundle: ModelBundle | None) -> None:
        """``ModelServer``'s callback: count the load attempt; point model_info at a new model."""
        self.model_reloads.labels(outcome).inc()
        if bundle is not None:
            self.set_model(bundle.model_version, bundle.feature_version)


def observe_many(histogram: Histogram, values: np.ndarray) -> None:
    """Observe a batch of values with one count per bucket instead of one call per value (the
    same result as ``observe`` for each, which a unit test checks). Reaches into the
    histogram's buckets: prometheus_client has no batch API."""
    if values.size == 0:
        return
    bounds = histogram._upper_bounds  # ascending, the last one +Inf
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    for bucket, count in zip(histogram._buckets, counts.tolist(), strict=False):
        if count:
            bucket.inc(count)
    histogram._sum.inc(float(values.sum()))
