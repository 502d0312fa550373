"""Template lists split into train, dev and held-out by construction.

Held-out phrasings (every fifth template) are for reporting; dev phrasings (every eighth of a
list's training phrasings, where it has at least eight) are kept out of training too, so that
a checkpoint can be chosen on wording it never saw without looking at the held-out sets.
Entities (orders, tickets, exercises) have no dev split: dev dialogues use training ones
(``entity_split``).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

SPLITS = ("train", "dev", "heldout")
HELDOUT_EVERY = 5
# Of a list's training phrasings, positions 3, 11, 19, ... go to dev; a list with fewer than
# eight keeps them all for training and gives dev the same ones (too few to spare any).
DEV_EVERY = 8
DEV_OFFSET = 3


def entity_split(split: str) -> str:
    """The split whose orders, tickets and exercises a dialogue of ``split`` uses."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}")
    return "heldout" if split == "heldout" else "train"


class Phrases:
    """A list of templates; every fifth one (index 4, 9, ...) belongs to the held-out split,
    and every eighth of the rest (with the extra training phrasings) to the dev split."""

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
        self.extra_train += tuple(
            t for t in dict.fromkeys(extra) if t not in self.templates and t not in self.extra_train
        )

    def of(self, split: str) -> tuple[str, ...]:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}")
        held = split == "heldout"
        chosen = tuple(
            t
            for i, t in enumerate(self.templates)
            if (i % HELDOUT_EVERY == HELDOUT_EVERY - 1) == held
        )
        if held:
            return chosen
        trainable = chosen + self.extra_train
        if len(trainable) < DEV_EVERY:
            return trainable
        wanted = split == "dev"
        return tuple(t for i, t in enumerate(trainable) if (i % DEV_EVERY == DEV_OFFSET) == wanted)

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
