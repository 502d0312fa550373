"""Reading /metrics expositions in tests with prometheus_client's own text parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def families(text: str) -> dict[str, str]:
    """Family name (as the parser names it: counters without ``_total``) -> its type.

    Fails on a text the parser refuses, and on a family declared twice.
    """
    found: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        assert family.name not in found, f"family {family.name} declared twice"
        found[family.name] = family.type
    return found


def samples(text: str, name: str, **labels: str) -> list[Sample]:
    """The samples named ``name`` whose labels include ``labels``."""
    return [
        sample
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    ]


def value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` with these labels (0 when there is none)."""
    return sum(sample.value for sample in samples(text, name, **labels))


def sample_names(text: str) -> set[str]:
    """Every sample name of the exposition (a histogram's ``_bucket``, ``_sum``, ...)."""
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}
