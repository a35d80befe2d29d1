"""Shoppers' data protection: pseudonymous state keys, erasure and retention.

``pseudonyms`` is pure (hmac, hashlib): the keyed pseudonym every store uses in place of the raw
user id, with rotating keys. The worker applies it at its edges (the profile cache, the
dead-letter topic); ``erase`` is the operator's command.
"""
