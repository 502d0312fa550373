"""GatewayOptions read from the settings: the replicas a user message waits for."""

from __future__ import annotations

from assistant.core.config import Settings
from web.service import GatewayOptions


def test_replica_acks_follow_the_redis_url_unless_set() -> None:
    """By default ("auto") one replica with Sentinel, none otherwise; a number overrides."""

    def acks(**env: str) -> int:
        return GatewayOptions.from_settings(Settings.load(env=env)).replica_acks

    assert acks() == 0
    assert acks(ASSISTANT_REDIS_URL="redis://h:6379/0") == 0
    assert acks(ASSISTANT_REDIS_URL="redis+sentinel://s1:26379/svc/0") == 1
    auto = {"ASSISTANT_REDIS_REPLICA_ACKS": "auto"}
    assert acks(ASSISTANT_REDIS_URL="redis+sentinel://s1:26379/svc/0", **auto) == 1
    assert acks(ASSISTANT_REDIS_URL="redis://h:6379/0", **auto) == 0
    assert (
        acks(ASSISTANT_REDIS_URL="redis+sentinel://s1/svc", ASSISTANT_REDIS_REPLICA_ACKS="0") == 0
    )
    assert acks(ASSISTANT_REDIS_REPLICA_ACKS="2") == 2
