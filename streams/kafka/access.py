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
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
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
    read, write = (Op.READ, Op.DESCRIBE, *create), (Op.WRITE, Op.DESCRIBE, *create)
    grants = [
        Grant(Resource.GROUP, settings.app_id, (Op.READ,), why="join the group, commit offsets"),
        Grant(Resource.TOPIC, settings.topic_events, read, why="consume events"),
        Grant(Resource.TOPIC, settings.topic_erasure, read, why="consume erase commands"),
    ]
    if settings.publish_scores_v1:
        grants.append(Grant(Resource.TOPIC, settings.topic_scores, write, why="publish scores"))
    if settings.publish_scores_v2:
        grants.append(
            Grant(Resource.TOPIC, settings.scores_v2_topic, write, why="publish v2 scores")
        )
    grants += [
        Grant(Resource.TOPIC, settings.topic_dlq, write, why="publish dead letters"),
        Grant(Resource.TOPIC, settings.topic_erasure_receipts, write,
              why="publish erasure receipts"),
        # CREATE: Faust declares its table's changelog at every start, and the broker checks
        # CREATE before it finds that the topic exists. ALTER_CONFIGS: the worker sets the
        # changelog's compaction bounds at start-up (streams.kafka.topics.ensure_changelog).
        Grant(Resource.TOPIC, changelog_topic(settings),
              (Op.READ, Op.WRITE, Op.DESCRIBE, Op.CREATE, Op.ALTER_CONFIGS),
              why="write profiles, recover and keep standbys from it, declare and configure it"),
    ]  # fmt: skip
    return grants


def producer_grants(settings: Settings) -> list[Grant]:
    """The simulator (or a website's producer): write the input topic."""
    return [
        Grant(Resource.TOPIC, settings.topic_events, (Op.WRITE, Op.DESCRIBE), why="produce events")
    ]


def eraser_grants(settings: Settings) -> list[Grant]:
    """Whoever runs ``intentflow erase`` (a privacy team's tooling): send erase commands and
    read the receipts (assigned, no group). Nothing else: no scores, no events, no profiles."""
    return [
        Grant(Resource.TOPIC, settings.topic_erasure, (Op.WRITE, Op.DESCRIBE),
              why="send erase commands"),
        Grant(Resource.TOPIC, settings.topic_erasure_receipts, (Op.READ, Op.DESCRIBE),
              why="read erasure receipts"),
    ]  # fmt: skip


def score_reader_grants(settings: Settings, group_prefix: str = "marketing-") -> list[Grant]:
    """A marketing service: read the scores topics (v1 and v2), in groups named with
    ``group_prefix`` (``intentflow scores`` reads without a group)."""
    topics = [settings.topic_scores, *([settings.scores_v2_topic] * settings.publish_scores_v2)]
    return [
        *(Grant(Resource.TOPIC, t, (Op.READ, Op.DESCRIBE), why="read scores") for t in topics),
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


@contextmanager
def explained(conn: KafkaConnection, doing: str) -> Iterator[None]:
    """Turn a broker's authorization failure while ``doing`` something into a
    ``KafkaAuthorizationError`` that names the principal and what it was refused."""
    from kafka.errors import AuthorizationError

    try:
        yield
    except AuthorizationError as exc:
        detail = str(exc).split("'", 2)[1] if str(exc).count("'") >= 2 else type(exc).__name__
        raise KafkaAuthorizationError(
            f"{principal(conn)} at {conn.bootstrap} was refused while {doing} "
            f"({type(exc).__name__}: {detail[:300]}). Ask the cluster's admin for the ACL, or "
            "have an admin create the topics first (`intentflow topics create` with admin "
            'credentials); the README\'s "Secured clusters" lists every ACL.'
        ) from None


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
