"""Topic layout, declared once from settings, and the admin operations on it."""

from __future__ import annotations

from dataclasses import dataclass, field

from streams.errors import BrokerUnreachableError, TopicConfigError
from streams.kafka.connection import connection
from streams.settings import Settings


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str] = field(default_factory=dict)


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """The topics intentflow owns. Input, scores and erase commands share the partition count
    (co-partitioned by user with the profile table). The scores topic carries raw user ids for
    the marketing services, so it keeps them only ``scores_retention_hours``; the dead letters
    carry none and are kept 30 days for forensics."""

    def deleting(hours: float) -> dict[str, str]:
        return {"cleanup.policy": "delete", "retention.ms": str(int(hours * 3_600_000))}

    n, rf = settings.partitions, settings.replication_factor
    return [
        TopicSpec(settings.topic_events, n, rf, deleting(settings.topic_retention_hours)),
        TopicSpec(settings.topic_scores, n, rf, deleting(settings.scores_retention_hours)),
        *(  # purchase-scores.v2 beside v1, with the same retention (it carries raw user ids)
            [TopicSpec(settings.scores_v2_topic, n, rf, deleting(settings.scores_retention_hours))]
            if settings.publish_scores_v2
            else []
        ),
        TopicSpec(settings.topic_dlq, n, rf, deleting(30 * 24)),
        TopicSpec(settings.topic_erasure, n, rf, deleting(7 * 24)),
        TopicSpec(settings.topic_erasure_receipts, 1, rf, deleting(7 * 24)),
    ]


def changelog_config(settings: Settings) -> dict[str, str]:
    """The profile changelog's topic configuration: compacted, with a bounded compaction lag,
    so an erased or expired profile's records are gone from the log within
    ``segment.ms + max.compaction.lag.ms`` of its tombstone, and the tombstone itself
    ``delete.retention.ms`` later (the README's erasure bound)."""
    lag_ms = int(settings.changelog_max_compaction_lag_seconds * 1000)
    return {
        "cleanup.policy": "compact",
        "max.compaction.lag.ms": str(lag_ms),
        "segment.ms": str(max(1000, lag_ms // 2)),
        "delete.retention.ms": str(int(settings.changelog_delete_retention_seconds * 1000)),
        "min.cleanable.dirty.ratio": "0.1",
    }


def ensure_changelog(settings: Settings, topic: str) -> str:
    """Create the profile changelog with ``changelog_config``, or set that configuration on the
    existing topic (incrementally: its other settings stay) after checking its partitions."""
    from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    config = changelog_config(settings)
    current = existing_partitions(settings, [topic])
    admin = admin_client(settings)
    try:
        if topic not in current:
            try:
                admin.create_topics(
                    [
                        NewTopic(
                            topic,
                            settings.partitions,
                            settings.replication_factor,
                            topic_configs=config,
                        )
                    ]
                )
                return f"created ({settings.partitions} partitions)"
            except TopicAlreadyExistsError:
                current = existing_partitions(settings, [topic])  # created meanwhile
        check_partition_count(topic, current[topic], settings.partitions)
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=config)])
        return f"exists ({current[topic]} partitions), compaction configured"
    finally:
        admin.close()


def admin_client(settings: Settings, timeout: float | None = None):  # type: ignore[no-untyped-def]
    """A kafka-python admin client, or BrokerUnreachableError naming the bootstrap address (or
    the TLS or SASL problem that stopped the connection)."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    wait = timeout if timeout is not None else settings.kafka_connect_timeout_seconds
    try:
        return KafkaAdminClient(
            **connection(settings).kafka_python(),
            client_id=f"{settings.app_id}-admin",
            request_timeout_ms=int(wait * 1000),
            bootstrap_timeout_ms=int(wait * 1000),
        )
    except (KafkaError, OSError) as exc:
        # kafka-python reports a refused TLS handshake or SASL login as a timeout: find the
        # cause, so the message says what to fix.
        from streams.kafka.probe import diagnose

        if (problem := diagnose(connection(settings), min(wait, 10.0))) is not None:
            raise problem from None
        raise BrokerUnreachableError(
            f"no Kafka broker answered at {settings.kafka_bootstrap} within {wait:.0f}s "
            f"({type(exc).__name__}). Start one with `intentflow kafka start`, or set "
            "INTENTFLOW_KAFKA_BOOTSTRAP to a running broker."
        ) from None


def existing_partitions(settings: Settings, names: list[str]) -> dict[str, int]:
    """Partition counts of those of ``names`` that exist."""
    admin = admin_client(settings)
    try:
        present = set(admin.list_topics())
        wanted = [n for n in names if n in present]
        if not wanted:
            return {}
        return {d["name"]: len(d["partitions"]) for d in admin.describe_topics(wanted)}
    finally:
        admin.close()


def topic_id(settings: Settings, name: str) -> str | None:
    """The Kafka topic id of ``name`` (a UUID that changes when the topic is re-created), or
    None when the broker does not report one."""
    admin = admin_client(settings)
    try:
        (description,) = admin.describe_topics([name])
    finally:
        admin.close()
    found = description.get("topic_id")
    return str(found) if found else None


def create_topics(settings: Settings) -> dict[str, str]:
    """Create every missing topic; check the existing ones. Returns name -> what happened."""
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    specs = topic_specs(settings)
    current = existing_partitions(settings, [s.name for s in specs])
    outcome: dict[str, str] = {}
    missing = [s for s in specs if s.name not in current]
    for spec in specs:
        if spec.name in current:
            check_partition_count(spec.name, current[spec.name], spec.partitions)
            outcome[spec.name] = f"exists ({current[spec.name]} partitions)"
    if missing:
        admin = admin_client(settings)
        try:
            admin.create_topics(
                [
                    NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=s.config)
                    for s in missing
                ],
                validate_only=False,
            )
        except TopicAlreadyExistsError:
            pass  # created concurrently by another worker or init job: fine
        finally:
            admin.close()
        for spec in missing:
            outcome[spec.name] = f"created ({spec.partitions} partitions)"
    return outcome


def check_partition_count(topic: str, actual: int, expected: int) -> None:
    """Fail loudly when a topic's partition count breaks co-partitioning."""
    if actual != expected:
        raise TopicConfigError(
            f"topic {topic!r} has {actual} partitions, but INTENTFLOW_PARTITIONS is {expected}. "
            "The profile table is co-partitioned with the input topic, so they must match: set "
            f"INTENTFLOW_PARTITIONS={actual}, or recreate the topic with {expected} partitions."
        )
