"""What every family's ``ConfigView.from_dict`` does alike when it reads a config.json dict."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol, Self, TypeVar, cast

__all__ = ["as_view", "first_id", "optional_int", "require", "with_defaults"]


class ConfigView(Protocol):
    """A family's config view: built from its config.json dict by ``from_dict``."""

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Self: ...


V = TypeVar("V", bound=ConfigView)


def as_view(config: V | Mapping[str, Any], view: type[V]) -> V:
    """``config`` itself when it is a ``view`` already, else ``view.from_dict(config)``: what a
    family's model takes as its config."""
    if isinstance(config, view):
        return config
    return view.from_dict(cast(Mapping[str, Any], config))


def require(raw: Mapping[str, Any], keys: Iterable[str]) -> None:
    """Raise ``KeyError`` naming the first of ``keys`` that ``raw`` lacks or sets to null."""
    for key in keys:
        if raw.get(key) is None:
            raise KeyError(key)


def with_defaults(
    raw: Mapping[str, Any], required: Iterable[str], defaults: Mapping[str, Any]
) -> dict[str, Any]:
    """``raw`` over ``defaults`` (an explicit null overrides a default too), once
    :func:`require` has found every ``required`` key."""
    require(raw, required)
    return {**defaults, **raw}


def optional_int(value: Any) -> int | None:
    """``None`` stays ``None``; anything else is an ``int``."""
    return None if value is None else int(value)


def first_id(value: Any) -> Any:
    """A token id, or the first of a list of them (the runtime stops at the first end id); an
    empty list is ``None``."""
    if isinstance(value, list):
        return value[0] if value else None
    return value
