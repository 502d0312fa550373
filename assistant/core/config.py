"""The one settings object, read from ``ASSISTANT_*`` environment variables and CLI flags."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from assistant.core.errors import UserError

ENV_PREFIX = "ASSISTANT_"
LOG_FORMATS = ("auto", "console", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
ENTITY_SLOT_SETTINGS = ("auto", "on", "off")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Settings:
    """Everything a process of this system needs to know about its environment.

    Each field is read from ``ASSISTANT_<FIELD>`` (upper case); a CLI flag overrides it.
    """

    # Redis URL of the bus: redis://HOST:PORT/DB, or redis+sentinel://HOST:PORT,.../SERVICE/DB
    # (read by assistant/bus/connection.py); empty starts a private embedded redis-server
    # under data_dir.
    redis_url: str = ""
    # Replicas that must hold a user message and its turn before the gateway reports them
    # taken (Redis WAIT; capped by the replicas the primary has, so a lone primary never
    # waits): a failover then cannot silently lose a message. "auto": 1 with a
    # redis+sentinel:// URL (the default), else 0; 0 turns it off (docs/deploy.md).
    redis_replica_acks: str = "auto"
    # Prefix of every Redis key, so that two deployments can share one Redis.
    key_prefix: str = "asst"
    # SQLAlchemy async URL; empty means a SQLite file under data_dir.
    database_url: str = ""
    # Where the embedded Redis, the SQLite file and other local state live.
    data_dir: Path = Path("data")
    # Model checkpoint directory; empty means the bundled model.
    model_path: str = ""
    # Torch device for the model: "auto" picks CUDA when present, else the CPU.
    device: str = "auto"
    # Turns a worker decodes at once (the engine's batch slots).
    max_batch: int = 8
    # Decoding mode of the worker's replies (see `assistant eval --help`); empty: the model's
    # default, fast diffusion. "autoregressive" runs the same weights as the baseline.
    decoding_mode: str = ""
    # Entities through slots: "auto" follows the checkpoint (config.json's entity_slots;
    # native checkpoints default to on), "on" or "off" overrides it.
    entity_slots: str = "auto"
    # A turn whose worker has been silent this long is taken over by another worker.
    claim_idle_s: int = 30
    # Address the gateway listens on.
    host: str = "127.0.0.1"
    port: int = 8765
    # "console" (pretty), "json" (one object per line) or "auto" (console on a terminal).
    log_format: str = "auto"
    log_level: str = "info"
    # Signs conversation tokens; every gateway of a deployment needs the same one. Empty: a
    # random secret made once in <data_dir>/secret (mode 0600), shared by the machine's
    # gateways.
    secret: str = ""
    # The public key the demo pages embed; empty: the one in <data_dir>/demo-keys.json.
    demo_public_key: str = ""
    # Gateway rate limits, "RATE/BURST" frames per second: per client address, and per key
    # (a public key is shared by every visitor of a store, hence the larger bucket).
    rate_ip: str = "20/60"
    rate_key: str = "200/600"
    # Comma-separated addresses or CIDRs of the load balancers in front of the gateways: a
    # connection from one of them is rate-limited by the X-Forwarded-For client instead.
    trusted_proxies: str = ""

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from the environment, then apply non-None overrides (CLI flags)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for field in fields(cls):
            raw = env.get(ENV_PREFIX + field.name.upper())
            if raw is not None:
                values[field.name] = _coerce(field.name, field.type, raw)
        for name, value in overrides.items():
            if value is not None:
                values[name] = _coerce(name, _field_type(name), value)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if not 1 <= self.max_batch <= 256:
            raise UserError(f"max batch {self.max_batch} is out of range: use 1-256")
        if not 1 <= self.claim_idle_s <= 3600:
            raise UserError(f"claim idle time {self.claim_idle_s} s is out of range: use 1-3600")
        if not 0 <= self.port <= 65535:
            raise UserError(f"port {self.port} is out of range: use 0-65535 (ASSISTANT_PORT)")
        if self.log_format not in LOG_FORMATS:
            raise UserError(
                f"unknown log format {self.log_format!r}: use one of {', '.join(LOG_FORMATS)}"
            )
        if self.log_level not in LOG_LEVELS:
            raise UserError(
                f"unknown log level {self.log_level!r}: use one of {', '.join(LOG_LEVELS)}"
            )
        if self.entity_slots not in ENTITY_SLOT_SETTINGS:
            raise UserError(
                f"entity slots must be one of {', '.join(ENTITY_SLOT_SETTINGS)}, got "
                f"{self.entity_slots!r} (ASSISTANT_ENTITY_SLOTS)"
            )
        parse_replica_acks(self.redis_replica_acks)
        parse_rate(self.rate_ip, "rate_ip")
        parse_rate(self.rate_key, "rate_key")
        parse_networks(self.trusted_proxies, "trusted_proxies")

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'assistant.db').resolve()}"

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    def to_env(self) -> dict[str, str]:
        """The environment variables that reproduce these settings in a child process."""
        return {ENV_PREFIX + f.name.upper(): str(getattr(self, f.name)) for f in fields(self)}


def parse_replica_acks(text: str) -> int | None:
    """``redis_replica_acks`` as a number; None for "auto" (decided by the Redis URL)."""
    value = text.strip().lower()
    if value == "auto":
        return None
    if not value.isdigit() or int(value) > 16:
        raise UserError(
            f"setting redis_replica_acks must be auto or a whole number 0-16, got "
            f"{text!r} (ASSISTANT_REDIS_REPLICA_ACKS)"
        )
    return int(value)


def parse_rate(text: str, name: str = "rate") -> tuple[float, float]:
    """``"RATE/BURST"`` (frames per second, bucket size) as numbers; UserError when malformed."""
    rate_text, slash, burst_text = text.partition("/")
    try:
        rate, burst = float(rate_text), float(burst_text)
    except ValueError:
        rate = burst = float("nan")
    # NaN fails both comparisons, so malformed and non-finite values land here too.
    if not slash or not (0 < rate < 1e9) or not (1 <= burst < 1e9):
        raise UserError(
            f"setting {name} must be RATE/BURST frames per second, e.g. 20/60 (a rate above 0 "
            f"and a burst of at least 1), got {text!r} (ASSISTANT_{name.upper()})"
        )
    return rate, burst


def parse_networks(text: str, name: str = "trusted_proxies") -> tuple[IPNetwork, ...]:
    """Comma-separated IP addresses or CIDRs (``10.0.0.0/8, ::1``); UserError when malformed."""
    networks: list[IPNetwork] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise UserError(
                f"setting {name} takes IP addresses or CIDRs separated by commas, e.g. "
                f"10.0.0.0/8,192.168.1.7; {item!r} is neither (ASSISTANT_{name.upper()})"
            ) from None
    return tuple(networks)


def _field_type(name: str) -> str:
    for field in fields(Settings):
        if field.name == name:
            return str(field.type)
    raise TypeError(f"unknown setting {name!r}")


def _coerce(name: str, type_name: Any, raw: Any) -> Any:
    type_name = str(type_name)
    if type_name == "int":
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise UserError(
                f"setting {name} must be a whole number, got {raw!r} "
                f"(ASSISTANT_{name.upper()} or --{name.replace('_', '-')})"
            ) from None
    if type_name == "Path":
        return Path(raw)
    return str(raw)
