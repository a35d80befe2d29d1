"""The one settings object. Nothing else in intentflow reads ``os.environ``.

Every value comes from an ``INTENTFLOW_*`` environment variable (or its default), is validated
once, and is frozen. Faust options are passed explicitly from here, because Faust otherwise
lets variables such as ``BROKER_URL`` override its arguments silently.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.errors import ConfigError

if TYPE_CHECKING:
    from streams.features.explore import ExploreConfig

ENV_PREFIX = "INTENTFLOW_"


class SecurityProtocol(StrEnum):
    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class SaslMechanism(StrEnum):
    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"


class ScoringPolicy(StrEnum):
    EVERY_EVENT = "every_event"
    THROTTLED = "throttled"


class Settings(BaseSettings):
    """All configuration of intentflow. See the README's configuration table."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="ignore", case_sensitive=False
    )

    # Broker
    kafka_bootstrap: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers, comma separated host:port."
    )
    kafka_security_protocol: SecurityProtocol = Field(
        SecurityProtocol.PLAINTEXT, description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
    )
    kafka_sasl_mechanism: SaslMechanism | None = Field(
        None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with a SASL protocol)."
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password (secret).")
    kafka_ssl_cafile: Path | None = Field(None, description="CA bundle for TLS.")
    kafka_ssl_certfile: Path | None = Field(None, description="Client certificate for mTLS.")
    kafka_ssl_keyfile: Path | None = Field(None, description="Client key for mTLS.")
    kafka_connect_timeout_seconds: float = Field(
        15.0, gt=0, le=300, description="How long start-up waits for the broker before failing."
    )
    kafka_allow_plain_over_plaintext: bool = Field(
        False, description="Allow SASL PLAIN over SASL_PLAINTEXT (the password crosses the "
        "network unencrypted). Off: such a configuration is refused.",
    )  # fmt: skip

    # Topics
    topic_events: str = Field("clickstream.v1", min_length=1, description="Input topic.")
    topic_scores: str = Field("purchase-scores.v1", min_length=1, description="Scores topic.")
    topic_scores_v2: str | None = Field(
        None, min_length=1,
        description="purchase-scores.v2 topic. Default: the scores topic's name with its .v1 "
        "made .v2 (purchase-scores.v2), or with .v2 appended when it has no .v1.",
    )  # fmt: skip
    publish_scores_v1: bool = Field(
        True, description="Publish purchase-scores.v1 (on by default for this release)."
    )
    publish_scores_v2: bool = Field(
        True, description="Publish purchase-scores.v2 (v1 plus reasons) on its own topic."
    )
    topic_dlq: str = Field(
        "clickstream.dlq.v2", min_length=1,
        description="Dead-letter topic (clickstream-dlq.v2 records: no raw identifiers).",
    )  # fmt: skip
    topic_erasure: str = Field(
        "", description="Erase commands (pseudonymous), co-partitioned with the input "
        "(default: <app id>.erasure-commands.v1, so each app replays only its own).",
    )  # fmt: skip
    topic_erasure_receipts: str = Field(
        "", description="Receipts of executed erase commands "
        "(default: <app id>.erasure-receipts.v1).",
    )  # fmt: skip
    scores_retention_hours: int = Field(
        24, ge=1, description="Retention of the scores topic (it carries raw user ids)."
    )
    partitions: int = Field(
        4, ge=1, le=1024, description="Partitions of the input topic and the profile table."
    )
    replication_factor: int = Field(1, ge=1, le=16, description="Replication of new topics.")
    topic_retention_hours: int = Field(168, ge=1, description="Retention of the event topics.")

    # Worker
    app_id: str = Field("intentflow", min_length=1, description="Consumer group and app id.")
    standby_replicas: int = Field(
        1, ge=0, le=8, description="Warm copies of each profile partition kept by other workers "
        "(Faust standby replicas); the group caps it at workers - 1, so one worker keeps none.",
    )  # fmt: skip
    fetch_max_wait_seconds: float = Field(
        0.02, gt=0, le=5,
        description="Longest a fetch waits at the broker for INTENTFLOW_FETCH_MIN_BYTES.",
    )  # fmt: skip
    fetch_min_bytes: int = Field(
        65_536, ge=1, le=10_485_760,
        description="Bytes a fetch waits for (up to the wait above): larger values mean fewer, "
        "bigger batches (less CPU per event) for a little latency.",
    )  # fmt: skip
    checkpoint_interval_seconds: float = Field(
        1.0, gt=0, le=60, description="How often scores, profiles and input offsets are "
        "checkpointed (see the README's delivery guarantees).",
    )  # fmt: skip
    stop_checkpoint_seconds: float = Field(
        20.0, gt=0, le=300, description="How long a stopping worker tries its last checkpoint "
        "(scores delivered, profiles written, offsets committed) before it gives up and "
        "leaves the last second to be replayed.",
    )  # fmt: skip
    profile_format: int = Field(
        6, ge=5, le=6,
        description="The profile format the worker writes: 6, or 5 while an upgrade from a "
        "worker that reads only format 5 may still be rolled back (format 5 leaves out what "
        "each open suggestion's decision saw; suggestions then compute it).",
    )  # fmt: skip
    profile_cache_users: int = Field(
        100_000, ge=100, le=100_000_000,
        description="Decoded profiles kept in memory: every changed one until the next "
        "checkpoint, plus this many recently used.",
    )  # fmt: skip
    batch_max: int = Field(
        500, ge=1, le=100_000,
        description="Most input records per fetch, each fetch one step (and one model call).",
    )  # fmt: skip
    scoring_policy: ScoringPolicy = Field(
        ScoringPolicy.EVERY_EVENT,
        description="every_event, or throttled (at most once per user per score_interval).",
    )
    score_interval_seconds: float = Field(
        5.0, gt=0, le=86_400, description="Throttled policy: least time between a user's scores."
    )
    max_event_bytes: int = Field(
        65_536, ge=256, le=10_485_760, description="Larger payloads go to the DLQ."
    )
    max_clock_skew_seconds: float = Field(
        300.0, gt=0, le=31_536_000,
        description="Events dated more than this after their Kafka timestamp go to the DLQ.",
    )  # fmt: skip
    model_path: Path = Field(
        Path("models/current"), description="Model bundle served (a symlink to a bundle)."
    )
    model_poll_seconds: float = Field(
        2.0, gt=0, le=3600, description="How often the worker checks model_path for a new bundle."
    )
    onnx_threads: int = Field(1, ge=1, le=64, description="onnxruntime intra-op threads.")
    web_host: str = Field("127.0.0.1", description="Address of the web/metrics server.")
    web_port: int = Field(6066, ge=1, le=65535, description="Port of /metrics and health.")
    data_dir: Path = Field(Path("var/worker"), description="Worker state (RocksDB) directory.")
    rocksdb_block_cache_mb: int = Field(
        64, ge=1, le=65_536, description="RocksDB block cache per worker, MiB."
    )
    top_categories: int = Field(5, ge=0, le=50, description="How many interests each score lists.")
    reasons: bool = Field(
        True, description="Reasons on purchase-scores.v2, by occlusion in the batch's one model "
        "call. Off: v2 scores carry reasons null (for measuring their cost).",
    )  # fmt: skip
    explore: bool = Field(
        True, description="Exploration suggestions on purchase-scores.v2 (needs a model bundle "
        "with arms; without them exploration is off and a log line says so).",
    )  # fmt: skip
    explore_policy: str = Field(
        "ts", description="ts (Thompson sampling), greedy (posterior mean), random or exploit."
    )
    explore_rate: float = Field(
        1.0, ge=0, le=1,
        description="Share of new suggestions the policy draws; the rest exploit known interests.",
    )  # fmt: skip
    explore_slots: int = Field(2, ge=1, le=8, description="Open suggestions per shopper.")
    explore_floor: float = Field(
        0.05, ge=0, le=1,
        description="Share of new suggestions drawn uniformly at random (a known propensity).",
    )  # fmt: skip
    explore_window_hours: float = Field(
        0.5, gt=0, le=24 * 90,
        description="Engagement with a suggestion within this (event time) is a success; "
        "after it, a failure.",
    )  # fmt: skip
    drift_half_life_seconds: float = Field(
        600.0, gt=0, le=7 * 86_400,
        description="Half-life of the live feature window the drift PSI is computed on.",
    )  # fmt: skip
    log_level: str = Field("info", description="debug, info, warning or error.")

    # Data protection
    pseudonym_keys: SecretStr = Field(
        SecretStr("dev:intentflow-development-key-not-secret"),
        description="Pseudonym keys, id:secret[,id:secret...], the first active (secret). "
        "The default is a development key: set your own.",
    )
    profile_ttl_days: float = Field(
        30.0, gt=0, le=3650, description="Profiles idle this long (event time) are deleted."
    )
    retention_sweep_pause_seconds: float = Field(
        300.0, ge=0.1, le=86_400,
        description="Rest between two full retention sweeps of a partition.",
    )  # fmt: skip
    pseudonym_grace_days: float = Field(
        7.0, gt=0, le=3650,
        description="After a key rotation, profiles still under a retired key and idle this "
        "long (event time) are deleted: their shoppers have not come back to be moved.",
    )  # fmt: skip
    changelog_max_compaction_lag_seconds: float = Field(
        6 * 3600.0, ge=1, le=365 * 86_400,
        description="Longest a changelog record can wait for compaction after it was "
        "superseded or tombstoned (bounds how long an erased profile survives).",
    )  # fmt: skip
    changelog_delete_retention_seconds: float = Field(
        3600.0, ge=1, le=365 * 86_400,
        description="How long a tombstone itself stays in the compacted changelog.",
    )  # fmt: skip

    @field_validator("kafka_bootstrap")
    @classmethod
    def _check_bootstrap(cls, value: str) -> str:
        servers = [s.strip() for s in value.split(",") if s.strip()]
        if not servers:
            raise ValueError("needs at least one host:port")
        for server in servers:
            host, sep, port = server.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{server!r} is not host:port")
        return ",".join(servers)

    @model_validator(mode="before")
    @classmethod
    def _app_scoped_topics(cls, data: Any) -> Any:
        """Erase commands belong to one app (its consumer group replays them from the start):
        their topics default to names under the app id."""
        if isinstance(data, dict):
            app = data.get("app_id") or "intentflow"
            data.setdefault("topic_erasure", f"{app}.erasure-commands.v1")
            data.setdefault("topic_erasure_receipts", f"{app}.erasure-receipts.v1")
            for name in ("topic_erasure", "topic_erasure_receipts"):
                if not data[name]:
                    data[name] = f"{app}.{name.removeprefix('topic_').replace('_', '-')}.v1"
        return data

    @field_validator("pseudonym_keys")
    @classmethod
    def _check_pseudonym_keys(cls, value: SecretStr) -> SecretStr:
        from streams.privacy.pseudonyms import parse_keys

        try:
            parse_keys(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return value

    @property
    def uses_development_pseudonym_key(self) -> bool:
        return self.pseudonym_keys.get_secret_value().startswith("dev:intentflow-development")

    @field_validator("explore_policy")
    @classmethod
    def _check_explore_policy(cls, value: str) -> str:
        from streams.features.explore import POLICIES

        if value not in POLICIES:
            raise ValueError(f"must be one of {', '.join(POLICIES)}")
        return value

    @property
    def explore_config(self) -> ExploreConfig | None:
        """The exploration knobs, or None when exploration is off."""
        from streams.features.explore import ExploreConfig

        if not self.explore:
            return None
        return ExploreConfig(
            policy=self.explore_policy, rate=self.explore_rate, slots=self.explore_slots,
            floor=self.explore_floor, window_s=self.explore_window_hours * 3600.0,
        )  # fmt: skip

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        level = value.lower()
        if level not in {"debug", "info", "warning", "error"}:
            raise ValueError("must be debug, info, warning or error")
        return level

    @model_validator(mode="after")
    def _check_security(self) -> Settings:
        sasl = self.kafka_security_protocol in {
            SecurityProtocol.SASL_PLAINTEXT,
            SecurityProtocol.SASL_SSL,
        }
        if sasl and not (
            self.kafka_sasl_mechanism and self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                "a SASL security protocol needs INTENTFLOW_KAFKA_SASL_MECHANISM, "
                "INTENTFLOW_KAFKA_SASL_USERNAME and INTENTFLOW_KAFKA_SASL_PASSWORD"
            )
        return self

    @model_validator(mode="after")
    def _check_plain_over_plaintext(self) -> Settings:
        if (
            self.kafka_security_protocol is SecurityProtocol.SASL_PLAINTEXT
            and self.kafka_sasl_mechanism is SaslMechanism.PLAIN
            and not self.kafka_allow_plain_over_plaintext
        ):
            raise ValueError(
                "SASL PLAIN over SASL_PLAINTEXT sends the Kafka password unencrypted: use "
                "INTENTFLOW_KAFKA_SECURITY_PROTOCOL=SASL_SSL, or a SCRAM mechanism, or set "
                "INTENTFLOW_KAFKA_ALLOW_PLAIN_OVER_PLAINTEXT=true to accept the risk"
            )
        return self

    @model_validator(mode="after")
    def _check_score_versions(self) -> Settings:
        if not (self.publish_scores_v1 or self.publish_scores_v2):
            raise ValueError(
                "INTENTFLOW_PUBLISH_SCORES_V1 and INTENTFLOW_PUBLISH_SCORES_V2 are both off: "
                "the worker would publish no score; turn one on"
            )
        if self.publish_scores_v2 and self.scores_v2_topic == self.topic_scores:
            raise ValueError(
                f"INTENTFLOW_TOPIC_SCORES_V2 is the v1 scores topic ({self.topic_scores}); "
                "purchase-scores.v2 needs its own topic"
            )
        return self

    @property
    def scores_v2_topic(self) -> str:
        """The purchase-scores.v2 topic: ``topic_scores_v2``, or derived from the v1 topic."""
        if self.topic_scores_v2:
            return self.topic_scores_v2
        derived, n = re.subn(r"\.v1(?=\.|$)", ".v2", self.topic_scores, count=1)
        return derived if n else f"{self.topic_scores}.v2"

    @property
    def score_versions(self) -> frozenset[str]:
        """The purchase-scores versions the worker publishes ("1", "2")."""
        on = {"1": self.publish_scores_v1, "2": self.publish_scores_v2}
        return frozenset(v for v, enabled in on.items() if enabled)

    @property
    def bootstrap_servers(self) -> list[str]:
        return self.kafka_bootstrap.split(",")


_SECRET_FIELDS = frozenset(
    name
    for name, f in Settings.model_fields.items()
    if f.annotation in (SecretStr, SecretStr | None)
)


def load_settings(**overrides: object) -> Settings:
    """Read the environment once and validate it, or raise one ConfigError naming the variables.

    ``overrides`` take precedence over the environment (used by CLI flags and tests).
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "settings"
            name = f"{ENV_PREFIX}{field.upper()}" if err["loc"] else "settings"
            got = err.get("input")
            secret = err["loc"] and err["loc"][0] in _SECRET_FIELDS
            shown = "" if secret or isinstance(got, dict) or got is None else f" (got {got!r})"
            problems.append(f"  {name}: {err['msg']}{shown}")
        raise ConfigError(
            "invalid configuration:\n" + "\n".join(problems) + "\n"
            "Fix these environment variables; the README lists every setting and its default."
        ) from None
