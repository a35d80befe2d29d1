"""Reasons in the step: one onnxruntime call, the same impacts as one call per copy, v1 bytes
unchanged, and no reasons (but the same scores) from a bundle without a reference."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from jsonschema import Draft202012Validator, FormatChecker

from streams import features
from streams.contracts.events import ClickEvent, decode_event
from streams.features.reference import fit_reference
from streams.model.bundle import ModelBundle, load_bundle
from streams.processing import reasons
from streams.processing.step import Record, Row, StepConfig, apply_batch, run_step, score
from tests.bundles import make_bundle
from tests.conftest import SCHEMAS
from tests.integration.harness import click_events

START = 1_760_000_000.0
STAMP = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
BOTH = frozenset({"1", "2"})


def _records(n: int, users: int = 12, seed: int = 3) -> list[Record]:
    out = []
    for i, (key, value) in enumerate(click_events(n, users=users, seed=seed, start=START)):
        event = decode_event(value)
        assert isinstance(event, ClickEvent)
        out.append(Record("events", 0, i, key, value, START, event.ts))
    return out


class Nobody:
    def get(self, partition: int, user_id: str, /) -> None:
        return None


def _rows(n: int = 300) -> list[Row]:
    return apply_batch(_records(n), Nobody(), StepConfig()).rows


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelBundle, ModelBundle]:
    """The same model with and without a reference (fitted on another stream's features)."""
    rows = apply_batch(_records(2000, users=40, seed=9), Nobody(), StepConfig()).rows
    base = tmp_path_factory.mktemp("reasons")
    plain = load_bundle(make_bundle(base / "plain", "unit-plain", seed=5))
    x = features.feature_matrix([(r.profile, r.event) for r in rows], plain.embeddings)
    explained = load_bundle(
        make_bundle(base / "ref", "unit-ref", seed=5, reference=fit_reference(x))
    )
    return plain, explained


def _v2(records: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
    return [orjson.loads(v) for _, v in records]


def test_reasons_come_from_one_onnxruntime_call(
    bundles: tuple[ModelBundle, ModelBundle], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, bundle = bundles
    calls: list[int] = []
    original = ModelBundle.predict

    def counting(self: ModelBundle, X: np.ndarray) -> np.ndarray:  # noqa: N803
        calls.append(len(X))
        return original(self, X)

    monkeypatch.setattr(ModelBundle, "predict", counting)
    rows = _rows()
    scored = score(rows, bundle, top_k=5, scored_at=STAMP, versions=BOTH, explain=True)
    assert scored.explained and len(scored.records_v2) == len(rows)
    n_interests = sum(min(3, len(r.profile.weights)) for r in rows)
    assert calls == [len(rows) * (1 + len(reasons.GROUPS)) + 1 + n_interests]


def test_batched_impacts_equal_one_call_per_occluded_copy(
    bundles: tuple[ModelBundle, ModelBundle],
) -> None:
    _, bundle = bundles
    rows = _rows(120)
    x = features.feature_matrix([(r.profile, r.event) for r in rows], bundle.embeddings)
    tops = [features.top_categories(r.profile, 3) for r in rows]
    explained = reasons.explain(bundle, x, tops)
    assert explained is not None
    stacked, layout = reasons.occlusions(x, tops, bundle)
    one_by_one = np.array([bundle.predict(stacked[i : i + 1])[0] for i in range(len(stacked))])
    alone = one_by_one.astype(np.float64)
    p = alone[: layout.n]
    expected = (
        p[:, None]
        - alone[layout.groups_start : layout.interests_start]
        .reshape(len(reasons.GROUPS), layout.n)
        .T
    )
    assert np.abs(explained.impacts - expected).max() <= 1e-6
    assert explained.reference_probability == pytest.approx(alone[layout.n], abs=1e-6)
    dropped = p[layout.owners] - alone[layout.interests_start :]
    got = [impact for row in explained.interests for _, impact in row]
    assert np.abs(np.array(got) - dropped).max() <= 1e-6
    # The batch's own probabilities are those of the batch scored alone.
    np.testing.assert_allclose(explained.probabilities, bundle.predict(x), atol=1e-6)
    # Each row's interests are its own (in order, strongest first) and the published object
    # is the reasons' wire form.
    for j in range(len(rows)):
        why = explained.reasons(j)
        assert [c for c, _ in why.interests] == [c for c, _ in tops[j][: reasons.N_INTERESTS]]
        assert explained.wire(j) == why.to_wire()
        impacts = explained.impacts[j]
        assert why.top == [
            (reasons.GROUPS[k], impacts[k])
            for k in np.argsort(-np.abs(impacts), kind="stable")[: reasons.N_REASONS]
            if impacts[k] != 0.0
        ]


def test_v2_records_carry_v1_fields_and_reasons_valid_against_the_schema(
    bundles: tuple[ModelBundle, ModelBundle],
) -> None:
    _, bundle = bundles
    rows = _rows()
    both = score(rows, bundle, top_k=5, scored_at=STAMP, versions=BOTH, explain=True)
    v1_only = score(rows, bundle, top_k=5, scored_at=STAMP)
    assert both.records == v1_only.records  # v1 bytes do not depend on v2 or reasons
    np.testing.assert_array_equal(both.probabilities, v1_only.probabilities)
    validator = Draft202012Validator(
        json.loads(Path(SCHEMAS / "purchase-scores.v2.json").read_text()),
        format_checker=FormatChecker(),
    )
    for (key1, v1), (key2, v2) in zip(both.records, both.records_v2, strict=True):
        one, two = orjson.loads(v1), orjson.loads(v2)
        validator.validate(two)
        assert key1 == key2
        assert {k: v for k, v in two.items() if k not in ("reasons", "exploration")} == {
            **one,
            "schema_version": "2",
        }
        assert two["exploration"] is None
        why = two["reasons"]
        impacts = [abs(r["impact"]) for r in why["top"]]
        assert 1 <= len(impacts) <= 3 and impacts == sorted(impacts, reverse=True)
        assert all((r["impact"] > 0) == (r["direction"] == "up") for r in why["top"])
        assert {r["code"] for r in why["top"]} <= set(features.FEATURE_SPEC.groups)
        strongest = [c["category_id"] for c in one["top_categories"][:3]]
        assert [i["category_id"] for i in why["interests"]] == strongest


def test_a_bundle_without_reference_scores_the_same_with_reasons_null(
    bundles: tuple[ModelBundle, ModelBundle],
) -> None:
    plain, bundle = bundles
    rows = _rows(50)
    without = score(rows, plain, top_k=5, scored_at=STAMP, versions=BOTH, explain=True)
    with_ = score(rows, bundle, top_k=5, scored_at=STAMP, versions=BOTH, explain=True)
    assert not without.explained and with_.explained
    np.testing.assert_allclose(without.probabilities, with_.probabilities, atol=1e-6)
    assert all(r["reasons"] is None for r in _v2(without.records_v2))
    off = score(rows, bundle, top_k=5, scored_at=STAMP, versions=BOTH, explain=False)
    assert not off.explained and all(r["reasons"] is None for r in _v2(off.records_v2))


def test_the_step_config_chooses_the_versions(bundles: tuple[ModelBundle, ModelBundle]) -> None:
    _, bundle = bundles
    batch = _records(40)
    v2_only = run_step(
        batch, Nobody(), bundle, StepConfig(score_versions=frozenset({"2"}), explain=True)
    )
    assert not v2_only.scored.records and len(v2_only.scored.records_v2) == 40
    assert v2_only.scored.explained
    default = run_step(batch, Nobody(), bundle, StepConfig())
    assert len(default.scored.records) == 40 and not default.scored.records_v2
    assert default.scored.features is not None and default.scored.features.shape[0] == 40


def test_a_failing_stacked_call_falls_back_to_the_batch_alone(
    bundles: tuple[ModelBundle, ModelBundle], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, bundle = bundles
    rows = _rows(30)
    original = ModelBundle.predict

    def small_only(self: ModelBundle, X: np.ndarray) -> np.ndarray:  # noqa: N803
        if len(X) > len(rows):
            raise RuntimeError("out of memory")
        return original(self, X)

    monkeypatch.setattr(ModelBundle, "predict", small_only)
    scored = score(rows, bundle, top_k=5, scored_at=STAMP, versions=BOTH, explain=True)
    assert not scored.explained and not scored.dead_letters
    assert len(scored.records_v2) == 30
    assert all(r["reasons"] is None for r in _v2(scored.records_v2))
