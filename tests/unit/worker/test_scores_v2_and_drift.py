"""The worker's side of issue 12 without a broker: purchase-scores.v2 on its own topic with its
reasons counted, and the drift and freshness gauges, fed a simulated stream with prices x3."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from prometheus_client import generate_latest

from streams import features
from streams.contracts.events import ClickEvent, decode_event
from streams.features.reference import fit_reference
from streams.model.bundle import ModelBundle, load_bundle
from streams.processing.step import Record, StepConfig, run_step
from streams.settings import load_settings
from streams.sources.simulate import generate
from streams.worker.drift import DRIFT_EXCLUDED_GROUPS, DRIFT_GROUPS, FeatureMonitor
from streams.worker.metrics import Metrics
from streams.worker.sending import publish_scores
from tests.bundles import make_bundle

BOTH = StepConfig(score_versions=frozenset({"1", "2"}), explain=True)


class Nobody:
    def get(self, partition: int, user_id: str, /) -> None:
        return None


class Profiles:
    """A ``ProfileLookup`` over the profiles the batches wrote (as the worker's cache)."""

    def __init__(self) -> None:
        self.stored: dict[str, Any] = {}

    def get(self, partition: int, user_id: str, /) -> Any:
        return self.stored.get(user_id)


class Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    async def send(self, topic: str, key: bytes, value: bytes, *_: Any) -> None:
        self.sent.append((topic, key, value))

    async def send_many(self, topic: str, records: list[tuple[bytes, bytes]]) -> list[Any]:
        self.sent.extend((topic, key, value) for key, value in records)
        return []


def _records(
    users: int, days: float, seed: int, *, price_factor: float = 1.0, limit: int | None = None
) -> list[Record]:
    out = []
    for rec in generate(users, days * 86400.0, seed):
        if not rec.valid:
            continue
        value = rec.payload
        if price_factor != 1.0:
            event = orjson.loads(value)
            if "price" in event:
                event["price"] = round(event["price"] * price_factor, 2)
            value = orjson.dumps(event)
        ts = rec.ts_ms / 1000
        out.append(Record("events", 0, len(out), rec.key, value, ts, ts))
        if limit is not None and len(out) >= limit:
            break
    return out


def _features_of(records: list[Record], bundle: ModelBundle) -> Any:
    """The features of every event, replayed as training does."""
    profiles: dict[str, features.Profile] = {}
    pairs = []
    for record in records:
        event = decode_event(record.value or b"")
        assert isinstance(event, ClickEvent)
        profiles[event.user_id] = features.update(profiles.get(event.user_id), event)
        pairs.append((profiles[event.user_id], event))
    return features.feature_matrix(pairs, bundle.embeddings)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelBundle, ModelBundle]:
    """A bundle whose reference is the simulator's (seed 7), and the same one without it."""
    base = tmp_path_factory.mktemp("drift")
    plain = load_bundle(make_bundle(base / "plain", "drift-plain", seed=2))
    reference = fit_reference(_features_of(_records(300, 2.0, seed=7), plain))
    with_ref = load_bundle(make_bundle(base / "ref", "drift-ref", seed=2, reference=reference))
    return plain, with_ref


def _gauges(metrics: Metrics) -> dict[str, float]:
    out = {}
    for family in metrics.registry.collect():
        if family.name == "intentflow_feature_drift_psi":
            out = {s.labels["group"]: s.value for s in family.samples}
    return out


def _feed(records: list[Record], bundle: ModelBundle, monitor: FeatureMonitor) -> None:
    """The worker's loop without Kafka: batches of 500 through run_step, then the monitor."""
    profiles = Profiles()
    for i in range(0, len(records), 500):
        out = run_step(records[i : i + 500], profiles, bundle, BOTH)
        for user, (stored, _) in out.applied.profiles.items():
            profiles.stored[user] = stored
        monitor.observe(bundle, out)


def test_prices_x3_raise_the_price_groups_psi_above_0_25_and_no_other(
    simulated: tuple[ModelBundle, ModelBundle],
) -> None:
    _, bundle = simulated
    ticks = iter(range(10**6))
    # A batch a second, a one-hour half-life: the window holds the whole stream.
    for factor in (1.0, 3.0):
        metrics = Metrics()
        monitor = FeatureMonitor(
            metrics, half_life_s=3600.0, clock=lambda: float(next(ticks)), wall=lambda: 0.0
        )
        _feed(_records(300, 2.0, seed=11, price_factor=factor), bundle, monitor)
        psi = _gauges(metrics)
        print(f"prices x{factor:g}: " + ", ".join(f"{g} {v:.3f}" for g, v in psi.items()))
        assert set(psi) == set(DRIFT_GROUPS) and not set(psi) & set(DRIFT_EXCLUDED_GROUPS)
        others = {g: v for g, v in psi.items() if g != "price"}
        assert max(others.values()) < 0.25, others  # other shoppers, same simulator: stable
        if factor == 1.0:
            assert psi["price"] < 0.25
        else:
            assert psi["price"] > 0.25


def test_no_psi_before_enough_rows_nor_for_a_bundle_without_reference(
    simulated: tuple[ModelBundle, ModelBundle],
) -> None:
    plain, bundle = simulated
    metrics = Metrics()
    monitor = FeatureMonitor(metrics, half_life_s=600.0, clock=lambda: 0.0, wall=lambda: 0.0)
    records = _records(50, 1.0, seed=3, limit=700)
    out = run_step(records[:100], Nobody(), bundle, BOTH)
    monitor.observe(bundle, out)
    assert _gauges(metrics) == {}  # 100 rows: fewer than MIN_ROWS
    monitor.observe(bundle, run_step(records[100:], Nobody(), bundle, BOTH))
    assert set(_gauges(metrics)) == set(DRIFT_GROUPS)
    monitor.observe(plain, run_step(records[:10], Nobody(), plain, BOTH))  # a model roll
    assert _gauges(metrics) == {} and monitor.window is None


def test_freshness_is_the_age_of_the_newest_applied_event(
    simulated: tuple[ModelBundle, ModelBundle],
) -> None:
    _, bundle = simulated
    metrics = Metrics()
    now = [0.0]
    monitor = FeatureMonitor(metrics, half_life_s=600.0, wall=lambda: now[0])
    assert math.isnan(monitor.freshness())
    records = _records(20, 1.0, seed=5, limit=50)
    newest = max(r.timestamp or 0.0 for r in records)
    monitor.observe(bundle, run_step(records, Nobody(), bundle, BOTH))
    now[0] = newest + 42.0
    text = generate_latest(metrics.registry).decode()
    assert "intentflow_feature_freshness_seconds 42.0" in text
    monitor.observe(bundle, run_step(records[:5], Nobody(), bundle, BOTH))  # older events
    assert monitor.freshness() == 42.0


@pytest.mark.parametrize(
    ("reasons", "use_reference", "outcome"),
    [(True, True, "explained"), (False, True, "off"), (True, False, "no_reference")],
)
def test_v2_goes_to_its_own_topic_and_its_reasons_are_counted(
    simulated: tuple[ModelBundle, ModelBundle],
    reasons: bool,
    use_reference: bool,
    outcome: str,
) -> None:
    plain, with_ref = simulated
    bundle = with_ref if use_reference else plain
    settings = load_settings(topic_scores="scores.v1", reasons=reasons)
    config = StepConfig(score_versions=settings.score_versions, explain=settings.reasons)
    metrics = Metrics()
    w = SimpleNamespace(
        settings=settings,
        metrics=metrics,
        app=SimpleNamespace(producer=Producer()),
        models=SimpleNamespace(bundle=bundle),
    )
    out = run_step(_records(20, 1.0, seed=5, limit=60), Nobody(), bundle, config)
    asyncio.run(publish_scores(w, out.scored, 0.0))  # type: ignore[arg-type]
    sent = w.app.producer.sent
    assert [t for t, *_ in sent] == ["scores.v1"] * 60 + ["scores.v2"] * 60
    v2 = [orjson.loads(v) for t, _, v in sent if t == "scores.v2"]
    assert all((r["reasons"] is not None) == (outcome == "explained") for r in v2)
    counted = {
        s.labels["reasons"]: s.value
        for f in metrics.registry.collect()
        if f.name == "intentflow_scores_v2_published"
        for s in f.samples
        if s.name.endswith("_total")
    }
    assert counted == {k: (60.0 if k == outcome else 0.0) for k in counted}
    assert len(counted) == 4


def test_v2_topic_defaults_and_versions_from_settings(tmp_path: Path) -> None:
    s = load_settings()
    assert (s.topic_scores, s.scores_v2_topic) == ("purchase-scores.v1", "purchase-scores.v2")
    assert s.score_versions == {"1", "2"} and s.reasons
    assert load_settings(topic_scores="s-1").scores_v2_topic == "s-1.v2"
    assert load_settings(topic_scores_v2="mine").scores_v2_topic == "mine"
    assert load_settings(publish_scores_v1=False).score_versions == {"2"}
    from streams.errors import ConfigError
    from streams.kafka.topics import topic_specs

    assert "purchase-scores.v2" in {t.name for t in topic_specs(s)}
    assert "purchase-scores.v2" not in {
        t.name for t in topic_specs(load_settings(publish_scores_v2=False))
    }
    with pytest.raises(ConfigError, match="both off"):
        load_settings(publish_scores_v1=False, publish_scores_v2=False)
    with pytest.raises(ConfigError, match="its own topic"):
        load_settings(topic_scores_v2="purchase-scores.v1")
