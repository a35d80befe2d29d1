"""Synthetic shoppers: latent state, sessions, the purchase funnel, and their exact intent.

The generative story of one user:

* **Latent interests** over the top-level categories, ``theta = softmax(eta)``, where ``eta``
  is a stable personal baseline plus an Ornstein-Uhlenbeck drift (time constant of days).
  The *affinity* of a top-level category is ``theta_t / max(theta)``, in (0, 1]. Within each
  top-level category the user has three favourite leaves.
* **Sessions** start as a Poisson process modulated by a daily rhythm (hour of day, shifted
  per user), at least an hour after the previous session ended. Each session has a latent
  *mission*, buy or browse, more often buy for users with a high buyer propensity and in the
  evening, and a *focus* category drawn from the interests (sharper when buying).
* **Steps.** Each step is a search or an item visit (click, view, maybe favourite, maybe add
  to cart); after each step the session ends with a per-mission probability, or at the
  50-minute cap. A visited item comes from the focus category or the interests, a favourite
  leaf or a popular one, and a popular item.
* **Cart decisions.** Adding an item depends on affinity and price (relative to the leaf's
  median, against a personal price tolerance that grows with affinity). When an item is
  added, whether it will be bought is drawn once, with probability ``q``: steep in affinity
  (carts only convert for strong interests), a price threshold, the mission and a personal
  commitment. Items that will not be bought are removed at a constant hazard per step.
* **Checkout** at the end of the session buys every item that was going to be bought.

**Intent (the truth sidecar)** is ``P(this user purchases within the next hour | the
simulator's latent state after this event)``, in closed form. The next session starts at
least an hour after this one ends and a session lasts under an hour, so only this session's
checkout can fall within the hour. It fails to buy when no current cart item converts (each
has posterior ``q / (q + (1 - q)(1 - h)^k)`` after surviving ``k`` removal chances), the
pending add of the item on screen does not convert, and no later step adds a converting
item. With ``N`` further steps geometric(``p_end``) and per-step probability ``g`` of adding
a converting item, ``E[(1 - g)^N] = p_end / (1 - (1 - p_end)(1 - g))``. ``g`` integrates
the add and conversion probabilities over the session's category mix and the catalogue's
popularity-weighted price histograms (48 bins); that binning and the rarely reached 50-minute
cap are the only approximations.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_left
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streams.sources.simulate.catalog import PRICE_BIN_CENTERS, Catalog
from streams.sources.simulate.latent import (
    Latent,
    cluster_affinity,
    coin,
    init_latent,
    response_probability,
    top_of,
)

MS_PER_HOUR = 3_600_000
MS_PER_DAY = 24 * MS_PER_HOUR

# Relative session-start intensity per local hour: quiet nights, a lunch bump, evening peak.
HOUR_RHYTHM = (
    0.25, 0.15, 0.10, 0.07, 0.07, 0.10, 0.25, 0.50, 0.75, 0.85, 0.90, 1.00,
    1.15, 1.05, 0.90, 0.90, 0.95, 1.05, 1.30, 1.60, 1.75, 1.60, 1.10, 0.55,
)  # fmt: skip
_RHYTHM_MAX = max(HOUR_RHYTHM)
_RHYTHM_MEAN = sum(HOUR_RHYTHM) / 24


@dataclass(frozen=True)
class Mode:
    """How a session behaves under one mission."""

    p_end: float  # probability the session ends after a step, before anything was carted
    p_end_carted: float  # ... once something was added to the cart this session
    focus_share: float  # share of visits in the focus category
    focus_sharpness: float  # focus ~ theta ** sharpness
    search: float  # probability a step is a search
    first_search: float  # ... for the first step
    click: float  # probability a visit starts with a click (from a listing)
    add_scale: float  # multiplies the add-to-cart probability
    conversion_scale: float  # multiplies the conversion probability
    gap_median_s: float  # median seconds between steps


BUY = Mode(0.07, 0.22, 0.85, 2.0, 0.10, 0.55, 0.55, 0.55, 0.85, 32.0)
BROWSE = Mode(0.11, 0.15, 0.45, 1.0, 0.06, 0.10, 0.25, 0.12, 0.12, 20.0)


@dataclass(frozen=True)
class Behaviour:
    """The knobs of the shoppers' world (defaults are what the tests and the README use)."""

    sessions_per_day: float = 3.0  # mean session rate; per user log-normal around it
    session_gap_s: float = 3600.0  # least inactivity between sessions
    session_cap_s: float = 3000.0  # a session checks out once it is this old
    interest_sd: float = 1.4  # spread of the stable log-interests
    drift_sd: float = 0.8  # stationary spread of the drifting part
    drift_days: float = 4.0  # its time constant
    removal_hazard: float = 0.15  # per step, for a cart item that will not be bought
    favourite_leaf_share: float = 0.7  # visits to one of the 3 favourite leaves of a category
    buyer_mean: float = -2.3  # buyer propensity (logit of the buy mission), mean
    buyer_sd: float = 0.8  # ... and spread across users
    evening_boost: float = 0.6  # added to that logit from 18:00 to 22:59 local time
    # Opt-in latent structure for exploration (``latent.py``); the defaults change nothing.
    interest_rank: int = 0  # > 0: correlated interests, L z + noise of this rank
    interest_shared: float = 0.7  # ... the low-rank share of their variance
    dormant: int = 0  # dormant interests per user
    dormant_visit: float = 0.02  # their visit weight, relative, until they awaken
    dormant_eta_gap: float = 0.5  # their log-interest: up to this below the user's strongest
    awaken_after: int = 2  # engagements with a suggestion that awaken one
    response_floor: float = 0.02  # P(engage | shown) at affinity 0 ...
    response_gain: float = 0.6  # ... plus this times affinity ** response_power
    response_power: float = 2.0


DEFAULT_BEHAVIOUR = Behaviour()


def _sigmoid(z: Any, exp: Callable[[Any], Any]) -> Any:
    return 1.0 / (1.0 + exp(-z))


def add_probability(a: Any, x: Any, *, tau: float, mode: Mode, exp: Callable[[Any], Any]) -> Any:
    """P(add to cart | visit) for affinity ``a`` and log price ratio ``x`` (scalars with
    ``math.exp``, arrays with ``np.exp``: one formula for the generator and the truth)."""
    tolerance = tau - 0.2 + 0.8 * a
    return (
        mode.add_scale
        * (0.04 + 0.6 * _sigmoid((a - 0.5) / 0.08, exp))
        * (0.2 + 0.8 * _sigmoid((tolerance - x) / 0.12, exp))
    )


def conversion_probability(
    a: Any, x: Any, *, tau: float, kappa: float, mode: Mode, exp: Callable[[Any], Any]
) -> Any:
    """P(a cart item is bought) for affinity ``a`` and log price ratio ``x``: carts convert only
    when affinity is high and the price is under the (affinity-raised) tolerance, and not
    suspiciously cheap (far below the category median)."""
    tolerance = tau - 0.2 + 0.8 * a
    return (
        mode.conversion_scale
        * kappa
        * _sigmoid((a - 0.62) / 0.06, exp)
        * _sigmoid((tolerance - x) / 0.1, exp)
        * _sigmoid((x + 0.8) / 0.1, exp)
    )


def cart_posterior(q: float, survived: int, hazard: float) -> float:
    """P(a cart item will be bought | it survived ``survived`` removal chances)."""
    if q <= 0.0:
        return 0.0
    return q / (q + (1.0 - q) * (1.0 - hazard) ** survived)


def remaining_nobuy(
    any_add: float, g: float, p_end: float, p_end_carted: float
) -> tuple[float, float]:
    """P(no later step adds an item that will be bought), from a session that has not /
    has already added to its cart, just before it decides whether to end.

    Per step, an add happens with probability ``any_add`` and it converts with ``g`` (both
    per step); the session ends with ``p_end`` before its first add, ``p_end_carted`` after.
    Carted: ``F_c = p1 / (1 - (1 - p1)(1 - g))``. Not yet: ``F_e = p0 + (1 - p0)((1 - A) F_e
    + (A - g) F_c)``, solved for ``F_e``.
    """
    carted = p_end_carted / (1.0 - (1.0 - p_end_carted) * (1.0 - g))
    empty = (p_end + (1.0 - p_end) * (any_add - g) * carted) / (
        1.0 - (1.0 - p_end) * (1.0 - any_add)
    )
    return empty, carted


# One emitted event: (ts_ms, user_index, seq, event_type, session_id, item_id, category_id,
# price, quantity, intent). The first three make heap-merge keys unique.
Row = tuple[int, int, int, str, str, str | None, str | None, float | None, int | None, float]


@dataclass
class _CartItem:
    item_id: str
    category_id: str
    price: float
    quantity: int
    q: float
    converts: bool
    survived: int = 0


class Shopper:
    """One synthetic user. ``events()`` yields its rows in event-time order."""

    def __init__(
        self,
        index: int,
        *,
        user_id: str,
        seed: int,
        catalog: Catalog,
        behaviour: Behaviour,
        start_ms: int,
        end_ms: int,
    ) -> None:
        self.index = index
        self.user_id = user_id
        self.seed = seed
        self.catalog = catalog
        self.b = behaviour
        self.start_ms = start_ms
        self.end_ms = end_ms
        rng = random.Random(f"intentflow-sim/{seed}/user/{index}")
        self.rng = rng
        n_top = catalog.n_top
        self.eta_base = [rng.gauss(0.0, behaviour.interest_sd) for _ in range(n_top)]
        self.eta_drift = [rng.gauss(0.0, behaviour.drift_sd) for _ in range(n_top)]
        self.drift_at_ms = start_ms
        self.sessions_per_ms = (
            behaviour.sessions_per_day * math.exp(rng.gauss(-0.125, 0.5)) / MS_PER_DAY
        )
        self.phase_hours = rng.gauss(0.0, 1.5)
        self.buyer = rng.gauss(behaviour.buyer_mean, behaviour.buyer_sd)
        self.tau = min(max(rng.gauss(0.25, 0.35), -1.0), 1.5)  # price tolerance (log ratio)
        self.kappa = rng.betavariate(5.0, 2.0)  # commitment: how reliably carts convert
        self.favourite_leaves = [rng.sample(range(catalog.leaves_per_top), 3) for _ in range(n_top)]
        self.seq = 0
        self.latent: Latent | None = None
        if behaviour.interest_rank > 0 or behaviour.dormant > 0:
            self.latent, self.eta_base = init_latent(seed, index, self.eta_base, behaviour)
        self.responses = 0

    # -- latent dynamics -------------------------------------------------------------------

    def _local_hour(self, ts_ms: int) -> int:
        return int((ts_ms / MS_PER_HOUR + self.phase_hours) % 24.0)

    def _next_session_start(self, after_ms: int) -> int:
        """Thinning of a Poisson process whose rate follows the daily rhythm."""
        rate_max = self.sessions_per_ms * _RHYTHM_MAX / _RHYTHM_MEAN
        t = float(after_ms)
        while True:
            t += self.rng.expovariate(rate_max)
            if self.rng.random() * _RHYTHM_MAX < HOUR_RHYTHM[self._local_hour(int(t))]:
                return int(t)

    def _interests(self, ts_ms: int) -> list[float]:
        """Advance the OU drift to ``ts_ms`` (exact transition) and return theta."""
        days = (ts_ms - self.drift_at_ms) / MS_PER_DAY
        if days > 0:
            keep = math.exp(-days / self.b.drift_days)
            noise = self.b.drift_sd * math.sqrt(1.0 - keep * keep)
            self.eta_drift = [d * keep + noise * self.rng.gauss(0.0, 1.0) for d in self.eta_drift]
            self.drift_at_ms = ts_ms
        eta = [b + d for b, d in zip(self.eta_base, self.eta_drift, strict=True)]
        top = max(eta)
        weights = [math.exp(e - top) for e in eta]
        if self.latent is not None:
            for c in self.latent.sleeping():
                weights[c] *= self.b.dormant_visit
        total = sum(weights)
        return [w / total for w in weights]

    # -- exploration (opt-in) --------------------------------------------------------------

    def true_affinity(self) -> np.ndarray:
        """Affinity ``theta / max(theta)`` per top-level category, dormant ones undamped, as
        of the last drift step (reading it draws nothing); a dormant interest responds
        strongly when shown: its affinity is 1."""
        eta = np.add(self.eta_base, self.eta_drift)
        theta = np.exp(eta - eta.max())
        affinity = theta / theta.max()
        if self.latent is not None and self.latent.dormant:
            affinity[list(self.latent.dormant)] = 1.0
        return affinity

    def response_probabilities(self, clusters: Sequence[tuple[str, ...]]) -> np.ndarray:
        """P(engage | shown) for each cluster of categories: the oracle's expected rewards."""
        a = self.true_affinity()
        return response_probability([cluster_affinity(a, c) for c in clusters], self.b)

    def respond(
        self, cluster: str, categories: tuple[str, ...], ts_ms: int
    ) -> tuple[float, list[Row]]:
        """The user is shown a cluster at ``ts_ms``: (P(engage), the events of an engagement,
        or none). The coin is common to every policy (``latent.coin``)."""
        if self.latent is None:
            self.latent = Latent()
        latent = self.latent
        a = self.true_affinity()
        p = float(response_probability(cluster_affinity(a, categories), self.b))
        j = latent.shown.get(cluster, 0)
        latent.shown[cluster] = j + 1
        known = [c for c in categories if _leaf_index(c, self.catalog) is not None]
        if not known or coin(self.seed, self.index, cluster, j) >= p:
            return p, []
        category = max(known, key=lambda c: (a[top_of(c)], c))
        leaf = self.catalog.leaves[_leaf_index(category, self.catalog) or 0]
        item = (leaf.item_ids[0], leaf.category_id, leaf.prices[0])
        self.responses += 1
        session_id = f"{self.user_id}-r{self.responses}"
        rows = [
            self._row(ts_ms + 2000, "click", session_id, item, intent=0.0),
            self._row(ts_ms + 4000, "view", session_id, item, intent=0.0),
        ]
        top = top_of(category)
        if top in latent.sleeping():
            latent.engagements[top] = latent.engagements.get(top, 0) + 1
            if latent.engagements[top] >= self.b.awaken_after:
                latent.awake.add(top)
        return p, rows

    def _add_rates(self, theta: list[float], focus: int, mode: Mode) -> tuple[float, float]:
        """Per step: (P(an add), P(an add of an item that will be bought)), integrated in
        closed form over the visit mix (focus, interests), favourite and popular leaves, and
        the price bins of the catalogue."""
        cat = self.catalog
        th = np.asarray(theta)
        affinity = th / th.max()
        visit_top = (1.0 - mode.focus_share) * th
        visit_top[focus] += mode.focus_share
        share = self.b.favourite_leaf_share
        favourite = cat.price_hist[
            np.arange(cat.n_top)[:, None], np.asarray(self.favourite_leaves)
        ].mean(axis=1)
        price_mix = share * favourite + (1.0 - share) * cat.top_price_hist
        a = affinity[:, None]
        x = PRICE_BIN_CENTERS[None, :]
        p_add = add_probability(a, x, tau=self.tau, mode=mode, exp=np.exp)
        q = conversion_probability(a, x, tau=self.tau, kappa=self.kappa, mode=mode, exp=np.exp)
        visit = 1.0 - mode.search
        any_add = visit * float(visit_top @ (price_mix * p_add).sum(axis=1))
        converting = visit * float(visit_top @ (price_mix * p_add * q).sum(axis=1))
        return any_add, converting

    # -- events ----------------------------------------------------------------------------

    def events(self) -> Iterator[Row]:
        """Every event of this user, session after session, until the span ends. A session
        that starts within the span runs to its end, so its purchases are in the log."""
        t = self._next_session_start(self.start_ms)
        number = 0
        while t < self.end_ms:
            number += 1
            last = yield from self._session(t, number)
            t = self._next_session_start(last + int(self.b.session_gap_s * 1000))

    def _row(
        self,
        ts: int,
        etype: str,
        session_id: str,
        item: tuple[str, str, float],
        *,
        quantity: int | None = None,
        intent: float,
    ) -> Row:
        self.seq += 1
        return (ts, self.index, self.seq, etype, session_id, item[0], item[1], item[2],
                quantity, intent)  # fmt: skip

    def _pick_item(self, theta_cum: list[float], focus: int, mode: Mode) -> tuple[int, int, int]:
        rng, cat = self.rng, self.catalog
        if rng.random() < mode.focus_share:
            top = focus
        else:
            top = min(bisect_left(theta_cum, rng.random()), cat.n_top - 1)
        if rng.random() < self.b.favourite_leaf_share:
            leaf_index = rng.choice(self.favourite_leaves[top])
        else:
            leaf_index = bisect_left(cat.cum_leaf_popularity[top], rng.random())
        leaf = cat.leaf(top, min(leaf_index, cat.leaves_per_top - 1))
        item = min(bisect_left(leaf.cum_popularity, rng.random()), len(leaf.item_ids) - 1)
        return top, top * cat.leaves_per_top + leaf_index, item

    def _gap(self, median_s: float, sigma: float, low_s: float, high_s: float) -> int:
        seconds = median_s * math.exp(sigma * self.rng.gauss(0.0, 1.0))
        return int(1000 * min(max(seconds, low_s), high_s))

    def _session(self, t: int, number: int) -> Generator[Row, None, int]:
        rng, b, cat = self.rng, self.b, self.catalog
        session_id = f"{self.user_id}-s{number}"
        theta = self._interests(t)
        top_theta = max(theta)
        evening = 18 <= self._local_hour(t) <= 22
        buy_logit = self.buyer + (b.evening_boost if evening else 0.0)
        mode = BUY if rng.random() < 1.0 / (1.0 + math.exp(-buy_logit)) else BROWSE
        sharp = [th**mode.focus_sharpness for th in theta]
        sharp_total = sum(sharp)
        focus = min(
            bisect_left(_cumsum([s / sharp_total for s in sharp]), rng.random()), cat.n_top - 1
        )
        theta_cum = _cumsum(theta)
        any_add, g = self._add_rates(theta, focus, mode)
        f_empty, f_carted = remaining_nobuy(any_add, g, mode.p_end, mode.p_end_carted)
        carted = False
        hazard = b.removal_hazard
        cap = t + int(b.session_cap_s * 1000)
        cart: list[_CartItem] = []

        def cart_nobuy() -> float:
            product = 1.0
            for c in cart:
                product *= 1.0 - cart_posterior(c.q, c.survived, hazard)
            return product

        first = True
        while True:
            # Removal chances for the items already in the cart.
            for c in list(cart):
                if not c.converts and rng.random() < hazard:
                    cart.remove(c)
                    yield self._row(
                        t, "remove_from_cart", session_id, (c.item_id, c.category_id, c.price),
                        quantity=c.quantity, intent=1.0 - cart_nobuy() * (1.0 - g) * f_carted,
                    )  # fmt: skip
                    t += self._gap(4.0, 0.5, 1.0, 20.0)
                else:
                    c.survived += 1
            search_p = mode.first_search if first else mode.search
            first = False
            if rng.random() < search_p:
                top = focus
                leaf_index = rng.choice(self.favourite_leaves[top])
                category = cat.leaf(top, leaf_index).category_id if rng.random() < 0.6 else None
                intent = 1.0 - cart_nobuy() * (f_carted if carted else f_empty)
                self.seq += 1
                yield (t, self.index, self.seq, "search", session_id, None, category,
                       None, None, intent)  # fmt: skip
            else:
                top, leaf_no, item_no = self._pick_item(theta_cum, focus, mode)
                leaf = cat.leaves[leaf_no]
                item = (leaf.item_ids[item_no], leaf.category_id, leaf.prices[item_no])
                a = theta[top] / top_theta
                x = leaf.log_ratios[item_no]
                p_add = add_probability(a, x, tau=self.tau, mode=mode, exp=math.exp)
                q = conversion_probability(
                    a, x, tau=self.tau, kappa=self.kappa, mode=mode, exp=math.exp
                )
                if carted:
                    nobuy_after = (1.0 - p_add * q) * f_carted
                else:
                    nobuy_after = (1.0 - p_add) * f_empty + p_add * (1.0 - q) * f_carted
                pending = 1.0 - cart_nobuy() * nobuy_after
                if rng.random() < mode.click:
                    yield self._row(t, "click", session_id, item, intent=pending)
                    t += self._gap(2.0, 0.4, 0.5, 8.0)
                yield self._row(t, "view", session_id, item, intent=pending)
                if rng.random() < 0.02 + 0.12 * a * a:
                    t += self._gap(6.0, 0.5, 1.0, 30.0)
                    yield self._row(t, "favorite", session_id, item, intent=pending)
                if rng.random() < p_add:
                    t += self._gap(8.0, 0.6, 1.0, 60.0)
                    quantity = 1 if rng.random() < 0.85 else rng.choice((2, 2, 3))
                    cart.append(_CartItem(item[0], item[1], item[2], quantity, q, rng.random() < q))
                    carted = True
                    yield self._row(
                        t, "add_to_cart", session_id, item,
                        quantity=quantity, intent=1.0 - cart_nobuy() * f_carted,
                    )  # fmt: skip
            next_t = t + self._gap(mode.gap_median_s, 0.9, 2.0, 480.0)
            p_end = mode.p_end_carted if carted else mode.p_end
            if rng.random() < p_end or next_t > cap:
                break
            t = next_t
        # Checkout: everything that was going to be bought is bought, at once.
        bought = [c for c in cart if c.converts]
        if bought:
            t += self._gap(40.0, 0.4, 15.0, 120.0)
            for n, c in enumerate(bought):
                more = 1.0 if n + 1 < len(bought) else 0.0
                yield self._row(
                    t, "purchase", session_id, (c.item_id, c.category_id, c.price),
                    quantity=c.quantity, intent=more,
                )  # fmt: skip
                t += self._gap(1.5, 0.3, 0.5, 4.0)
        return t


def _leaf_index(category_id: str, catalog: Catalog) -> int | None:
    """The index in ``catalog.leaves`` of a simulator leaf id ``cTTLL``; None for another id."""
    if len(category_id) != 5 or category_id[0] != "c" or not category_id[1:].isdigit():
        return None
    top, leaf = int(category_id[1:3]), int(category_id[3:5])
    if top >= catalog.n_top or leaf >= catalog.leaves_per_top:
        return None
    return top * catalog.leaves_per_top + leaf


def _cumsum(weights: list[float]) -> list[float]:
    out, total = [], 0.0
    for w in weights:
        total += w
        out.append(total)
    out[-1] = 1.0 + 1e-12
    return out
