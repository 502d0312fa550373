"""Training-only noise on user turns: deterministic, entity-safe, never on held-out data."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from assistant.agent.prompting import model_messages
from assistant.agent.trimming import ELISION
from assistant.demo.shop import build_shop
from assistant.entities.slots import SlotTable
from assistant.lab import evaluation
from assistant.lab.corpus import augment, support
from assistant.lab.corpus.build import build_corpus, dialogues, read_dialogues
from assistant.lab.corpus.dialogue import Dialogue
from assistant.lab.corpus.phrases import Phrases


def _texts(split: str, count: int = 200) -> list[str]:
    store = build_shop()
    return [
        item.text
        for d in dialogues(count, split, 7, store)
        for item in d.items
        if item.role == "user"
    ]


def _augmented(seed: int) -> list[Dialogue]:
    store, rng = build_shop(), random.Random(seed)
    return [augment.augment_dialogue(d, rng) for d in dialogues(50, "train", 7, store)]


def test_augmentation_is_deterministic() -> None:
    """The same seed gives the same noise; another seed gives other noise."""
    assert [d.items for d in _augmented(5)] == [d.items for d in _augmented(5)]
    assert [d.items for d in _augmented(5)] != [d.items for d in _augmented(6)]


def test_extra_training_phrasings_stay_out_of_heldout() -> None:
    """Phrasings added for training are offered to training only, never held out."""
    extended = [p for p in _all_phrases() if p.extra_train]
    assert extended
    for phrases in extended:
        assert set(phrases.extra_train) <= set(phrases.of("train")) | set(phrases.of("dev"))
        assert not set(phrases.extra_train) & set(phrases.of("heldout"))
    with pytest.raises(ValueError):
        Phrases(["a", "b", "c", "d", "e"], extra_train=["e"])


def test_heldout_dialogues_are_refused() -> None:
    store = build_shop()
    held = next(iter(dialogues(1, "heldout", 7, store)))
    with pytest.raises(ValueError):
        augment.augment_dialogue(held, random.Random(0))


def test_augmentation_keeps_every_entity() -> None:
    """The slots the extractor finds are the same before and after the noise."""
    rng = random.Random(3)
    changed = 0
    for text in _texts("train"):
        for _ in range(3):
            noisy = augment.augment_text(text, rng)
            changed += noisy != text
            before, after = SlotTable(), SlotTable()
            before.delexicalize(text)
            after.delexicalize(noisy)
            assert sorted(before.values.values()) == sorted(after.values.values()), (text, noisy)
    assert changed > 100


def test_heldout_corpus_is_the_same_with_and_without_augmentation(tmp_path: Path) -> None:
    """Augmenting draws from its own generator: held-out files are byte-for-byte equal."""
    plain, noisy = tmp_path / "plain", tmp_path / "noisy"
    build_corpus(plain, train_dialogues=200, heldout_dialogues=100, seed=3, augment=False)
    build_corpus(noisy, train_dialogues=200, heldout_dialogues=100, seed=3, augment=True)
    for name in ("heldout.jsonl", "heldout_dialogues.jsonl"):
        assert (plain / name).read_bytes() == (noisy / name).read_bytes()
    assert (plain / "train.jsonl").read_bytes() != (noisy / "train.jsonl").read_bytes()


def _normal(text: str) -> str:
    return re.sub(r"[^a-z ]", "", text.lower()).strip()


def _all_phrases() -> list[Phrases]:
    found: list[Phrases] = []
    for value in vars(support).values():
        if isinstance(value, Phrases):
            found.append(value)
        elif isinstance(value, dict):
            found += [v for v in value.values() if isinstance(v, Phrases)]
    return found


def test_fillers_are_not_heldout_templates() -> None:
    """No opener or closer repeats a held-out phrasing (greetings, thanks, ...)."""
    held = {_normal(t) for phrases in _all_phrases() for t in phrases.of("heldout")}
    for filler in augment.OPENERS + augment.CLOSERS:
        assert _normal(filler) not in held, filler


def test_typos_and_casing_leave_entities_alone() -> None:
    text = "Where is my order NW-123456? My email is Ann.Lee@example.com and I paid $12.50."
    rng = random.Random(0)
    for _ in range(50):
        noisy = augment.upper_case(augment.add_typos(text, rng), rng)
        for entity in ("NW-123456", "Ann.Lee@example.com", "$12.50."):
            assert entity in noisy


def test_model_view_of_an_augmented_turn_keeps_its_tool_arguments() -> None:
    store = build_shop()
    rng = random.Random(1)
    for d in dialogues(100, "train", 7, store):
        noisy = augment.augment_dialogue(d, rng)
        calls = [m for m in model_messages(noisy.channel, noisy.items) if m.get("tool_calls")]
        originals = [m for m in model_messages(d.channel, d.items) if m.get("tool_calls")]
        assert calls == originals


def test_dev_dialogues_come_from_dev_templates_and_training_entities(tmp_path: Path) -> None:
    """The tuning set is dev-split material (training entities), never held-out, and not
    the training files' own dialogues."""
    build_corpus(tmp_path, train_dialogues=100, heldout_dialogues=20, seed=3, dev_dialogues=50)
    dev = list(read_dialogues(tmp_path / "dev_dialogues.jsonl"))
    assert len(dev) == 50 and all(d.split == "dev" for d in dev)
    store = build_shop()
    held_numbers = {o.number for o in store.orders_in("heldout")}
    text = (tmp_path / "dev_dialogues.jsonl").read_text()
    assert not any(number in text for number in held_numbers)
    train = [d.items for d in dialogues(100, "train", 3, store)]
    # Dialogues with an order in them: an entity-free one ("human please") may recur by chance.
    train_numbers = {o.number for o in store.orders_in("train")}
    with_orders = [d for d in dev if any(n in item.text for item in d.items for n in train_numbers)]
    assert with_orders and not any(d.items in train for d in with_orders)


def test_pasted_messages_keep_the_request_and_its_entities() -> None:
    """A message buried in a paste still holds the request's slots, cut as serving cuts it."""
    rng = random.Random(4)
    cut = 0
    for text in _texts("train", 60):
        long = augment.bury_in_paste(text, rng)
        cut += ELISION in long
        assert len(long) <= max(augment.CUT_TO_CHARS[1], len(text) + augment.PASTE_CHARS[1] + 1)
        before, after = SlotTable(), SlotTable()
        before.delexicalize(text)
        after.delexicalize(long)
        assert set(before.values.values()) <= set(after.values.values()), (text, long)
    assert cut > 0


def test_pastes_are_not_the_evaluation_paste() -> None:
    """The evaluation's long-message case pastes a sentence training never pastes."""
    assert _normal(evaluation._PASTED) not in {_normal(line) for line in augment.PASTE_LINES}


def test_paste_share_buries_some_first_messages(tmp_path: Path) -> None:
    """``paste_share`` 0 leaves the corpus as before; above 0 some first turns get long."""
    store, rng = build_shop(), random.Random(2)
    source = list(dialogues(200, "train", 7, store))
    pasted = [augment.augment_dialogue(d, rng, share=0.0, paste_share=0.2) for d in source]
    longer = [p for p, d in zip(pasted, source, strict=True) if p.items != d.items]
    assert 10 < len(longer) < 80
    assert all(len(p.items) == len(d.items) for p, d in zip(pasted, source, strict=True))


def test_dev_phrasings_are_kept_out_of_training() -> None:
    """A list of eight or more training phrasings gives every eighth to dev, never to
    training; held-out phrasings stay every fifth template whatever dev takes."""
    for phrases in _all_phrases():
        train, dev, held = (set(phrases.of(s)) for s in ("train", "dev", "heldout"))
        assert held == set(phrases.templates[4::5])
        trainable = len(phrases.templates) - len(phrases.templates[4::5]) + len(phrases.extra_train)
        if trainable >= 8:
            assert dev and not dev & train and not dev & held
        else:
            assert dev == train


def test_dev_dialogues_use_dev_phrasings_and_training_entities() -> None:
    """Dev dialogues say things training never says, about training orders only."""
    store = build_shop()
    train_orders = {o.number for o in store.orders_in("train")}
    held_orders = {o.number for o in store.orders_in("heldout")}
    dev = list(dialogues(300, "dev", 7, store))
    seen = set(_texts("train", 3000))
    dev_texts = [i.text for d in dev for i in d.items if i.role == "user"]
    assert sum(t not in seen for t in dev_texts) > 0.5 * len(dev_texts)
    known = train_orders | held_orders
    mentioned = {n for d in dev for t in d.turns for n in t.facts if n in known}
    assert mentioned and mentioned <= train_orders


def test_word_noise_keeps_entities() -> None:
    """Synonyms and dropped filler words never touch an order number or an email."""
    rng = random.Random(3)
    text = "hello@post.example where is my order NX-864878? please check the status"
    for _ in range(200):
        out = augment.drop_word(augment.swap_synonym(text, rng), rng)
        assert "hello@post.example" in out and "NX-864878" in out
    assert augment.swap_synonym("can I speak to a person", random.Random(0)) != (
        "can I speak to a person"
    )
