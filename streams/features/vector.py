"""The feature vector: a frozen, hashed spec and the (batched) computation. numpy + stdlib only.

Features are computed from the profile *after* ``update(profile, event)`` and the event itself.
Each row depends only on its own (profile, event): the batch it arrives in never changes a bit
of it, so the worker's micro-batches and the offline replay produce identical features.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streams.features.embeddings import EMBEDDING_DIM, CategoryEmbeddings
from streams.features.profile import (
    CART_MAX,
    CART_TTL_S,
    COUNT_MAX,
    EVENT_TYPES,
    INTEREST_HALF_LIFE_S,
    INTEREST_WEIGHTS,
    LONG_HALF_LIFE_S,
    MIN_WEIGHT,
    N_TYPES,
    SEQ_CATEGORY_BUCKETS,
    SEQ_GAP_SCALE_S,
    SEQ_LEN,
    SESSION_CATEGORIES_MAX,
    SESSION_GAP_S,
    SHORT_HALF_LIFE_S,
    TOP_K_CATEGORIES,
    TOP_K_ITEMS,
    EventLike,
    Profile,
    stable_hash,
    type_index,
)

FEATURE_VERSION = "2"  # 2: item memory, open cart, repeats, propensity; the recent sequence
RECENCY_CAP_S = 30 * 86400.0  # recency of a user's first event, and the most we report

# Every feature with its group, declared once. A group is what a reason code names (see
# GROUP_DESCRIPTIONS): occlusion sets a whole group to its training reference at once, and drift
# is reported per group. Groups do not change what the model reads, so they are not part of the
# spec's hash (``FeatureSpec.groups``): regrouping never invalidates a trained bundle.
_COUNT_GROUPS = {"add_to_cart": "cart", "remove_from_cart": "cart", "purchase": "purchases"}
_SCALARS: tuple[tuple[str, str], ...] = (
    ("category_share", "category_match"),  # current category's share of the interest (0..1)
    ("category_cosine", "category_match"),  # cosine of its embedding to the interest embedding
    ("interest_hhi", "interests"),  # concentration: sum of squared shares (1 = one category)
    ("interest_entropy", "interests"),  # entropy of the shares, nats
    ("interest_categories_log", "interests"),
    ("interest_total_log", "interests"),  # log1p of the total decayed interest: activity
    ("session_events_log", "session"),
    ("session_carts_log", "session_carts"),
    ("session_categories", "session"),  # distinct categories this session (saturates at 16)
    ("session_duration_log", "session"),
    ("recency_log", "recency"),  # log1p seconds since the user's previous event
    ("first_event", "recency"),
    ("cart_age_log", "cart"),  # log1p seconds since the user's last add_to_cart (capped)
    ("purchase_age_log", "purchases"),  # log1p seconds since the user's last purchase (capped)
    *((f"count_short_{t}_log", _COUNT_GROUPS.get(t, "recent_activity")) for t in EVENT_TYPES),
    *((f"count_long_{t}_log", _COUNT_GROUPS.get(t, "habits")) for t in EVENT_TYPES),
    ("price_log", "price"),
    ("price_missing", "price"),
    ("price_rel_log", "price"),  # log1p(price) - log1p(user's decayed mean price); 0 if unknown
    ("item_interactions_log", "item"),  # decayed interactions with the current item
    ("item_in_cart", "cart"),  # the item was carted in the last day and not removed or bought
    # Item memory: the current item's history with this user (0 when the event has no item).
    ("item_new", "item"),  # first touch of this item (within the remembered top-K)
    ("item_gap_log", "item"),  # log1p seconds since the previous touch of this item (capped)
    ("item_first_age_log", "item"),  # log1p seconds since the first touch of this item
    ("item_session_touches_log", "item"),  # touches of this item in the current session
    ("item_carts_log", "item"),  # times this item was carted (saturates at 255)
    ("item_favorites_log", "item"),
    ("item_cart_age_log", "cart"),  # log1p seconds since this item went into the cart (capped)
    ("cart_open_log", "cart"),  # items carted in the last day, not removed or bought
    ("cart_newest_age_log", "cart"),  # ages of the newest and oldest of them (capped)
    ("cart_oldest_age_log", "cart"),
    ("session_repeat_share", "session"),  # share of this session's events on repeated items
    ("session_purchases_log", "purchases"),
    # Lifetime counts grow with the profile's age (not stationary), so only their ratio is a
    # feature: on the Taobao sample the raw counts made the time-split validation worse.
    ("conversion_rate", "propensity"),  # purchases / (carts + favourites + 1), lifetime
    ("conversion_rate_long", "propensity"),  # the same from the decayed counts (days)
    ("hour_sin", "hour"),  # hour of day, UTC
    ("hour_cos", "hour"),
    *((f"type_{t}", "event_type") for t in EVENT_TYPES),
)
# The recent sequence comes last: the last SEQ_LEN events, oldest first, left-padded with zero
# rows, each (category bucket, code, gap code) of profile.Profile.recent divided by its largest
# value, so every column is in [0, 1] like the dense ones (a linear model, the drift histograms
# and occlusion stay on a sane scale); the encoder multiplies back and rounds, exactly. Only
# the sequence encoder reads them; every other model reads the dense columns before them.
SEQUENCE_FIELDS = ("category", "code", "gap")
SEQUENCE_SCALES = (float(SEQ_CATEGORY_BUCKETS), 16.0, 255.0)
FEATURE_NAMES: tuple[str, ...] = (
    *(f"interest_emb_{i:02d}" for i in range(EMBEDDING_DIM)),
    *(name for name, _ in _SCALARS),
    *(f"seq_{i:02d}_{field}" for i in range(SEQ_LEN) for field in SEQUENCE_FIELDS),
)
N_DENSE_FEATURES = EMBEDDING_DIM + len(_SCALARS)  # columns [0, N_DENSE_FEATURES) are dense
_PAD = (0,) * (SEQ_LEN * len(SEQUENCE_FIELDS))
# The group of each feature, aligned with FEATURE_NAMES.
FEATURE_GROUPS: tuple[str, ...] = (
    *("interests",) * EMBEDDING_DIM,
    *(group for _, group in _SCALARS),
    *("sequence",) * (SEQ_LEN * len(SEQUENCE_FIELDS)),
)
# Reason codes are the group names: stable identifiers, each explained here and in the README
# for non-engineers.
GROUP_DESCRIPTIONS: dict[str, str] = {
    "interests": "the categories the shopper has been interested in lately",
    "category_match": "how well this item's category matches the shopper's interests",
    "session": "how long and how busy the current visit is",
    "session_carts": "items added to the cart during the current visit",
    "recency": "how long ago the shopper's previous action was",
    "cart": "the shopper's cart: recent additions, removals, and whether this item is in it",
    "purchases": "the shopper's past purchases and how recent they are",
    "recent_activity": "views, clicks, searches and favourites in the last half hour or so",
    "habits": "views, clicks, searches and favourites over the last days",
    "price": "the item's price, and how it compares with what the shopper usually looks at",
    "item": "how often the shopper has looked at this very item",
    "propensity": "how often the shopper has bought before, against their carts and favourites",
    "hour": "the time of day",
    "event_type": "what the shopper just did (a view, a click, an add to cart...)",
    "sequence": "the order and pace of the shopper's last actions",
}
GROUP_NAMES: tuple[str, ...] = tuple(dict.fromkeys(FEATURE_GROUPS))
N_FEATURES = len(FEATURE_NAMES)
_COL = {name: i for i, name in enumerate(FEATURE_NAMES)}


@dataclass(frozen=True)
class FeatureSpec:
    """Names, order and dtype of the feature vector, plus the constants that shape its values.

    ``hash`` identifies it: a model bundle records it and the worker refuses any other.
    ``groups`` (the group of each feature) is declared here too but left out of the hash: it
    shapes the explanations, not the values the model reads.
    """

    version: str
    names: tuple[str, ...]
    dtype: str
    params: tuple[tuple[str, Any], ...]
    groups: tuple[str, ...] = ()

    def group_columns(self) -> dict[str, np.ndarray]:
        """group -> the column indices of its features, groups in order of first appearance."""
        if len(self.groups) != len(self.names):
            raise ValueError(f"spec has {len(self.groups)} groups for {len(self.names)} names")
        out: dict[str, list[int]] = {}
        for i, group in enumerate(self.groups):
            out.setdefault(group, []).append(i)
        return {group: np.asarray(cols, dtype=np.intp) for group, cols in out.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "names": list(self.names),
            "dtype": self.dtype,
            "params": dict(self.params),
        }

    def canonical_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def hash(self) -> str:
        """SHA-256 hex of the canonical JSON of the spec."""
        return hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()

    def __len__(self) -> int:
        return len(self.names)


FEATURE_SPEC = FeatureSpec(
    version=FEATURE_VERSION,
    names=FEATURE_NAMES,
    dtype="float32",
    params=(
        ("cart_max", CART_MAX),
        ("cart_ttl_s", CART_TTL_S),
        ("count_max", COUNT_MAX),
        ("embedding_dim", EMBEDDING_DIM),
        ("event_types", EVENT_TYPES),
        ("interest_half_life_s", INTEREST_HALF_LIFE_S),
        ("interest_weights", tuple(sorted(INTEREST_WEIGHTS.items()))),
        ("long_half_life_s", LONG_HALF_LIFE_S),
        ("min_weight", MIN_WEIGHT),
        ("recency_cap_s", RECENCY_CAP_S),
        ("seq_category_buckets", SEQ_CATEGORY_BUCKETS),
        ("seq_gap_scale_s", SEQ_GAP_SCALE_S),
        ("seq_len", SEQ_LEN),
        ("sequence_scales", SEQUENCE_SCALES),
        ("session_categories_max", SESSION_CATEGORIES_MAX),
        ("session_gap_s", SESSION_GAP_S),
        ("short_half_life_s", SHORT_HALF_LIFE_S),
        ("top_k_categories", TOP_K_CATEGORIES),
        ("top_k_items", TOP_K_ITEMS),
    ),
    groups=FEATURE_GROUPS,
)


def feature_matrix(
    rows: Sequence[tuple[Profile, EventLike]], embeddings: CategoryEmbeddings
) -> np.ndarray:
    """Features of many (profile after the event, event) pairs: float32 ``(n, N_FEATURES)``."""
    n = len(rows)
    out = np.zeros((n, N_FEATURES), dtype=np.float64)
    if n == 0:
        return out.astype(np.float32)

    # One pass in Python pulls the numbers out of the profiles; the math below is numpy.
    pair_row: list[int] = []
    pair_cat: list[str] = []
    pair_w: list[float] = []
    cur_row: list[int] = []
    cur_cat: list[str] = []
    total = np.zeros(n)
    cur_w = np.zeros(n)
    n_cats = np.zeros(n)
    s_events, s_carts, s_cats, s_dur = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    gap, clock = np.zeros(n), np.zeros(n)
    last_cart, last_purchase = np.zeros(n), np.zeros(n)
    short = np.zeros((n, N_TYPES))
    long_ = np.zeros((n, N_TYPES))
    price = np.full(n, np.nan)
    mean_price = np.full(n, np.nan)
    item_w, in_cart = np.zeros(n), np.zeros(n)
    has_item, item_gap, item_first_age = np.zeros(n), np.zeros(n), np.zeros(n)
    item_touches, item_carts, item_favs = np.zeros(n), np.zeros(n), np.zeros(n)
    item_cart_age = np.full(n, CART_TTL_S)
    cart_open = np.zeros(n)
    cart_newest, cart_oldest = np.full(n, CART_TTL_S), np.full(n, CART_TTL_S)
    s_repeats, s_bought = np.zeros(n), np.zeros(n)
    totals = np.zeros((n, 3))  # purchases, carts, favourites
    seq_flat: list[int] = []  # one array at the end: far cheaper than n small assignments
    ts, etype = np.zeros(n), np.zeros(n, dtype=np.intp)
    for i, (p, e) in enumerate(rows):
        weights = p.weights
        for known, weight in weights.items():
            pair_row.append(i)
            pair_cat.append(known)
            pair_w.append(weight)
        total[i] = sum(weights.values())
        n_cats[i] = len(weights)
        cat = e.category_id
        if cat is not None:
            cur_row.append(i)
            cur_cat.append(cat)
            cur_w[i] = weights.get(cat, 0.0)
        s_events[i], s_carts[i] = p.session_events, p.session_carts
        s_cats[i], s_dur[i] = len(p.session_categories), p.session_last - p.session_start
        gap[i], clock[i] = p.last_gap_s, p.clock
        last_cart[i], last_purchase[i] = p.last_cart_ts, p.last_purchase_ts
        short[i], long_[i] = p.short_counts, p.long_counts
        if e.price is not None:
            price[i] = e.price
        if p.price_n > 0:
            mean_price[i] = p.price_sum / p.price_n
        cart = p.cart
        if cart:
            cart_open[i] = len(cart)
            added = [t for _, t in cart]
            cart_newest[i] = p.clock - max(added)
            cart_oldest[i] = p.clock - min(added)
        if e.item_id is not None:
            item = stable_hash(e.item_id)
            item_w[i] = p.items.get(item, 0.0)
            for entry in cart:
                if entry[0] == item:
                    in_cart[i] = 1.0
                    item_cart_age[i] = p.clock - entry[1]
            info = p.item_info.get(item)
            if info is not None:  # always, unless the item was evicted at once
                has_item[i] = 1.0
                first_s, last_s, item_carts[i], item_favs[i], touches = info
                item_first_age[i] = math.floor(p.clock) - first_s
                item_touches[i] = touches if last_s >= math.floor(p.session_start) else 0
                item_gap[i] = p.item_gap_s
        s_repeats[i], s_bought[i] = p.session_repeats, p.session_purchases
        totals[i] = p.total_purchases, p.total_carts, p.total_favorites
        ts[i], etype[i] = e.ts, type_index(e.event_type)
        recent = p.recent
        seq_flat.extend(_PAD[: (SEQ_LEN - len(recent)) * len(SEQUENCE_FIELDS)])
        for step in recent:
            seq_flat.extend(step)

    # Interest embedding: weighted mean of category vectors. np.add.at accumulates in index
    # order, so a row's sum never depends on the other rows of the batch.
    interest = np.zeros((n, EMBEDDING_DIM))
    hhi, entropy = np.zeros(n), np.zeros(n)
    if pair_row:
        rows_idx = np.asarray(pair_row, dtype=np.intp)
        pw = np.asarray(pair_w)
        vecs = embeddings.vectors(pair_cat).astype(np.float64)
        np.add.at(interest, rows_idx, vecs * pw[:, None])
        share = pw / total[rows_idx]
        np.add.at(hhi, rows_idx, share * share)
        np.add.at(entropy, rows_idx, -share * np.log(share))
    has_interest = total > 0
    interest[has_interest] /= total[has_interest, None]
    out[:, :EMBEDDING_DIM] = interest

    cosine = np.zeros(n)
    if cur_row:
        idx = np.asarray(cur_row, dtype=np.intp)
        cur_vec = embeddings.vectors(cur_cat).astype(np.float64)
        m = interest[idx]
        norm = np.sqrt((m * m).sum(axis=1)) * np.sqrt((cur_vec * cur_vec).sum(axis=1))
        dots = (m * cur_vec).sum(axis=1)
        cosine[idx] = np.divide(dots, norm, out=np.zeros_like(dots), where=norm > 0)

    col = _COL
    out[:, col["category_share"]] = np.divide(cur_w, total, out=np.zeros(n), where=has_interest)
    out[:, col["category_cosine"]] = cosine
    out[:, col["interest_hhi"]] = hhi
    out[:, col["interest_entropy"]] = entropy
    out[:, col["interest_categories_log"]] = np.log1p(n_cats)
    out[:, col["interest_total_log"]] = np.log1p(total)
    out[:, col["session_events_log"]] = np.log1p(s_events)
    out[:, col["session_carts_log"]] = np.log1p(s_carts)
    out[:, col["session_categories"]] = s_cats
    out[:, col["session_duration_log"]] = np.log1p(s_dur)
    first = gap < 0
    out[:, col["recency_log"]] = np.log1p(
        np.where(first, RECENCY_CAP_S, np.minimum(gap, RECENCY_CAP_S))
    )
    out[:, col["first_event"]] = first
    for name, last in (("cart_age_log", last_cart), ("purchase_age_log", last_purchase)):
        age = np.where(last < 0, RECENCY_CAP_S, np.clip(clock - last, 0.0, RECENCY_CAP_S))
        out[:, col[name]] = np.log1p(age)
    c0 = col[f"count_short_{EVENT_TYPES[0]}_log"]
    out[:, c0 : c0 + N_TYPES] = np.log1p(short)
    c0 = col[f"count_long_{EVENT_TYPES[0]}_log"]
    out[:, c0 : c0 + N_TYPES] = np.log1p(long_)
    has_price = ~np.isnan(price)
    log_price = np.log1p(np.where(has_price, price, 0.0))
    out[:, col["price_log"]] = log_price
    out[:, col["price_missing"]] = ~has_price
    both = has_price & ~np.isnan(mean_price)
    out[:, col["price_rel_log"]] = np.where(
        both, log_price - np.log1p(np.where(both, mean_price, 0.0)), 0.0
    )
    out[:, col["item_interactions_log"]] = np.log1p(item_w)
    out[:, col["item_in_cart"]] = in_cart
    new = (has_item > 0) & (item_gap < 0)
    out[:, col["item_new"]] = new
    out[:, col["item_gap_log"]] = np.where(
        has_item > 0, np.log1p(np.where(new, RECENCY_CAP_S, np.clip(item_gap, 0, RECENCY_CAP_S))), 0
    )
    out[:, col["item_first_age_log"]] = np.log1p(np.clip(item_first_age, 0.0, RECENCY_CAP_S))
    out[:, col["item_session_touches_log"]] = np.log1p(item_touches)
    out[:, col["item_carts_log"]] = np.log1p(item_carts)
    out[:, col["item_favorites_log"]] = np.log1p(item_favs)
    out[:, col["item_cart_age_log"]] = np.log1p(np.clip(item_cart_age, 0.0, CART_TTL_S))
    out[:, col["cart_open_log"]] = np.log1p(cart_open)
    out[:, col["cart_newest_age_log"]] = np.log1p(np.clip(cart_newest, 0.0, CART_TTL_S))
    out[:, col["cart_oldest_age_log"]] = np.log1p(np.clip(cart_oldest, 0.0, CART_TTL_S))
    out[:, col["session_repeat_share"]] = np.divide(
        s_repeats, s_events, out=np.zeros(n), where=s_events > 0
    )
    out[:, col["session_purchases_log"]] = np.log1p(s_bought)
    out[:, col["conversion_rate"]] = totals[:, 0] / (totals[:, 1] + totals[:, 2] + 1.0)
    k_buy, k_cart, k_fav = (EVENT_TYPES.index(t) for t in ("purchase", "add_to_cart", "favorite"))
    out[:, col["conversion_rate_long"]] = long_[:, k_buy] / (
        long_[:, k_cart] + long_[:, k_fav] + 1.0
    )
    angle = (ts % 86400.0) * (2.0 * math.pi / 86400.0)
    out[:, col["hour_sin"]] = np.sin(angle)
    out[:, col["hour_cos"]] = np.cos(angle)
    c0 = col[f"type_{EVENT_TYPES[0]}"]
    out[np.arange(n), c0 + etype] = 1.0
    steps = np.asarray(seq_flat, dtype=np.float64).reshape(n, SEQ_LEN, len(SEQUENCE_FIELDS))
    out[:, N_DENSE_FEATURES:] = (steps / np.asarray(SEQUENCE_SCALES)).reshape(n, -1)
    return out.astype(np.float32)


def feature_vector(
    profile: Profile, event: EventLike, embeddings: CategoryEmbeddings
) -> np.ndarray:
    """Features of one event: float32 ``(N_FEATURES,)``; ``profile`` is the state after it."""
    return feature_matrix([(profile, event)], embeddings)[0]
