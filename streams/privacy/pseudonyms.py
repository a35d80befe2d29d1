"""Keyed pseudonyms for user ids: ``p1.<key id>.<hex>`` = HMAC-SHA256(key, domain-separated id).

The worker never stores a raw user id: profiles in RocksDB and the changelog, dead-letter keys
and identifier fields, and erase commands all carry the pseudonym. Only whoever holds a key
(the workers, the erase command) can compute a user's pseudonym; nobody can turn one back.

Keys rotate: ``INTENTFLOW_PSEUDONYM_KEYS`` lists ``id:secret`` pairs, the first one active.
A profile not found under the active key is looked up under the others, rewritten under the
active key, and its old entry is tombstoned.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from pydantic import SecretStr

from streams.errors import ConfigError

PREFIX = "p1"
_DOMAIN = b"intentflow/user-id/v1\x00"  # domain separation: these bytes pseudonymise user ids only
_DIGEST_HEX = 32  # 128 bits of the HMAC: collision-free for any number of shoppers


@dataclass(frozen=True)
class PseudonymKey:
    key_id: str
    secret: SecretStr = field(repr=False)


class Pseudonymizer:
    """Computes pseudonyms under the active key and under every older key still configured."""

    def __init__(self, keys: list[PseudonymKey]) -> None:
        if not keys:
            raise ConfigError("INTENTFLOW_PSEUDONYM_KEYS needs at least one id:secret pair")
        self.keys = keys
        self._recent: dict[str, str] = {}
        self._macs = [
            (k.key_id, hmac.new(k.secret.get_secret_value().encode("utf-8"), _DOMAIN, "sha256"))
            for k in keys
        ]

    def __repr__(self) -> str:
        return f"Pseudonymizer(keys={[k.key_id for k in self.keys]})"

    @property
    def active_key_id(self) -> str:
        return self.keys[0].key_id

    def pseudonym(self, user_id: str) -> str:
        """The user's pseudonym under the active key (the last 65,536 kept in memory)."""
        found = self._recent.get(user_id)
        if found is None:
            if len(self._recent) >= 65_536:
                self._recent.clear()
            found = self._recent[user_id] = self._under(0, user_id)
        return found

    def all_pseudonyms(self, user_id: str) -> list[str]:
        """The user's pseudonym under every configured key, the active one first."""
        return [self._under(i, user_id) for i in range(len(self._macs))]

    def _under(self, index: int, user_id: str) -> str:
        key_id, base = self._macs[index]
        mac = base.copy()
        mac.update(user_id.encode("utf-8", errors="surrogateescape"))
        return f"{PREFIX}.{key_id}.{mac.hexdigest()[:_DIGEST_HEX]}"


def key_id_of(pseudonym: str) -> str | None:
    """The key id a pseudonym was made under (None: not a pseudonym)."""
    parts = pseudonym.split(".")
    return parts[1] if len(parts) == 3 and parts[0] == PREFIX else None


def parse_keys(value: SecretStr) -> list[PseudonymKey]:
    """``id:secret[,id:secret...]`` into keys; ConfigError naming the problem (never the secret)."""
    keys: list[PseudonymKey] = []
    seen: set[str] = set()
    for n, part in enumerate(value.get_secret_value().split(","), start=1):
        key_id, sep, secret = part.strip().partition(":")
        if not sep or not key_id or not secret:
            raise ConfigError(
                f"INTENTFLOW_PSEUDONYM_KEYS entry {n} is not id:secret (the secret is not shown)"
            )
        if not key_id.isalnum() or len(key_id) > 16:
            raise ConfigError(
                f"INTENTFLOW_PSEUDONYM_KEYS entry {n}: the key id must be 1-16 letters or digits"
            )
        if len(secret) < 16:
            raise ConfigError(
                f"INTENTFLOW_PSEUDONYM_KEYS key {key_id!r}: the secret must be at least 16 "
                "characters (use e.g. `openssl rand -hex 32`)"
            )
        if key_id in seen:
            raise ConfigError(f"INTENTFLOW_PSEUDONYM_KEYS lists key id {key_id!r} twice")
        seen.add(key_id)
        keys.append(PseudonymKey(key_id, SecretStr(secret)))
    return keys
