"""The natural-phrasing set written by hand (issue 14): well formed, big enough, held out,
and never equal to a template phrasing or a training user message."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest

from assistant.demo.shop import build_shop
from assistant.lab import natural
from assistant.lab.corpus import augment, refusals, simulator, smalltalk, support, tutoring
from assistant.lab.corpus.build import build_corpus
from assistant.lab.corpus.phrases import Phrases
from assistant.lab.evaluation import NATURAL_BAD_INPUT_CASES, natural_bad_input, natural_turns
from assistant.tools.base import validate_arguments
from assistant.tools.registry import TOOLS
from assistant.tools.search_kb import KB_TOPICS
from assistant.tutoring.exercises import split_of

BAD_INTENTS = (
    "refusal_injection",
    "refusal_unsafe",
    "refusal_out_of_scope",
    "refusal_non_english",
    "order_other_customer",
)


def _turn_counts() -> Counter[str]:
    counts: Counter[str] = Counter()
    for dialogue in natural.natural_dialogues():
        counts[dialogue.intent] += len(dialogue.turns)
    return counts


def test_the_set_is_big_enough() -> None:
    counts = _turn_counts()
    assert sum(n for intent, n in counts.items() if intent not in BAD_INTENTS) >= 150
    for intent in BAD_INTENTS:
        assert counts[intent] >= 20, intent
        assert intent in NATURAL_BAD_INPUT_CASES
    texts = [
        d.items[t.index].text
        for d in natural.natural_dialogues()
        for t in d.turns
        if d.intent in BAD_INTENTS
    ]
    assert len(set(texts)) == len(texts)  # distinct phrasings


def test_every_intent_and_tutoring_kind_is_covered() -> None:
    counts = _turn_counts()
    expected = (
        ["order_status", "order_tracking", "order_missing_email", "order_missing_id"]
        + ["order_follow_up", "smalltalk", "thanks"]
        + [f"policy_{topic}" for topic in KB_TOPICS]
        + [f"ticket_{c}" for c in ("damaged", "wrong_item", "missing_item", "billing")]
        + ["handoff_customer_request", "handoff_complaint"]
        + [f"tutoring_{kind}" for kind in tutoring.KINDS]
    )
    for intent in expected:
        assert counts[intent] >= 3, intent


def test_every_expectation_is_well_formed() -> None:
    store = build_shop()
    heldout = {o.number: o for o in store.orders_in("heldout")}
    emails = {o.email for o in heldout.values()}
    train_numbers = {o.number for o in store.orders_in("train")}
    train_emails = {o.email for o in store.orders_in("train")}
    for dialogue in natural.natural_dialogues():
        assert dialogue.turns
        for turn in dialogue.turns:
            item = dialogue.items[turn.index]
            assert item.role == "user" and item.text.strip()
            assert not any(n in item.text for n in train_numbers)
            assert not any(e in item.text for e in train_emails)
            if turn.tool is None:
                assert turn.arguments is None
                continue
            tool = TOOLS[turn.tool]
            assert dialogue.channel in tool.channels
            assert turn.arguments is not None
            assert validate_arguments(tool, turn.arguments) is None, (turn, dialogue.intent)
            if "order_id" in turn.arguments:
                assert turn.arguments["order_id"] in heldout
            if "email" in turn.arguments:
                assert turn.arguments["email"] in emails
                order = heldout[turn.arguments["order_id"]]
                mine = order.email == turn.arguments["email"]
                assert mine == (dialogue.intent != "order_other_customer")
            if turn.tool == "check_answer":
                assert split_of(turn.arguments["exercise"]) == "heldout"
                assert turn.verdict is not None


def test_the_set_loads_as_held_out_dialogue_records(tmp_path: Path) -> None:
    from assistant.lab.corpus.build import read_dialogues

    path = tmp_path / "natural.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in natural.as_records()))
    assert list(read_dialogues(path)) == natural.natural_dialogues()
    assert len(natural_turns()) == sum(_turn_counts().values())


def test_the_bad_input_table_reads_off_the_natural_run() -> None:
    from assistant.lab.evaluation import ModeReport, TurnScore, format_bad_input

    def score(intent: str) -> TurnScore:
        return TurnScore(None, None, None, True, None, 1.0, None, 1, 1, "", {"intent": intent})

    report = ModeReport("ar", 1, [score("policy_returns"), score("order_other_customer")])
    bad = natural_bad_input(report)
    assert [s.detail["intent"] for s in bad.scores] == ["order_other_customer"]
    assert "another customer's order | 1 | 100" in format_bad_input([bad], NATURAL_BAD_INPUT_CASES)


# No overlap with training ---------------------------------------------------------------

_EMAIL = re.compile(r"[\w.+-]+@[\w.-]+\.[a-z]{2,}", re.I)
_ORDER = re.compile(r"\b[a-z]{2}-?\d{6}\b", re.I)
_SLOT = re.compile(r"\[([A-Z_]+?)_\d+\]")


def _normal(text: str) -> str:
    """Casefolded words, with order numbers, emails and placeholders as one token each."""
    text = text.replace("{order}", " orderid ").replace("{email}", " emailaddr ")
    text = _SLOT.sub(lambda m: f" slot{m.group(1).lower()} ", text)
    text = _EMAIL.sub(" emailaddr ", text)
    text = _ORDER.sub(" orderid ", text)
    text = text.replace("slotorder_id", "orderid").replace("slotemail", "emailaddr")
    return " ".join(re.sub(r"[\W_]+", " ", text.lower()).split())


def _phrases(module: object) -> list[Phrases]:
    found: list[Phrases] = []
    for value in vars(module).values():
        if isinstance(value, Phrases):
            found.append(value)
        elif isinstance(value, dict):
            found += [v for v in value.values() if isinstance(v, Phrases)]
    return found


@pytest.fixture(scope="module")
def training_texts(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    out = tmp_path_factory.mktemp("nat-corpus")
    build_corpus(out, train_dialogues=2000, heldout_dialogues=10, dev_dialogues=0)
    texts: set[str] = set()
    with (out / "train.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            for message in json.loads(line)["messages"]:
                if message["role"] == "user":
                    texts.add(_normal(message["content"]))
    return texts


def test_no_user_text_equals_a_template_or_a_training_message(
    training_texts: set[str],
) -> None:
    templates: set[str] = set()
    for module in (support, refusals, tutoring, simulator):
        for phrases in _phrases(module):
            for t in phrases.templates + phrases.extra_train:
                # Training noise swaps two sentences: "my email is {email}. where is order
                # {order}?" once trained on a natural-set message in the other order.
                templates |= {_normal(t), _normal(augment.swap_sentences(t, random.Random(0)))}
    for pairs in smalltalk.all_pairs().values():
        templates |= {_normal(user) for user, _ in pairs}
    assert len(templates) > 300 and len(training_texts) > 500
    answers = [*tutoring.ANSWER.templates, *tutoring.ANSWER.extra_train]
    equal: list[str] = []
    for dialogue in natural.natural_dialogues():
        for turn in dialogue.turns:
            text = dialogue.items[turn.index].text
            norm = _normal(text)
            dressed: set[str] = set()
            if turn.tool == "check_answer" and turn.arguments:
                dressed = {_normal(a.format(answer=turn.arguments["answer"])) for a in answers}
            if norm in templates or norm in training_texts or norm in dressed:
                equal.append(text)
    assert not equal, "\n".join(equal)
