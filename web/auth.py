"""Conversation tokens, the origin check, and the deployment secret they are signed with.

A visitor's browser holds its conversation id and a token, HMAC-SHA256 of
``tenant_id:conversation_id`` under the deployment secret: any gateway that shares the secret
can check it without a lookup, and nobody can resume a conversation they were not given.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Sequence
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

SECRET_FILE = "secret"


def conversation_token(secret: bytes, tenant_id: str, conversation_id: str) -> str:
    message = f"{tenant_id}:{conversation_id}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def token_matches(secret: bytes, tenant_id: str, conversation_id: str, token: str | None) -> bool:
    if not token:
        return False
    expected = conversation_token(secret, tenant_id, conversation_id)
    return hmac.compare_digest(expected, token)


def origin_allowed(allowed: Sequence[str], origin: str | None) -> bool:
    """An empty list allows every origin; otherwise the Origin header must be listed."""
    if not allowed:
        return True
    if origin is None:
        return False
    normalized = origin.rstrip("/").lower()
    return any(normalized == entry.rstrip("/").lower() for entry in allowed)


def load_secret(configured: str, data_dir: Path) -> bytes:
    """The configured secret, else the one in ``<data_dir>/secret``, made once (mode 0600).

    Created with O_EXCL, so gateways starting together on one machine agree on one secret.
    """
    if configured:
        return configured.encode()
    path = data_dir / SECRET_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
        log.info("generated the conversation-token secret", path=str(path))
    for _ in range(50):  # another gateway may be between its create and its write
        value = path.read_text().strip()
        if value:
            return value.encode()
        time.sleep(0.02)
    raise RuntimeError(f"the secret file {path} is empty: delete it and start again")
