"""The simulator's opt-in latent structure (issue 11): correlated and dormant interests, and
responses to suggestions with common random numbers, fed back by the closed loop."""

from __future__ import annotations

import numpy as np

from streams.sources.simulate import Behaviour, generate
from streams.sources.simulate.latent import coin, loadings, response_probability
from streams.sources.simulate.loop import ClosedLoop

DAY = 86_400.0
WORLD = Behaviour(interest_rank=4, dormant=2)


def test_options_change_the_stream_only_when_on_and_stay_deterministic() -> None:
    plain = [r.payload for r in generate(30, DAY, seed=3)]
    explicit = [r.payload for r in generate(30, DAY, seed=3, behaviour=Behaviour(dormant=0))]
    latent_a = [r.payload for r in generate(30, DAY, seed=3, behaviour=WORLD)]
    latent_b = [r.payload for r in generate(30, DAY, seed=3, behaviour=WORLD)]
    assert plain == explicit
    assert latent_a == latent_b and latent_a != plain


def test_correlated_interests_keep_the_marginal_spread() -> None:
    loop = ClosedLoop(3000, DAY, 5, Behaviour(interest_rank=4))
    eta = np.array([s.eta_base for s in loop.shoppers])
    assert np.allclose(eta.std(axis=0).mean(), Behaviour().interest_sd, rtol=0.08)
    # Low rank: the first 4 principal components hold most of the variance (0.7 by design).
    ev = np.sort(np.linalg.eigvalsh(np.cov(eta.T)))[::-1]
    assert ev[:4].sum() / ev.sum() > 0.6
    assert np.allclose(np.linalg.norm(loadings(5, 20, 4), axis=1), 1.0)


def test_dormant_interests_are_strong_but_rarely_visited_until_awakened() -> None:
    loop = ClosedLoop(400, 7 * DAY, 9, WORLD)
    visits = np.zeros((400, 20))
    for ev in loop:
        if ev.category_id:
            visits[ev.user_index, int(ev.category_id[1:3])] += 1
    dormant = [s.latent.dormant for s in loop.shoppers if s.latent]
    assert all(len(d) == 2 for d in dormant)
    share = visits / np.maximum(visits.sum(axis=1, keepdims=True), 1)
    d_share = np.mean([share[i, list(d)].mean() for i, d in enumerate(dormant)])
    assert d_share < 0.01  # nobody showed them anything: they stay asleep
    affinity = np.array([s.true_affinity() for s in loop.shoppers])
    assert all(affinity[i, list(d)].min() == 1.0 for i, d in enumerate(dormant))


def test_responses_use_common_coins_inject_events_and_awaken() -> None:
    a = ClosedLoop(5, DAY, 4, WORLD)
    b = ClosedLoop(5, DAY, 4, WORLD)
    shopper = a.shoppers[0]
    top = shopper.latent.dormant[0]  # type: ignore[union-attr]
    cluster = tuple(f"c{top:02d}{leaf:02d}" for leaf in range(15))
    ts = a.start_ms / 1000 + 3600
    outcomes = []
    for j in range(6):
        p = a.show(0, "kd", cluster, ts + j)
        assert p == float(response_probability(1.0, WORLD))
        outcomes.append(coin(4, 0, "kd", j) < p)
    # The same showings in another run face the same coins.
    assert [b.show(0, "kd", cluster, ts + j) > coin(4, 0, "kd", j) for j in range(6)] == outcomes
    engaged = sum(outcomes)
    injected = [ev for ev in a if ev.injected and ev.user_index == 0]
    assert len(injected) == 2 * engaged
    assert all(ev.category_id in cluster for ev in injected)
    assert (top in shopper.latent.awake) == (engaged >= WORLD.awaken_after)  # type: ignore[union-attr]


def test_response_probability_rises_with_affinity() -> None:
    p = response_probability(np.linspace(0, 1, 11), WORLD)
    assert np.all(np.diff(p) > 0)
    assert p[0] == WORLD.response_floor and p[-1] == WORLD.response_floor + WORLD.response_gain


def test_simulate_cli_writes_the_latent_sidecar(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from click.testing import CliRunner

    from streams.sources.simulate.cli import simulate_command

    out, latent = tmp_path / "sim.jsonl", tmp_path / "latent.jsonl"
    result = CliRunner().invoke(
        simulate_command,
        ["--users", "20", "--duration", "1d", "--seed", "3", "--dormant", "2",
         "--correlated-interests", "4", "--latent-out", str(latent), "--out", str(out), "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in latent.read_text().splitlines()]
    assert len(rows) == 20 and all(len(r["dormant"]) == 2 for r in rows)
    users = {json.loads(line)["user_id"] for line in out.read_text().splitlines()}
    assert users <= {r["user_id"] for r in rows}
    for r in rows:  # a dormant interest responds strongly when shown
        assert all(r["response_probabilities"][d] == max(r["response_probabilities"].values())
                   for d in r["dormant"])  # fmt: skip
