"""Template lists split into train and held-out by construction."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

SPLITS = ("train", "heldout")
HELDOUT_EVERY = 5


class Phrases:
    """A list of templates; every fifth one (index 4, 9, ...) belongs to the held-out split."""

    def __init__(self, templates: Sequence[str], extra_train: Sequence[str] = ()) -> None:
        if len(templates) < HELDOUT_EVERY:
            raise ValueError("a phrase list needs at least five templates to have a held-out one")
        self.templates = tuple(templates)
        # More training phrasings, added after the split was fixed: appending them to
        # ``templates`` would move which ones are held out (and so change the held-out set).
        self.extra_train: tuple[str, ...] = ()
        self.add_training(extra_train)

    def add_training(self, extra: Sequence[str]) -> None:
        """Offer more phrasings to the training split only (the held-out ones stay put)."""
        overlap = set(extra) & set(self.of("heldout"))
        if overlap:
            raise ValueError(f"extra training phrasings repeat held-out ones: {overlap}")
        self.extra_train += tuple(t for t in extra if t not in self.templates)

    def of(self, split: str) -> tuple[str, ...]:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}")
        held = split == "heldout"
        chosen = tuple(
            t
            for i, t in enumerate(self.templates)
            if (i % HELDOUT_EVERY == HELDOUT_EVERY - 1) == held
        )
        return chosen if held else chosen + self.extra_train

    def pick(self, rng: random.Random, split: str, **values: str) -> str:
        return rng.choice(self.of(split)).format(**values)


def add_training(pairs: Iterable[tuple[Phrases, Sequence[str]]]) -> None:
    """Offer each list its extra training phrasings (``Phrases.add_training``)."""
    for phrases, extra in pairs:
        phrases.add_training(extra)


def maybe(rng: random.Random, probability: float, phrases: Phrases, split: str) -> str:
    return phrases.pick(rng, split) if rng.random() < probability else ""


def join(*parts: str) -> str:
    return " ".join(part.strip() for part in parts if part.strip())
