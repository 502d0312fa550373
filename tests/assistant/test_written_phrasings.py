"""The written training phrasings: each reaches its list's training split, none repeats a
held-out or dev phrasing of its list, and each keeps its list's placeholders."""

from __future__ import annotations

import re
import string

from assistant.lab.corpus.phrases import DEV_EVERY
from assistant.lab.corpus.written_phrasings import WRITTEN, phrase_list
from assistant.lab.natural import user_texts


def _normal(text: str) -> str:
    return re.sub(r"[^\w{}]+", " ", text.lower()).strip()


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def test_every_key_names_a_phrase_list() -> None:
    assert len(WRITTEN) > 40
    for name in WRITTEN:
        phrase_list(name)


def test_written_phrasings_train_and_never_repeat_heldout_or_dev_wording() -> None:
    for name, written in WRITTEN.items():
        phrases = phrase_list(name)
        train, dev = set(phrases.of("train")), set(phrases.of("dev"))
        held = {_normal(t) for t in phrases.of("heldout")}
        assert len(train) + len(dev) >= DEV_EVERY, name  # every list can now spare dev wording
        assert dev and not train & dev, name
        for text in written:
            assert _normal(text) not in held, (name, text)
            assert text in train or text in dev, (name, text)


def test_written_phrasings_keep_their_lists_placeholders() -> None:
    for name, written in WRITTEN.items():
        expected = {frozenset(_fields(t)) for t in phrase_list(name).templates}
        for text in written:
            assert frozenset(_fields(text)) in expected, (name, text)


def test_no_written_phrasing_is_a_natural_set_message() -> None:
    """The hand-written natural set is held out: none of its messages is offered to training."""
    natural = {_normal(text) for text in user_texts()}
    for name, written in WRITTEN.items():
        for text in written:
            assert _normal(text) not in natural, (name, text)
