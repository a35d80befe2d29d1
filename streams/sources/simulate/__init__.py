"""The shopper simulator: a pure, deterministic generator of clickstream.v1 payloads.

``generate`` is the Python API (tests, benchmarks, model training); ``streams.simulator``
holds the ``intentflow simulate`` command that writes it to a file or produces it to Kafka.
"""

from streams.sources.simulate.corrupt import EXPECTED_CLASS, BadKind
from streams.sources.simulate.shoppers import DEFAULT_BEHAVIOUR, Behaviour
from streams.sources.simulate.stream import DEFAULT_START, SimRecord, format_timestamp, generate

__all__ = [
    "DEFAULT_BEHAVIOUR",
    "DEFAULT_START",
    "EXPECTED_CLASS",
    "BadKind",
    "Behaviour",
    "SimRecord",
    "format_timestamp",
    "generate",
]
