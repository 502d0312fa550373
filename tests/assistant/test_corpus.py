"""The generated corpus: the held-out split holds, examples are well-formed."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from assistant.demo.shop import build_shop
from assistant.entities.slots import PLACEHOLDER
from assistant.lab.corpus import support
from assistant.lab.corpus.build import build_corpus, dialogues, read_dialogues, training_examples
from assistant.lab.corpus.phrases import Phrases


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("corpus")
    build_corpus(out, train_dialogues=1500, heldout_dialogues=300, seed=3)
    return out


def _user_texts(path: Path) -> set[str]:
    texts = set()
    for line in path.read_text().splitlines():
        for message in json.loads(line)["messages"]:
            if message["role"] == "user":
                texts.add(message["content"])
    return texts


def test_phrase_split_is_by_construction() -> None:
    """Every fifth template is held out and never offered to training."""
    phrases = Phrases([f"t{i}" for i in range(10)])
    assert phrases.of("heldout") == ("t4", "t9")
    assert not set(phrases.of("heldout")) & set(phrases.of("train"))


def test_heldout_entity_values_never_occur_in_training(corpus: Path) -> None:
    """No held-out order number, email or tracking number appears in any training file."""
    store = build_shop()
    train_text = (corpus / "train.jsonl").read_text()
    heldout = store.orders_in("heldout")
    assert heldout
    for order in heldout:
        for value in (order.number, order.email, order.tracking_number):
            assert value is None or value not in train_text
    raw_train = [json.dumps([vars(i) for i in d.items]) for d in dialogues(300, "train", 3, store)]
    for order in heldout[:50]:
        assert not any(order.number in text or order.email in text for text in raw_train)


def test_heldout_support_phrasings_are_unseen(corpus: Path) -> None:
    """Held-out support user messages are not training messages (templates are disjoint)."""
    store = build_shop()
    rng = random.Random(0)
    train_templates = {t for p in (support.ASK_STATUS, support.GREETING) for t in p.of("train")}
    held_templates = {t for p in (support.ASK_STATUS, support.GREETING) for t in p.of("heldout")}
    assert not train_templates & held_templates
    dialogue = support.order_status(rng, store, "heldout")
    assert dialogue.split == "heldout"


def test_examples_end_with_the_assistant_turn_and_use_known_placeholders(corpus: Path) -> None:
    """Each example's target is an assistant message whose placeholders the prompt introduced."""
    for line in (corpus / "train.jsonl").read_text().splitlines()[:2000]:
        messages = json.loads(line)["messages"]
        assert messages[-1]["role"] == "assistant"
        prompt = json.dumps(messages[:-1])
        assert set(PLACEHOLDER.findall(json.dumps(messages[-1]))) <= set(
            PLACEHOLDER.findall(prompt)
        )
        assert not any("@" in m.get("content", "") for m in messages)  # emails are slots


def test_heldout_dialogues_round_trip(corpus: Path) -> None:
    """Held-out dialogues read back with their expectations, and every domain is present."""
    read = list(read_dialogues(corpus / "heldout_dialogues.jsonl"))
    assert len(read) == 300
    assert {d.domain for d in read} == {"support", "tutoring", "smalltalk", "refusal"}
    tool_turns = [t for d in read for t in d.turns if t.tool]
    assert tool_turns and all(t.arguments for t in tool_turns)
    assert any(t.verdict is not None for d in read for t in d.turns)
    assert all(list(training_examples(d)) for d in read[:20] if d.domain == "support")


def test_corpus_without_slots_keeps_real_values() -> None:
    """A corpus for a model that copies entities itself holds values, not placeholders."""
    dialogue = next(d for d in dialogues(40, "train", 5, build_shop()) if d.domain == "support")
    with_slots = list(training_examples(dialogue))
    without = list(training_examples(dialogue, entity_slots=False))
    assert len(without) == len(with_slots)
    assert any(PLACEHOLDER.search(json.dumps(e)) for e in with_slots)
    assert not any(PLACEHOLDER.search(json.dumps(e)) for e in without)


def test_dev_dialogues_come_with_training_examples_for_the_loss_report(tmp_path: Path) -> None:
    """The trainer watches a dev loss (``dev.jsonl``), never a held-out one."""
    stats = build_corpus(tmp_path, train_dialogues=5, heldout_dialogues=5, seed=3, dev_dialogues=6)
    dev = list(read_dialogues(tmp_path / "dev_dialogues.jsonl"))
    examples = [json.loads(line) for line in (tmp_path / "dev.jsonl").read_text().splitlines()]
    assert len(dev) == 6 and {d.split for d in dev} == {"dev"}
    assert stats["dev"]["examples"] == len(examples) >= 6
    assert examples == [e for d in dev for e in training_examples(d)]


def test_every_training_feedback_for_a_wrong_or_missing_answer_quotes_the_same_facts() -> None:
    # Fast diffusion drifts to the shortest template: run 6 to one without the hint, run 7 to
    # one without the explanation. The held-out templates are what they were.
    from assistant.lab.corpus.tutoring import SHOW, WRONG

    for phrases in (WRONG, SHOW):
        for template in phrases.of("train"):
            assert all(f in template for f in ("{expected}", "{explanation}", "{hint}")), template
    assert "Don't worry. The answer is {expected}. {explanation}" in SHOW.of("heldout")
