"""The worker's least privilege, stated once, and the messages of a missing ACL."""

from __future__ import annotations

from streams.kafka.access import (
    Grant,
    Op,
    Resource,
    authorization_error,
    changelog_topic,
    worker_grants,
)
from streams.kafka.connection import KafkaConnection
from streams.settings import load_settings
from streams.worker.app import changelog_topic_name


def test_the_worker_may_read_its_input_and_write_its_outputs_only() -> None:
    settings = load_settings(app_id="shop", topic_events="ev", topic_scores="sc", topic_dlq="dl")
    grants = {(g.resource, g.name): set(g.operations) for g in worker_grants(settings)}
    assert grants[(Resource.GROUP, "shop")] == {Op.READ}
    assert grants[(Resource.TOPIC, "ev")] == {Op.READ, Op.DESCRIBE}
    assert grants[(Resource.TOPIC, "sc")] == {Op.WRITE, Op.DESCRIBE}
    assert grants[(Resource.TOPIC, "dl")] == {Op.WRITE, Op.DESCRIBE}
    assert grants[(Resource.TOPIC, settings.scores_v2_topic)] == {Op.WRITE, Op.DESCRIBE}
    assert grants[(Resource.TOPIC, settings.topic_erasure)] == {Op.READ, Op.DESCRIBE}
    assert grants[(Resource.TOPIC, settings.topic_erasure_receipts)] == {Op.WRITE, Op.DESCRIBE}
    changelog = grants[(Resource.TOPIC, "shop-user_profile-changelog")]
    assert {Op.READ, Op.WRITE, Op.DESCRIBE, Op.CREATE} <= changelog
    assert all(not g.prefixed for g in worker_grants(settings))  # literal names only
    # CREATE on the other topics only where the worker is to create them.
    assert all(Op.CREATE not in ops for (_, name), ops in grants.items() if name in {"ev", "sc"})
    v1_only = load_settings(topic_scores="sc", publish_scores_v2=False)
    assert {g.name for g in worker_grants(v1_only)} & {v1_only.scores_v2_topic} == set()
    creating = worker_grants(settings, create_topics=True)
    assert all(Op.CREATE in g.operations for g in creating if g.resource is Resource.TOPIC)


def test_the_changelog_name_is_the_workers() -> None:
    settings = load_settings(app_id="shop")
    assert changelog_topic(settings) == changelog_topic_name(settings)


def test_a_missing_acl_names_the_principal_resource_and_operation() -> None:
    conn = KafkaConnection(
        bootstrap_servers=("k:9093",), sasl_username="intentflow", sasl_mechanism=None
    )
    err = authorization_error(
        conn,
        [(Grant(Resource.TOPIC, "sc", (Op.WRITE,), why="publish scores"), (Op.WRITE,))],
        who="the worker",
    )
    text = str(err)
    assert "at k:9093 lacks ACLs that the worker needs" in text
    assert "  topic 'sc': WRITE (to publish scores)" in text
    assert err.exit_code == 2
