"""Every Redis key and stream name of the bus, in one place.

Per-conversation keys carry the hash tag ``{c:<conversation_id>}``, so on Redis Cluster all
keys of one conversation live in one slot and a Lua script may touch several of them. Global
keys (the turn stream, the dead-letter stream) have no tag: nothing combines them with a
conversation key in one command. ``prefix`` lets two deployments share one Redis.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

KEY_PREFIX: Final = "asst"
# The consumer group every worker joins; one group, so each turn goes to exactly one worker.
GROUP: Final = "workers"

_PREFIX_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
# Braces would move the hash tag; whitespace and control characters make keys unreadable.
_BAD_ID_CHARS = re.compile(r"[{}\s]")


def check_id(value: str, what: str = "conversation id") -> str:
    """Return ``value`` if it is safe inside a key, else raise ``ValueError``."""
    if not value or len(value) > 200 or _BAD_ID_CHARS.search(value):
        raise ValueError(f"{what} {value!r} cannot be part of a Redis key")
    return value


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix (``asst`` unless two deployments share a Redis)."""

    prefix: str = KEY_PREFIX

    def __post_init__(self) -> None:
        if not _PREFIX_RE.fullmatch(self.prefix):
            raise ValueError(
                f"key prefix {self.prefix!r} must be 1-64 characters of letters, digits, '_.:-'"
            )

    # per conversation ------------------------------------------------------------------

    def _conversation(self, conversation_id: str, name: str) -> str:
        return f"{self.prefix}:{{c:{check_id(conversation_id)}}}:{name}"

    def events(self, conversation_id: str) -> str:
        """Stream of the conversation's events; entry id ``<seq>-0``."""
        return self._conversation(conversation_id, "events")

    def seq(self, conversation_id: str) -> str:
        """Counter of the last sequence number given out."""
        return self._conversation(conversation_id, "seq")

    def once(self, conversation_id: str) -> str:
        """Hash of events appended at most once (a turn's final, its message's echo) -> seq."""
        return self._conversation(conversation_id, "once")

    def turn(self, conversation_id: str) -> str:
        """The id of the one turn in flight (a lock with a TTL)."""
        return self._conversation(conversation_id, "turn")

    def cancel(self, conversation_id: str) -> str:
        """The id of the turn whose cancellation was requested."""
        return self._conversation(conversation_id, "cancel")

    # global ----------------------------------------------------------------------------

    @property
    def turns(self) -> str:
        """Stream of turn requests, consumed by the worker group."""
        return f"{self.prefix}:turns"

    @property
    def dead(self) -> str:
        """Dead-letter stream: turns that failed too often or could not be read."""
        return f"{self.prefix}:turns:dead"

    @property
    def group(self) -> str:
        return GROUP

    @property
    def replication_probe(self) -> str:
        """A key written only to learn, by WAIT after it, that a replica has caught up."""
        return f"{self.prefix}:replication-probe"

    def metrics(self, process_name: str) -> str:
        """One worker process's Prometheus text; it expires unless the worker refreshes it."""
        return f"{self.prefix}:metrics:proc:{check_id(process_name, 'process name')}"

    @property
    def metrics_index(self) -> str:
        """Set of the process names that published metrics (stale names are pruned)."""
        return f"{self.prefix}:metrics:index"

    def worker_heartbeat(self, worker_name: str) -> str:
        """Present while a worker (model loaded) consumes turns; it expires unless renewed."""
        return f"{self.prefix}:workers:alive:{check_id(worker_name, 'worker name')}"

    @property
    def worker_index(self) -> str:
        """Set of the names of workers that announced themselves (stale names are pruned)."""
        return f"{self.prefix}:workers:index"

    def rate_limit(self, scope: str, ident: str) -> str:
        """Token bucket (a hash of tokens and time) of one scope, e.g. ``key`` or ``ip``."""
        return f"{self.prefix}:rl:{check_id(scope, 'scope')}:{check_id(ident, 'id')}"

    def activity(self, tenant_id: str) -> str:
        """Stream of "this conversation changed" notes of one tenant, for the console's list.

        No hash tag: it is never combined with a conversation's keys in one command.
        """
        return f"{self.prefix}:activity:{check_id(tenant_id, 'tenant id')}"


DEFAULT_KEYS: Final = Keys()
