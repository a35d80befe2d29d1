"""What each intentflow principal may do on a cluster with ACLs, checked before it starts.

``worker_grants`` is the worker's least privilege, stated once: the README's "Secured clusters"
table, the local broker's ACLs and the worker's start-up check all read it. ``check_access``
asks the broker which operations the connected principal is authorized for (the authorized
operations of KIP-430) and raises one ``KafkaAuthorizationError`` listing every missing ACL, so
a missing ACL stops the worker at start-up with its name instead of failing inside a
rebalance. ``grant`` creates ACLs (the local broker and tests use it with an admin connection).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from typing import TypeVar

from streams.errors import KafkaAuthorizationError
from streams.kafka.connection import KafkaConnection
from streams.settings import Settings

T = TypeVar("T")
PROFILE_TABLE = "user_profile"  # streams.worker.app.PROFILE_TABLE (a unit test holds them equal)


class Resource(StrEnum):
    TOPIC = "topic"
    GROUP = "group"


class Op(StrEnum):
    READ = "READ"
    WRITE = "WRITE"
    CREATE = "CREATE"
    DESCRIBE = "DESCRIBE"
    DESCRIBE_CONFIGS = "DESCRIBE_CONFIGS"
    ALTER_CONFIGS = "ALTER_CONFIGS"


@dataclass(frozen=True)
class Grant:
    """Operations allowed on one resource (a literal name, or every name with the prefix)."""

    resource: Resource
    name: str
    operations: tuple[Op, ...]
    prefixed: bool = False
    why: str = ""

    def describe(self) -> str:
        pattern = "prefix" if self.prefixed else ""
        return f"{self.resource} {pattern}{' ' if pattern else ''}{self.name!r}"


def changelog_topic(settings: Settings) -> str:
    """The profile table's changelog topic (Faust's naming: app id, table, "changelog")."""
    return f"{settings.app_id}-{PROFILE_TABLE}-changelog"


def worker_grants(settings: Settings, *, create_topics: bool = False) -> list[Grant]:
    """Everything the worker does on the cluster, and nothing else. ``create_topics`` adds
    CREATE on its own topics, for clusters where the worker creates them on first start
    (otherwise an admin runs ``intentflow topics create`` first)."""
    create = (Op.CREATE,) if create_topics else ()
    grants = [
        Grant(Resource.GROUP, settings.app_id, (Op.READ,), why="join the group, commit offsets"),
        Grant(Resource.TOPIC, settings.topic_events, (Op.READ, Op.DESCRIBE, *create),
              why="consume events"),
        Grant(Resource.TOPIC, settings.topic_scores, (Op.WRITE, Op.DESCRIBE, *create),
              why="publish scores"),
        Grant(Resource.TOPIC, settings.topic_dlq, (Op.WRITE, Op.DESCRIBE, *create),
              why="publish dead letters"),
        # CREATE: Faust declares its table's changelog at every start, and the broker checks
        # CREATE before it finds that the topic exists.
        Grant(Resource.TOPIC, changelog_topic(settings),
              (Op.READ, Op.WRITE, Op.DESCRIBE, Op.CREATE, *_changelog_config_ops(settings)),
              why="write profiles; recover and keep standbys from it; declare it"),
    ]  # fmt: skip
    # The erasure topics of the privacy work, when this version of the settings has them.
    if erasure := getattr(settings, "topic_erasure", None):
        grants.append(
            Grant(Resource.TOPIC, erasure, (Op.READ, Op.DESCRIBE, *create),
                  why="consume erase commands")
        )  # fmt: skip
    if receipts := getattr(settings, "topic_erasure_receipts", None):
        grants.append(
            Grant(Resource.TOPIC, receipts, (Op.WRITE, Op.DESCRIBE, *create),
                  why="publish erasure receipts")
        )  # fmt: skip
    return grants


def _changelog_config_ops(settings: Settings) -> tuple[Op, ...]:
    # A worker that sets the changelog's compaction at start-up (the privacy work's
    # ensure_changelog) needs to alter the topic's configuration.
    if hasattr(settings, "changelog_max_compaction_lag_seconds"):
        return (Op.DESCRIBE_CONFIGS, Op.ALTER_CONFIGS)
    return ()


def producer_grants(settings: Settings) -> list[Grant]:
    """The simulator (or a website's producer): write the input topic."""
    return [
        Grant(Resource.TOPIC, settings.topic_events, (Op.WRITE, Op.DESCRIBE), why="produce events")
    ]


def score_reader_grants(settings: Settings, group_prefix: str = "marketing-") -> list[Grant]:
    """A marketing service: read the scores topic, in groups named with ``group_prefix``
    (``intentflow scores`` reads without a group)."""
    return [
        Grant(Resource.TOPIC, settings.topic_scores, (Op.READ, Op.DESCRIBE), why="read scores"),
        Grant(Resource.GROUP, group_prefix, (Op.READ,), prefixed=True, why="consumer groups"),
    ]


def principal(conn: KafkaConnection) -> str:
    """The principal the broker most likely sees for ``conn`` (for messages)."""
    if conn.uses_sasl:
        return f"User:{conn.sasl_username}"
    if conn.ssl_certfile:
        return f"the subject of the client certificate {conn.ssl_certfile}"
    return "User:ANONYMOUS"


def _admin(conn: KafkaConnection, timeout: float):  # type: ignore[no-untyped-def]
    from kafka import KafkaAdminClient

    return KafkaAdminClient(
        **conn.kafka_python(),
        client_id="intentflow-access",
        request_timeout_ms=int(timeout * 1000),
        bootstrap_timeout_ms=int(timeout * 1000),
    )


def missing_operations(
    conn: KafkaConnection, grants: Sequence[Grant], timeout: float = 15.0
) -> list[tuple[Grant, tuple[Op, ...]]]:
    """For each grant the principal lacks in part, the operations it lacks. Topics that do not
    exist yet are left out (creating them is checked when they are created), and so is a
    group that does not exist yet beyond DESCRIBE (the broker reports no operations for it:
    a missing READ shows when the worker joins it)."""
    from kafka.errors import GroupAuthorizationFailedError

    admin = _admin(conn, timeout)
    deadline = time.monotonic() + timeout
    out: list[tuple[Grant, tuple[Op, ...]]] = []
    try:
        topics = [g for g in grants if g.resource is Resource.TOPIC and not g.prefixed]
        described = {d["name"]: d for d in admin.describe_topics([g.name for g in topics])}
        for g in topics:
            found = described.get(g.name, {})
            code = found.get("error_code", 0)
            if code == 3:  # UNKNOWN_TOPIC_OR_PARTITION: described, but not there yet
                continue
            allowed = set() if code == 29 else set(found.get("authorized_operations") or ())
            lacking = tuple(op for op in g.operations if op.value not in allowed)
            if lacking:
                out.append((g, lacking))
        for g in grants:
            if g.resource is not Resource.GROUP or g.prefixed:
                continue
            try:
                found = _retrying(partial(admin.describe_groups, [g.name]), deadline)
            except GroupAuthorizationFailedError:
                allowed = set()
            else:
                ops = found.get(g.name, {}).get("authorized_operations")
                if ops is None:  # a group that does not exist yet: only DESCRIBE is known
                    continue
                allowed = set(ops)
            lacking = tuple(op for op in g.operations if op.value not in allowed)
            if lacking:
                out.append((g, lacking))
    finally:
        admin.close()
    return out


def _retrying(call: Callable[[], T], deadline: float) -> T:
    """``call()``, again while it fails with a retriable error (a coordinator being elected
    on a fresh cluster) and the deadline allows."""
    from kafka.errors import KafkaError

    while True:
        try:
            return call()
        except KafkaError as exc:
            if not exc.retriable or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def check_access(
    conn: KafkaConnection, grants: Sequence[Grant], *, who: str = "intentflow"
) -> None:
    """Raise ``KafkaAuthorizationError`` listing every ACL of ``grants`` the principal lacks."""
    missing = missing_operations(conn, grants)
    if missing:
        raise authorization_error(conn, missing, who=who)


def authorization_error(
    conn: KafkaConnection, missing: Iterable[tuple[Grant, tuple[Op, ...]]], *, who: str
) -> KafkaAuthorizationError:
    lines = [
        f"  {g.describe()}: {', '.join(op.value for op in ops)}"
        + (f" (to {g.why})" if g.why else "")
        for g, ops in missing
    ]
    return KafkaAuthorizationError(
        f"{principal(conn)} at {conn.bootstrap} lacks ACLs that {who} needs:\n"
        + "\n".join(lines)
        + "\nAsk the cluster's admin to allow these operations for that principal (the "
        'README\'s "Secured clusters" lists every ACL of each intentflow principal).'
    )


def grant(admin: KafkaConnection, principal_name: str, grants: Iterable[Grant]) -> int:
    """Create ALLOW ACLs for ``User:<principal_name>`` (an admin connection). Returns how many."""
    from kafka.admin import (
        ACL,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePattern,
        ResourceType,
    )

    acls = [
        ACL(
            principal=f"User:{principal_name}",
            host="*",
            operation=ACLOperation[op.value],
            permission_type=ACLPermissionType.ALLOW,
            resource_pattern=ResourcePattern(
                ResourceType[g.resource.value.upper()],
                g.name,
                ACLResourcePatternType.PREFIXED if g.prefixed else ACLResourcePatternType.LITERAL,
            ),
        )
        for g in grants
        for op in g.operations
    ]
    client = _admin(admin, 30.0)
    try:
        result = client.create_acls(acls)
    finally:
        client.close()
    failed = result.get("failed", []) if isinstance(result, dict) else []
    if failed:
        raise KafkaAuthorizationError(f"creating ACLs failed: {failed}")
    return len(acls)
