"""Exploration: bandit suggestions beside the exploit interests. Pure: numpy and stdlib only.

Per user, an ``ExploreState`` (kept in the profile, see ``encoding.encode_profile``) holds
decayed success and failure counts per arm and the user's open *exposures* (suggestions that
were published and await an answer). ``Explorer.apply`` runs once per event, after the
profile update, in event time:

1. **Feedback.** Counts decay (``half_life_s``). An exposure older than ``window_s`` expires
   as a failure; an engagement (view, click, favourite, cart, purchase) with a category of an
   open exposure's arm within its window is a success and closes it.
2. **Decision.** While fewer than ``slots`` exposures are open, a new one is drawn from the
   eligible arms (not among the user's ``exclude_top`` strongest interests, holding less than
   ``known_share`` of their interest weight unless exploring found it, not open: engagement
   with an arm the user visits anyway would say nothing about the suggestion). Each
   slot: with probability ``floor`` uniformly at random; otherwise with probability ``rate``
   by the policy (``ts``: Thompson sampling of per-user Beta posteriors with the population
   prior; ``greedy``: the posterior mean; ``random``: uniform), else by exploit (the eligible
   arm the user already shows most interest in). The probability of the chosen arm under this
   mixture is its *propensity*; the floor keeps it at least ``floor / eligible``. Several free
   slots are filled from one posterior draw (its best arm, then its next best), each
   propensity given the arms already chosen. Thompson sampling's share of an arm is the
   probability ``p`` that the arm wins a posterior draw; what offline evaluation needs is
   ``1 / p`` (inverse propensity weighting). A user whose posterior is the population prior
   alone (no counts yet, every interest in one arm, or none: most first events) shares it
   with every such user, and ``p`` comes from a table of ``PRIOR_TABLE_DRAWS`` draws made once
   per (home arm, eligible arms) and kept (``PriorTable``). Any other posterior draws
   ``propensity_draws`` (16) more rows of its own, and logs ``(1 + W) / 17`` with ``W`` the
   rows the arm wins: the choosing draw counted. Its inverse is the estimate of ``1 / p`` with
   E[17 / (1 + W)] = (1 - (1 - p)^17) / p, nearly unbiased unless the arm is rarely chosen,
   and never infinite; ``W / 16`` would estimate ``p`` without bias but its inverse would not
   (an arm that wins none of the 16 rows would be weighted by the floor alone: in a
   closed-loop check the inverse weights of a uniform policy averaged 5.8 instead of 1).
3. Every score lists the open exposures as its suggestions (``Explorer.suggestions``), each as
   its decision saw it: the arm's posterior mean and strength it drew from and the top
   interest it was similar to are kept in the exposure (profile format 6), so a score reads
   them instead of recomputing the prior over the user's interests.

Deterministic: every random number comes from a generator seeded by the event id, so a
replayed event yields the same decision.
"""

from __future__ import annotations

import hashlib
import math
import operator
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

import numpy as np

from streams.features.arms import Arms
from streams.features.embeddings import CategoryEmbeddings

POLICIES: Final = ("ts", "greedy", "random", "exploit")
ENGAGEMENTS: Final = frozenset({"view", "click", "favorite", "add_to_cart", "purchase"})
MAX_COUNTS: Final = 32  # arms with counts kept per user (the weakest evidence evicted)
MIN_COUNT: Final = 0.01  # decayed evidence below this is dropped
DRAW_EXPLOIT, DRAW_POLICY, DRAW_FLOOR = 0, 1, 2
_POLICY_DRAW: Final = {"ts": "sampled", "greedy": "mean", "random": "uniform", "exploit": "exploit"}
SIMILAR_MIN: Final = 0.3  # cosine above which a suggestion is "similar to" an interest


@dataclass(frozen=True, slots=True)
class ExploreConfig:
    """The exploration knobs (``INTENTFLOW_EXPLORE_*`` in the settings)."""

    policy: str = "ts"
    rate: float = 1.0  # share of slots given to the policy rather than to exploit
    slots: int = 2  # open suggestions per user
    floor: float = 0.05  # share of slots drawn uniformly (known propensity)
    window_s: float = 1800.0  # an exposure answered within this (event time) is a success
    half_life_s: float = 14 * 86_400.0  # success and failure counts decay
    exclude_top: int = 3  # the user's strongest interests are never suggested ...
    known_share: float = 0.05  # ... nor an arm holding this share of their interest or more
    propensity_draws: int = 16  # extra posterior draws that estimate a TS propensity

    def __post_init__(self) -> None:
        problems = []
        if self.policy not in POLICIES:
            problems.append(f"policy {self.policy!r} is not one of {', '.join(POLICIES)}")
        if not 0.0 <= self.rate <= 1.0:
            problems.append(f"rate {self.rate} is outside [0, 1]")
        if not 0.0 <= self.floor <= 1.0:
            problems.append(f"floor {self.floor} is outside [0, 1]")
        if not 1 <= self.slots <= 8:
            problems.append(f"slots {self.slots} is outside 1..8")
        if not (self.window_s > 0 and self.half_life_s > 0):
            problems.append("window and half-life must be positive")
        if not 0 <= self.exclude_top <= 32 or not 1 <= self.propensity_draws <= 10_000:
            problems.append("exclude_top must be 0..32 and propensity_draws 1..10000")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True, slots=True)
class Exposure:
    """A published suggestion waiting for its answer, with what its decision saw: the arm's
    posterior and the top interest it was similar to. ``mean`` and ``strength`` are None on
    an exposure of profile format 5 or older, which did not keep them (``suggestions``
    computes them when it is read)."""

    arm: int
    opened_at: float  # event time, unix seconds
    propensity: float  # P(this arm | the policy, the state) when it was drawn
    draw: int  # DRAW_EXPLOIT, DRAW_POLICY or DRAW_FLOOR
    mean: float | None = None  # the arm's posterior mean when it was drawn (float32)
    strength: float | None = None  # and its strength, in pseudo-observations (float32)
    similar: str | None = None  # the top interest it was similar to (None: new to you)


@dataclass(frozen=True, slots=True)
class ExploreState:
    """One user's exploration state. Counts are decayed as of ``clock``, the time they last
    changed (decay is applied lazily: when they change, and when they are read)."""

    clock: float
    counts: Mapping[int, tuple[float, float]] = field(default_factory=dict)  # arm -> (s, f)
    open: tuple[Exposure, ...] = ()


class _Candidates(NamedTuple):
    """What a decision draws from, all of it computed before its first random number."""

    eligible: tuple[int, ...]  # the eligible arms; a position j below is an index into it
    alpha: np.ndarray  # their Beta posteriors (the population prior plus decayed counts)
    beta: np.ndarray
    mean: list[float]  # alpha / (alpha + beta)
    strengths: list[float]  # alpha + beta
    exploit_order: list[int]  # positions, the exploit pick first (empty: exploit not drawn)
    # A prior-only posterior's home arm: no counts, and every interest in that arm (or none:
    # -1), so the posterior is a function of it and the eligible arms. None for any other.
    home: int | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """What one event did to the exploration state (the harness's and the metrics' view)."""

    opened: tuple[Exposure, ...] = ()
    closed: tuple[tuple[int, bool], ...] = ()  # (arm, success)
    eligible: tuple[int, ...] = ()  # the arms that were eligible when ``opened`` were drawn


PRIOR_TABLE_DRAWS: Final = 8192  # posterior draws behind a prior-only state's propensities
MAX_PRIOR_TABLES: Final = 512  # (home arm, eligible arms) tables kept per Explorer (32 KB each)


class PriorTable:
    """Thompson sampling's win probabilities for one prior-only posterior (every user with the
    same home arm and eligible arms has it), from ``PRIOR_TABLE_DRAWS`` draws of a generator
    seeded by the key, so every worker and the evaluation harness build the same table.

    Only each draw's ``slots`` best positions are kept: after ``c`` chosen positions, a draw's
    winner among the rest is the first of its ranking not chosen, and ``c < slots``."""

    __slots__ = ("_n", "_ranks", "_shares")

    def __init__(
        self, key: tuple[int, tuple[int, ...]], alpha: np.ndarray, beta: np.ndarray, slots: int
    ) -> None:
        digest = hashlib.sha256(f"intentflow-explore-prior/{key!r}".encode()).digest()
        generator = np.random.Generator(np.random.SFC64(int.from_bytes(digest[:16], "little")))
        draws = generator.beta(alpha, beta, size=(PRIOR_TABLE_DRAWS, len(alpha)))
        self._n = len(alpha)
        keep = min(slots, self._n)
        self._ranks = np.argsort(-draws, axis=1, kind="stable")[:, :keep].astype(np.int16)
        self._shares: dict[frozenset[int], list[float]] = {}

    def share(self, chosen: frozenset[int], j: int) -> float:
        """P(position ``j`` wins a posterior draw | the positions ``chosen`` are out)."""
        shares = self._shares.get(chosen)
        if shares is None:
            ranks = self._ranks
            if chosen:  # each draw's first position not chosen
                first = (~np.isin(ranks, list(chosen))).argmax(axis=1)
                winners = ranks[np.arange(len(ranks)), first]
            else:
                winners = ranks[:, 0]
            counts = np.bincount(winners, minlength=self._n)
            shares = self._shares[chosen] = (counts / len(ranks)).tolist()
        return shares[j]


_F32 = struct.Struct("<f")
_F32X3 = struct.Struct("<3f")


def f32(x: float) -> float:
    """Round to float32, the precision the profile stores, so stored == in memory."""
    return float(_F32.unpack(_F32.pack(x))[0])


_ISO: dict[float, str] = {}


def _iso(ts: float) -> str:
    """RFC 3339 text of an exposure's time; cached, since every score of the user repeats it."""
    text = _ISO.get(ts)
    if text is None:
        if len(_ISO) > 100_000:
            _ISO.clear()
        text = _ISO[ts] = datetime.fromtimestamp(ts, UTC).isoformat()
    return text


class EventRng:
    """One generator, reseeded per event: a replayed event draws the same numbers.

    The SFC64 state is the 256 bits of sha256("intentflow-explore/" + event id): setting a
    state costs a microsecond where building a seeded generator costs ten.
    """

    __slots__ = ("_bits", "_state", "_words", "generator")

    def __init__(self) -> None:
        self._bits = np.random.SFC64(0)
        self.generator = np.random.Generator(self._bits)
        self._words = np.zeros(4, dtype=np.uint64)  # the state, rewritten per event
        self._state: Any = {  # numpy's SFC64 state dict
            "bit_generator": "SFC64",
            "state": {"state": self._words},
            "has_uint32": 0,
            "uinteger": 0,
        }

    def seed(self, event_id: str) -> np.random.Generator:
        """The generator, at the start of ``event_id``'s stream."""
        digest = hashlib.sha256(b"intentflow-explore/" + event_id.encode("utf-8")).digest()
        self._words[:] = np.frombuffer(digest, dtype="<u8")
        self._bits.state = self._state  # copied in: the words can be reused
        return self.generator


def observe(
    state: ExploreState, ts: float, arm: int | None, engaged: bool, config: ExploreConfig
) -> tuple[ExploreState, tuple[tuple[int, bool], ...]]:
    """Expire exposures older than the window (as of ``ts``) as failures and count an
    engagement with an open exposure's arm as a success; when that changes the counts, they
    are decayed to ``ts`` first. Out-of-order events never decay backwards."""
    window = config.window_s
    for exp in state.open:  # most events close nothing: say so before building anything
        if exp.opened_at + window < ts or (engaged and exp.arm == arm and ts >= exp.opened_at):
            break
    else:
        return state, ()
    closed: list[tuple[int, bool]] = []
    still: list[Exposure] = []
    for exp in state.open:
        if exp.opened_at + config.window_s < ts:
            closed.append((exp.arm, False))
        elif engaged and exp.arm == arm and ts >= exp.opened_at and (exp.arm, True) not in closed:
            closed.append((exp.arm, True))
        else:
            still.append(exp)
    if not closed:
        return state, ()
    clock = max(ts, state.clock)
    f = decay(state, clock, config)
    counts = {a: (s * f, n * f) for a, (s, n) in state.counts.items()}
    for a, success in closed:
        s, n = counts.get(a, (0.0, 0.0))
        counts[a] = (s + 1.0, n) if success else (s, n + 1.0)
    kept = {a: (f32(s), f32(n)) for a, (s, n) in counts.items() if s + n >= MIN_COUNT}
    if len(kept) > MAX_COUNTS:
        ranked = sorted(kept.items(), key=lambda kv: (-(kv[1][0] + kv[1][1]), kv[0]))
        kept = dict(ranked[:MAX_COUNTS])
    return ExploreState(clock, kept, tuple(still)), tuple(closed)


def decay(state: ExploreState, ts: float, config: ExploreConfig) -> float:
    """The factor that decays the state's counts from its clock to ``ts`` (never above 1)."""
    return 0.5 ** ((ts - state.clock) / config.half_life_s) if ts > state.clock else 1.0


class Explorer:
    """The exploration policy for one bundle's arms (``arms``, ``embeddings``) and a config.
    Not thread-safe: it reuses one generator (``EventRng``)."""

    __slots__ = ("_arm_out", "_fresh", "_rng", "_tables", "arms", "config", "embeddings")

    def __init__(self, arms: Arms, embeddings: CategoryEmbeddings, config: ExploreConfig) -> None:
        self.arms = arms
        self.embeddings = embeddings
        self.config = config
        self._rng = EventRng()
        # per arm, what every suggestion of it repeats: its name and first categories
        self._arm_out: dict[tuple[int, int], tuple[str, tuple[str, ...]]] = {}
        # per arm (-1: no interest), the candidates of a fresh state (see ``_candidates``)
        self._fresh: dict[int, _Candidates | None] = {}
        # the propensity tables of prior-only posteriors, by (home arm, eligible arms)
        self._tables: dict[tuple[int, tuple[int, ...]], PriorTable] = {}

    def apply(
        self,
        state: ExploreState | None,
        *,
        event_id: str,
        ts: float,
        event_type: str,
        category_id: str | None,
        weights: Mapping[str, float],
    ) -> tuple[ExploreState, Decision]:
        """The state after one event (feedback, then a decision if a slot is free).
        ``weights`` are the user's interest weights after the event."""
        cfg = self.config
        if state is None:
            state = ExploreState(ts)
        if state.open:
            arm = (
                self.arms.arm_of(category_id, self.embeddings) if category_id is not None else None
            )  # fmt: skip
            state, closed = observe(state, ts, arm, str(event_type) in ENGAGEMENTS, cfg)
        else:
            closed = ()
        if len(state.open) >= cfg.slots:
            return state, Decision((), closed, ()) if closed else _NOTHING
        state, opened, eligible = self.decide(state, event_id=event_id, ts=ts, weights=weights)
        return state, Decision(opened, closed, eligible)

    def decide(
        self, state: ExploreState, *, event_id: str, ts: float, weights: Mapping[str, float]
    ) -> tuple[ExploreState, tuple[Exposure, ...], tuple[int, ...]]:
        """Fill the free slots: (the new state, the exposures opened, the arms eligible).

        Runs on a sizeable share of events (every free slot), so it stays in plain Python
        over lists where numpy's per-call overhead would exceed the work, and keeps numpy for
        the prior (a matrix product) and the posterior draws."""
        cfg = self.config
        free = cfg.slots - len(state.open)
        if free <= 0:
            return state, (), ()
        top_ids, candidates = self._candidates(state, ts, weights)
        if candidates is None:
            return state, (), ()
        eligible, alpha, beta, mean, strengths, exploit_order, _ = candidates
        n_all = len(eligible)
        rng = self._rng.seed(event_id)
        rate = 0.0 if cfg.policy == "exploit" else cfg.rate
        draws = table = None
        if cfg.policy == "ts":  # one posterior draw (row 0) fills every slot; the rest: propensity
            table = self._prior_table(candidates)
            rows = 1 if table is not None else cfg.propensity_draws + 1
            draws = rng.beta(alpha, beta, size=(rows, n_all))
        live = list(range(n_all))  # the positions still free, in order
        chosen: frozenset[int] = frozenset()  # and those taken by the slots before
        opened: list[Exposure] = []
        slots = min(free, n_all)
        for slot in range(slots):
            n = len(live)
            u_floor, u_rate = rng.random(2).tolist()
            # -1: not needed (an empty order: exploit cannot be drawn)
            exploit = next((j for j in exploit_order if j in live), -1) if exploit_order else -1
            winners: list[int] = []
            if draws is not None:
                winners = draws.argmax(axis=1).tolist()
                policy_pick = winners[0]  # the other rows: the propensity's
            elif cfg.policy == "greedy":
                policy_pick = min(live, key=lambda j: (-mean[j], j))
            elif cfg.policy == "random":
                policy_pick = live[int(rng.integers(n))]
            else:
                policy_pick = exploit
            if u_floor < cfg.floor:
                j, draw = live[int(rng.integers(n))], DRAW_FLOOR
            elif u_rate < rate:
                j, draw = policy_pick, DRAW_POLICY
            else:
                j, draw = exploit, DRAW_EXPLOIT
            if table is not None:
                p_policy = table.share(chosen, j)
            elif draws is not None:  # the choosing row counted (see the module doc)
                p_policy = winners.count(j) / (cfg.propensity_draws + 1)
            elif cfg.policy == "random":
                p_policy = 1.0 / n
            else:
                p_policy = float(j == policy_pick)
            propensity = cfg.floor / n + (1.0 - cfg.floor) * (
                rate * p_policy + (1.0 - rate) * float(j == exploit)
            )
            a = eligible[j]
            p32, mean32, strength32 = _F32X3.unpack(_F32X3.pack(propensity, mean[j], strengths[j]))
            opened.append(Exposure(a, ts, p32, draw, mean32, strength32, self._similar(a, top_ids)))
            if slot + 1 < slots:  # the next slot draws over the arms still free
                live.remove(j)
                chosen |= {j}
                if draws is not None:
                    draws[:, j] = -np.inf
        new = ExploreState(state.clock, state.counts, state.open + tuple(opened))
        return new, tuple(opened), eligible

    def _candidates(
        self, state: ExploreState, ts: float, weights: Mapping[str, float]
    ) -> tuple[Sequence[str], _Candidates | None]:
        """The user's top interests (``exclude_top``) and what a decision draws from.

        Most decisions are a new shopper's first: one interest (or none) and an empty state.
        Then the shares are one-hot on that interest's arm (w / w is exactly 1), so the
        candidates depend on that arm alone and are memoised per arm (``_fresh``, at most
        one entry per arm and one for no interest: bounded by construction, and valid for
        this Explorer's arms and config only). Their arrays are made read-only: the draws
        are fresh arrays, and only a state with counts (never memoised) adds to alpha and
        beta."""
        if not state.counts and not state.open:
            key: int | None = None
            top_ids: tuple[str, ...] = ()
            if not weights:
                key = -1
            elif len(weights) == 1:
                ((category, weight),) = weights.items()
                if 0.0 < weight < math.inf:
                    key = self.arms.arm_of(category, self.embeddings)
                    top_ids = (category,) if self.config.exclude_top > 0 else ()
            if key is not None:
                fresh = self._fresh
                if key not in fresh:
                    found = fresh[key] = self._compute_candidates(state, ts, weights)[1]
                    if found is not None:
                        found.alpha.flags.writeable = found.beta.flags.writeable = False
                return top_ids, fresh[key]
        return self._compute_candidates(state, ts, weights)

    def _compute_candidates(
        self, state: ExploreState, ts: float, weights: Mapping[str, float]
    ) -> tuple[Sequence[str], _Candidates | None]:
        """``_candidates`` computed in full: the top interests, and the eligible arms (None if
        there are none), their posteriors and, if exploit can be drawn, their exploit order."""
        cfg = self.config
        arms, embeddings = self.arms, self.embeddings
        shares = arms.shares(weights, embeddings)
        share_list = shares.tolist()
        top_ids = [c for c, _ in strongest(weights, cfg.exclude_top)]
        exclude = {arms.arm_of(c, embeddings) for c in top_ids}
        exclude.update(e.arm for e in state.open)
        found = {a for a, (successes, _) in state.counts.items() if successes >= 0.5}
        known_share = cfg.known_share
        eligible = [
            a
            for a, share in enumerate(share_list)
            if a not in exclude and (share < known_share or a in found)
        ]
        if not eligible:
            return top_ids, None
        idx = np.asarray(eligible)
        # The posterior of the eligible arms: the population prior plus the decayed counts.
        strength = arms.prior_strength
        prior = arms.prior_mean(shares, idx)
        alpha, beta = strength * prior, strength * (1.0 - prior)
        if state.counts:
            factor = decay(state, ts, cfg)
            position = {a: i for i, a in enumerate(eligible)}
            for a, (s, f) in state.counts.items():
                i = position.get(a)
                if i is not None:
                    alpha[i] += s * factor
                    beta[i] += f * factor
        rate = 0.0 if cfg.policy == "exploit" else cfg.rate
        both = alpha + beta
        mean, strengths = (alpha / both).tolist(), both.tolist()
        # Exploit: the strongest known interest among the eligible (then the prior mean); only
        # needed when it can be drawn (a rate below 1) or is the policy.
        exploit_order = (
            [j for _, _, j in sorted([(-s, -m, j) for j, (s, m) in enumerate(zip(
                [share_list[a] for a in eligible], mean, strict=True))])]
            if rate < 1.0 else []
        )  # fmt: skip
        home = None
        if not state.counts:  # a prior-only posterior: shares exactly one-hot, or all zero
            zeros = share_list.count(0.0)
            if zeros == len(share_list):
                home = -1
            elif zeros == len(share_list) - 1 and 1.0 in share_list:
                home = share_list.index(1.0)
        return top_ids, _Candidates(
            tuple(eligible), alpha, beta, mean, strengths, exploit_order, home
        )

    def warm(self) -> int:
        """Build the propensity tables of a new shopper's first decision, whatever arm their
        first category is in (or none), before the first events need them: about 10 ms each,
        one per arm, paid at start-up instead of by the first shoppers. Returns how many
        tables there are. Decides through ``decide`` itself, so the tables are exactly the
        ones later decisions look up; the decisions are thrown away."""
        if self.config.policy != "ts":
            return 0
        firsts: list[dict[str, float]] = [{}]
        firsts += [{cats[0]: 1.0} for cats in self.arms.categories if cats]
        for weights in firsts:
            self.decide(ExploreState(0.0), event_id="intentflow-warm", ts=0.0, weights=weights)
        return len(self._tables)

    def _prior_table(self, candidates: _Candidates) -> PriorTable | None:
        """The propensity table of a prior-only posterior (``_Candidates.home``), shared by
        every decision with the same home arm and eligible arms; None for any other."""
        if candidates.home is None:
            return None
        key = (candidates.home, candidates.eligible)
        table = self._tables.get(key)
        if table is None:
            if len(self._tables) >= MAX_PRIOR_TABLES:
                self._tables.clear()
            table = self._tables[key] = PriorTable(
                key, candidates.alpha, candidates.beta, self.config.slots
            )
        return table

    def _draw_label(self, draw: int) -> str:
        if draw == DRAW_EXPLOIT:
            return "exploit"
        if draw == DRAW_FLOOR:
            return "uniform"
        return _POLICY_DRAW[self.config.policy]

    def suggestions(
        self,
        state: ExploreState | None,
        weights: Mapping[str, float],
        ts: float,
        max_categories: int = 5,
        tops: Sequence[tuple[str, float]] | None = None,
    ) -> list[dict[str, Any]]:
        """The user's open suggestions, as the score's ``exploration.suggestions``: each as its
        decision saw it (the posterior it drew from, the interest it was similar to). An
        exposure of an older profile (format 5 and before) kept neither: its posterior is
        computed as of ``ts`` (the profile's clock) from ``weights``, and its interest from
        ``tops`` (the user's strongest interests, strongest first, at least ``exclude_top``,
        when the caller has them)."""
        if state is None or not state.open:
            return []
        out = []
        for exp in state.open:
            mean, strength, similar = exp.mean, exp.strength, exp.similar
            if mean is None or strength is None:
                mean, strength, similar = self._posterior_now(state, exp.arm, weights, ts, tops)
            name, categories = self._arm_static(exp.arm, max_categories)
            out.append(
                {
                    "cluster": name,
                    "categories": categories,
                    "draw": self._draw_label(exp.draw),
                    "posterior_mean": mean,
                    "posterior_strength": strength,
                    "propensity": exp.propensity,
                    "why": f"similar to {similar}" if similar else "new to you",
                    "similar_to": similar,
                    "opened_at": _iso(exp.opened_at),
                }
            )
        return out

    def _similar(self, arm: int, top_ids: Sequence[str]) -> str | None:
        """The first of the top interests most similar to the arm, if any reaches
        ``SIMILAR_MIN``."""
        arms, embeddings = self.arms, self.embeddings
        similar, best = None, SIMILAR_MIN
        for category in top_ids:
            sim = arms.similarity(category, arm, embeddings)
            if sim >= best:
                similar, best = category, sim
        return similar

    def _posterior_now(
        self,
        state: ExploreState,
        arm: int,
        weights: Mapping[str, float],
        ts: float,
        tops: Sequence[tuple[str, float]] | None,
    ) -> tuple[float, float, str | None]:
        """An arm's posterior mean and strength as of ``ts`` and the top interest it is similar
        to now: what an exposure of an older profile did not keep."""
        arms, cfg = self.arms, self.config
        totals = arms.totals(weights, self.embeddings)
        if tops is None or len(tops) < min(cfg.exclude_top, len(weights)):
            tops = strongest(weights, cfg.exclude_top)
        s, n = state.counts.get(arm, (0.0, 0.0))
        factor = decay(state, ts, cfg)
        m = arms.prior_mean_of(arm, totals, sum(totals))
        alpha = arms.prior_strength * m + s * factor
        beta = arms.prior_strength * (1.0 - m) + n * factor
        top_ids = [c for c, _ in tops[: cfg.exclude_top]]
        return alpha / (alpha + beta), alpha + beta, self._similar(arm, top_ids)

    def _arm_static(self, arm: int, max_categories: int) -> tuple[str, tuple[str, ...]]:
        key = (arm, max_categories)
        found = self._arm_out.get(key)
        if found is None:
            found = self._arm_out[key] = (
                self.arms.name(arm), self.arms.categories[arm][:max_categories]
            )  # fmt: skip
        return found


def strongest(weights: Mapping[str, float], k: int) -> list[tuple[str, float]]:
    """The ``k`` largest weights as (category, weight), strongest first, ties by category id;
    sorted as (-weight, id) pairs with no Python key function (this runs for every score)."""
    ranked = sorted(zip(map(operator.neg, weights.values()), weights.keys(), strict=True))
    return [(c, -negative) for negative, c in ranked[:k]]


_NOTHING: Final = Decision()
