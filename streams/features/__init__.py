"""Pure feature code shared by the worker and training: numpy and the standard library only.

- ``profile``: per-user state (``Profile``), its pure ``update`` in event time, and
  ``top_categories``.
- ``encoding``: the profile's compact, versioned bytes (sections per version; exploration's
  in ``encoding_explore``, the sections a later version re-encoded in ``encoding_legacy``).
- ``embeddings``: the category embedding table of a model bundle, with a hashed fallback.
- ``vector``: the frozen, hashed ``FEATURE_SPEC`` (with the group of each feature: the reason
  codes) and ``feature_vector``/``feature_matrix``.
- ``reference``: a bundle's training reference (mean and histograms per feature), the
  population stability index and the decayed window of live rows it is computed on.
- ``occlusion``: the occluded copies of feature rows that reasons are measured with.

A test imports this package in a fresh interpreter and checks that no Faust, Kafka,
Prometheus, pydantic or TensorFlow module came with it.
"""

from streams.features.embeddings import EMBEDDING_DIM, CategoryEmbeddings, hashed_vector
from streams.features.encoding import (
    PROFILE_FORMAT_VERSION,
    decode_profile,
    encode_profile,
    profile_clock,
)
from streams.features.profile import (
    EVENT_TYPES,
    INTEREST_HALF_LIFE_S,
    LONG_HALF_LIFE_S,
    SESSION_GAP_S,
    SHORT_HALF_LIFE_S,
    TOP_K_CATEGORIES,
    EventLike,
    Profile,
    stable_hash,
    top_categories,
    update,
)
from streams.features.vector import (
    FEATURE_NAMES,
    FEATURE_SPEC,
    FEATURE_VERSION,
    N_FEATURES,
    FeatureSpec,
    feature_matrix,
    feature_vector,
)


def compiled_core() -> bool:
    """Whether this process runs the per-event modules compiled with mypyc (a copy built by
    ``streams.devtools.compile`` first on the path) rather than these sources."""
    from streams.features import profile

    return not str(profile.__file__).endswith(".py")


__all__ = [
    "EMBEDDING_DIM",
    "EVENT_TYPES",
    "FEATURE_NAMES",
    "FEATURE_SPEC",
    "FEATURE_VERSION",
    "INTEREST_HALF_LIFE_S",
    "LONG_HALF_LIFE_S",
    "N_FEATURES",
    "PROFILE_FORMAT_VERSION",
    "SESSION_GAP_S",
    "SHORT_HALF_LIFE_S",
    "TOP_K_CATEGORIES",
    "CategoryEmbeddings",
    "EventLike",
    "FeatureSpec",
    "Profile",
    "compiled_core",
    "decode_profile",
    "encode_profile",
    "feature_matrix",
    "feature_vector",
    "hashed_vector",
    "profile_clock",
    "stable_hash",
    "top_categories",
    "update",
]
