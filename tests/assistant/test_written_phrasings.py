"""The written training phrasings: each reaches its list's training split, none repeats a
held-out or dev phrasing of its list, and each keeps its list's placeholders."""

from __future__ import annotations

import re
import string

from assistant.lab.corpus.phrases import DEV_EVERY, Phrases
from assistant.lab.corpus.written_phrasings import WRITTEN, batches, phrase_list
from assistant.lab.natural import user_texts


def _normal(text: str) -> str:
    return re.sub(r"[^\w{}]+", " ", text.lower()).strip()


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def _written() -> list[tuple[str, str]]:
    return [(name, text) for batch in batches() for name, texts in batch.items() for text in texts]


def test_every_key_names_a_phrase_list() -> None:
    assert len(WRITTEN) > 40
    for batch in batches():
        for name in batch:
            phrase_list(name)


def test_a_later_batch_keeps_the_earlier_dev_phrasings() -> None:
    """Batches are appended in order, so a list's dev phrasings before the last batch (chosen
    by position among its trainable ones) are still dev after it."""
    *_, last = batches()
    for name, texts in last.items():
        phrases = phrase_list(name)
        before = Phrases(phrases.templates, [t for t in phrases.extra_train if t not in texts])
        assert set(before.of("dev")) <= set(phrases.of("dev")), name


def test_written_phrasings_train_and_never_repeat_heldout_or_dev_wording() -> None:
    for name, text in _written():
        phrases = phrase_list(name)
        train, dev = set(phrases.of("train")), set(phrases.of("dev"))
        held = {_normal(t) for t in phrases.of("heldout")}
        assert len(train) + len(dev) >= DEV_EVERY, name  # every list can now spare dev wording
        assert dev and not train & dev, name
        assert _normal(text) not in held, (name, text)
        assert text in train or text in dev, (name, text)


def test_written_phrasings_keep_their_lists_placeholders() -> None:
    for name, text in _written():
        expected = {frozenset(_fields(t)) for t in phrase_list(name).templates}
        assert frozenset(_fields(text)) in expected, (name, text)


def test_no_written_phrasing_is_a_natural_set_message() -> None:
    """The hand-written natural set is held out: none of its messages is offered to training."""
    natural = {_normal(text) for text in user_texts()}
    for name, text in _written():
        assert _normal(text) not in natural, (name, text)
