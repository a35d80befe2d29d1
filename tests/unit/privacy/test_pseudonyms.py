"""Keyed pseudonyms: stable, key-dependent, one-way in practice, and the secret never shows."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from pydantic import SecretStr

from streams.errors import ConfigError
from streams.privacy.pseudonyms import Pseudonymizer, key_id_of, parse_keys
from streams.settings import load_settings

SECRET = "correct-horse-battery-staple"


def test_a_pseudonym_is_the_domain_separated_hmac_under_the_active_key() -> None:
    p = Pseudonymizer(parse_keys(SecretStr(f"k1:{SECRET},k0:older-secret-123456")))
    expected = hmac.new(SECRET.encode(), b"intentflow/user-id/v1\x00u42", hashlib.sha256)
    assert p.pseudonym("u42") == f"p1.k1.{expected.hexdigest()[:32]}"
    assert p.pseudonym("u42") == p.pseudonym("u42") != p.pseudonym("u43")
    both = p.all_pseudonyms("u42")
    assert both[0] == p.pseudonym("u42") and key_id_of(both[1]) == "k0" and both[0] != both[1]
    # Without the domain separation the same HMAC would pseudonymise other kinds of ids alike.
    plain = hmac.new(SECRET.encode(), b"u42", hashlib.sha256).hexdigest()[:32]
    assert plain not in p.pseudonym("u42")


def test_the_secret_never_appears_in_reprs_or_errors() -> None:
    keys = parse_keys(SecretStr(f"k1:{SECRET}"))
    assert SECRET not in repr(keys) and SECRET not in repr(Pseudonymizer(keys))
    settings = load_settings(pseudonym_keys=f"k1:{SECRET}")
    assert SECRET not in repr(settings) and SECRET not in str(settings.model_dump())
    with pytest.raises(ConfigError) as bad:
        load_settings(pseudonym_keys="k1:short-secret")
    assert "short-secret" not in str(bad.value) and "INTENTFLOW_PSEUDONYM_KEYS" in str(bad.value)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "entry 1 is not id:secret"),
        ("nocolon", "entry 1 is not id:secret"),
        (f"k-1:{SECRET}", "1-16 letters or digits"),
        (f"k1:{SECRET},k1:{SECRET}", "lists key id 'k1' twice"),
        ("k1:tooshort", "at least 16 characters"),
    ],
)
def test_bad_key_lists_are_refused_with_the_reason(value: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        parse_keys(SecretStr(value))


def test_key_id_of_tells_pseudonyms_from_anything_else() -> None:
    assert key_id_of("p1.k9.0123456789abcdef0123456789abcdef") == "k9"
    assert key_id_of("u42") is None and key_id_of("p2.k9.x") is None
