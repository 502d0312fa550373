"""API key generation and hashing (pure)."""

from __future__ import annotations

from assistant.store.api_keys import generate_key, hash_key, prefix_of
from assistant.store.tables import KeyKind


def test_key_has_prefix_and_hash() -> None:
    """The plain key starts with its prefix and hashes to the stored hash."""
    new = generate_key(KeyKind.PUBLIC)
    assert new.plain.startswith(new.prefix + "_") and new.prefix.startswith("pk_")
    assert hash_key(new.plain) == new.key_hash and new.plain not in new.key_hash
    assert prefix_of(new.plain) == new.prefix


def test_keys_are_unique_and_kind_tagged() -> None:
    """Two keys differ; operator keys are tagged ok_."""
    assert generate_key(KeyKind.SECRET).plain != generate_key(KeyKind.SECRET).plain
    assert generate_key(KeyKind.OPERATOR).prefix.startswith("ok_")


def test_malformed_key_has_no_prefix() -> None:
    """Anything not shaped like a key has an empty prefix."""
    assert prefix_of("") == "" and prefix_of("nounderscore") == "" and prefix_of("a_b") == ""
