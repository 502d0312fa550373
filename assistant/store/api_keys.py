"""API keys: generated once, shown once, stored as a SHA-256 hash with a visible prefix."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from assistant.store.tables import KeyKind

_KIND_TAG = {KeyKind.PUBLIC: "pk", KeyKind.SECRET: "sk", KeyKind.OPERATOR: "ok"}


@dataclass(frozen=True)
class NewKey:
    plain: str  # shown to the user once, never stored
    prefix: str  # stored, identifies the key in lists and for revocation
    key_hash: str  # stored, what authentication compares against


def generate_key(kind: KeyKind) -> NewKey:
    prefix = f"{_KIND_TAG[kind]}_{secrets.token_hex(4)}"
    plain = f"{prefix}_{secrets.token_urlsafe(32)}"
    return NewKey(plain=plain, prefix=prefix, key_hash=hash_key(plain))


def hash_key(plain: str) -> str:
    return hashlib.sha256(plain.encode()).hexdigest()


def prefix_of(plain: str) -> str:
    """The stored prefix of a well-formed key, or '' for anything else."""
    parts = plain.split("_")
    return "_".join(parts[:2]) if len(parts) >= 3 else ""


def same_hash(a: str, b: str) -> bool:
    return hmac.compare_digest(a, b)
