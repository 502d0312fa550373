"""Building the corpus files: training examples, held-out examples and held-out dialogues.

``assistant corpus build`` writes into one directory:

* ``train.jsonl`` / ``heldout.jsonl``: one training example per assistant turn,
  ``{"messages": [...], "domain", "intent"}`` in the model's view (entities as placeholders),
  the last message being the turn to learn;
* ``heldout_dialogues.jsonl``: held-out conversations with real values and, per user turn,
  what the assistant must do (for ``assistant eval``);
* ``added_words.json``: the placeholders the tokenizer keeps as single tokens;
* ``dev_dialogues.jsonl`` (``dev_dialogues`` > 0): conversations like the held-out ones but
  made from the *training* templates and entities with another seed, for tuning decoding
  settings without looking at the held-out set;
* ``heldout_conversations.jsonl`` / ``dev_conversations.jsonl`` (``conversations`` > 0):
  whole multi-turn conversations from the user simulator (``simulator``), held-out ones for
  ``assistant eval --conversations`` and dev ones (training templates, another seed) for
  choosing a checkpoint. Training conversations go into ``train.jsonl`` beside the rest.

A training example whose conversation is longer than the model's context is cut the way
serving cuts it (``agent.trimming``: whole oldest exchanges dropped) when a tokenizer is
given, so the model learns from the prompts it will be served.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from assistant.agent.prompting import HistoryItem, model_messages
from assistant.agent.trimming import trim_history
from assistant.demo.shop import build_shop
from assistant.entities.slots import PLACEHOLDER, SlotKind, SlotTable
from assistant.lab.corpus import support
from assistant.lab.corpus.augment import augment_dialogue
from assistant.lab.corpus.dialogue import Dialogue
from assistant.lab.corpus.refusals import refusal
from assistant.lab.corpus.smalltalk import smalltalk
from assistant.tools.shop import ShopData

Generator = Callable[[random.Random, ShopData, str], Dialogue]
# Whether a history (with the turn to learn) fits the model's context; None = no limit.
Fits = Callable[[str, list[HistoryItem]], bool] | None
MAX_PLACEHOLDER_INDEX = 8
# Share of training dialogues whose first message comes inside a long paste (0 gives the
# corpus of the checkpoint before, which never saw one).
PASTE_SHARE = 0.05


def generators() -> list[tuple[Generator, int]]:
    """Every dialogue generator with its relative weight in the corpus."""
    from assistant.lab.corpus.tutoring import tutoring

    weighted: list[tuple[Generator, int]] = [(g, w) for g, w in support.GENERATORS]
    weighted += [(tutoring, 45), (smalltalk, 12), (refusal, 15)]
    return weighted


def dialogues(count: int, split: str, seed: int, store: ShopData) -> Iterator[Dialogue]:
    rng = random.Random(f"{seed}-{split}")
    chosen = generators()
    functions = [g for g, _ in chosen]
    weights = [w for _, w in chosen]
    for _ in range(count):
        yield rng.choices(functions, weights)[0](rng, store, split)


def conversations(count: int, split: str, seed: int, store: ShopData) -> Iterator[Dialogue]:
    """Simulated multi-turn conversations, from a generator of their own (adding them never
    changes which single-turn dialogues a seed draws)."""
    from assistant.lab.corpus.simulator import conversation

    rng = random.Random(f"{seed}-{split}-conversations")
    for _ in range(count):
        yield conversation(rng, store, split)


def training_examples(
    dialogue: Dialogue, entity_slots: bool = True, fits: Fits = None
) -> Iterator[dict[str, Any]]:
    """One example per assistant turn: the conversation up to it, it being the last message.

    A turn that uses a placeholder its prompt never introduced is left out: at serving time
    such a placeholder could not be resolved.
    """
    channel = dialogue.channel
    for index, item in enumerate(dialogue.items):
        if item.role not in ("assistant", "tool_call"):
            continue
        history = dialogue.items[: index + 1]
        if fits is not None:
            history, _ = trim_history(history, lambda items: fits(channel, list(items)))
        messages = model_messages(dialogue.channel, history, SlotTable(enabled=entity_slots))
        prompt_text = json.dumps(messages[:-1], ensure_ascii=False)
        target_text = json.dumps(messages[-1], ensure_ascii=False)
        if not set(PLACEHOLDER.findall(target_text)) <= set(PLACEHOLDER.findall(prompt_text)):
            continue
        yield {"messages": messages, "domain": dialogue.domain, "intent": dialogue.intent}


def added_words() -> list[str]:
    return [
        f"[{kind.value}_{index}]"
        for kind in SlotKind
        for index in range(1, MAX_PLACEHOLDER_INDEX + 1)
    ]


def build_corpus(
    out_dir: Path,
    train_dialogues: int = 20000,
    heldout_dialogues: int = 1500,
    seed: int = 11,
    augment: bool = True,
    dev_dialogues: int = 0,
    entity_slots: bool = True,
    paste_share: float = PASTE_SHARE,
    conversation_counts: tuple[int, int, int] = (0, 0, 0),
    fits: Fits = None,
) -> dict[str, Any]:
    """Write the corpus files; ``augment`` adds noise to training user turns only, and
    buries about ``paste_share`` of training dialogues' first message in pasted text;
    ``entity_slots`` False writes real values where placeholders would be.
    ``conversation_counts``: simulated conversations for training, held out and dev."""
    out_dir.mkdir(parents=True, exist_ok=True)
    store = build_shop()
    stats: dict[str, Any] = {}
    # Its own generator: augmenting never shifts what the dialogue generators draw.
    noise = random.Random(f"{seed}-augment")
    for split, count in (("train", train_dialogues), ("heldout", heldout_dialogues)):
        domains: Counter[str] = Counter()
        examples = 0
        with (
            (out_dir / f"{split}.jsonl").open("w", encoding="utf-8") as handle,
            (
                (out_dir / "heldout_dialogues.jsonl").open("w", encoding="utf-8")
                if split == "heldout"
                else _Null()
            ) as raw,
        ):
            for dialogue in dialogues(count, split, seed, store):
                domains[dialogue.domain] += 1
                if augment and split == "train":
                    dialogue = augment_dialogue(dialogue, noise, paste_share=paste_share)
                for example in training_examples(dialogue, entity_slots, fits):
                    handle.write(json.dumps(example, ensure_ascii=False) + "\n")
                    examples += 1
                raw.write(json.dumps(_dialogue_record(dialogue), ensure_ascii=False) + "\n")
            if split == "train":
                for dialogue in conversations(conversation_counts[0], split, seed, store):
                    domains["conversation"] += 1
                    if augment:
                        dialogue = augment_dialogue(dialogue, noise)
                    for example in training_examples(dialogue, entity_slots, fits):
                        handle.write(json.dumps(example, ensure_ascii=False) + "\n")
                        examples += 1
        stats[split] = {"dialogues": count, "examples": examples, "domains": dict(domains)}
    _, heldout_count, dev_count = conversation_counts
    if heldout_count:
        _write_records(
            out_dir / "heldout_conversations.jsonl",
            conversations(heldout_count, "heldout", seed, store),
        )
        stats["heldout conversations"] = {"dialogues": heldout_count, "examples": 0, "domains": {}}
    if dev_count:
        # Dev phrasings (never trained on), training entities, another seed: for choosing a
        # checkpoint on wording it never saw.
        _write_records(
            out_dir / "dev_conversations.jsonl",
            conversations(dev_count, "dev", seed + 100_003, store),
        )
        stats["dev conversations"] = {"dialogues": dev_count, "examples": 0, "domains": {}}
    (out_dir / "added_words.json").write_text(json.dumps(added_words() if entity_slots else []))
    if dev_dialogues:
        examples = write_dev_dialogues(out_dir, dev_dialogues, seed, store, entity_slots, fits)
        stats["dev"] = {"dialogues": dev_dialogues, "examples": examples, "domains": {}}
    return stats


def write_dev_dialogues(
    out_dir: Path,
    count: int,
    seed: int,
    store: ShopData,
    entity_slots: bool = True,
    fits: Fits = None,
) -> int:
    """Dev-split dialogues (phrasings kept out of training, training entities) from a seed
    the training files never use (not augmented): ``dev_dialogues.jsonl`` to score,
    ``dev.jsonl`` (training examples) for the trainer's loss report, so that no run watches a
    held-out loss. Returns the examples written."""
    chosen = list(dialogues(count, "dev", seed + 100_003, store))
    _write_records(out_dir / "dev_dialogues.jsonl", iter(chosen))
    examples = 0
    with (out_dir / "dev.jsonl").open("w", encoding="utf-8") as handle:
        for dialogue in chosen:
            for example in training_examples(dialogue, entity_slots, fits):
                handle.write(json.dumps(example, ensure_ascii=False) + "\n")
                examples += 1
    return examples


def _write_records(path: Path, items: Iterator[Dialogue]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for dialogue in items:
            handle.write(json.dumps(_dialogue_record(dialogue), ensure_ascii=False) + "\n")


def context_fits(model_path: Path, max_tokens: int, entity_slots: bool = True) -> Fits:
    """Whether a history, encoded as the model sees it, takes at most ``max_tokens``."""
    from dlm_runtime.tokenizer import encode_chat, load_tokenizer

    tokenizer = load_tokenizer(model_path)

    def fits(channel: str, history: list[HistoryItem]) -> bool:
        messages = model_messages(channel, history, SlotTable(enabled=entity_slots))
        return len(encode_chat(tokenizer, messages, add_generation_prompt=False)) <= max_tokens

    return fits


def _dialogue_record(dialogue: Dialogue) -> dict[str, Any]:
    record = asdict(dialogue)
    return record


def read_dialogues(path: Path) -> Iterator[Dialogue]:
    from assistant.agent.prompting import HistoryItem
    from assistant.lab.corpus.dialogue import TurnExpectation

    with path.open(encoding="utf-8") as handle:
        for line in handle:
            raw = json.loads(line)
            yield Dialogue(
                split=raw["split"],
                domain=raw["domain"],
                intent=raw["intent"],
                channel=raw["channel"],
                items=[HistoryItem(**item) for item in raw["items"]],
                turns=[TurnExpectation(**turn) for turn in raw["turns"]],
            )


class _Null:
    def write(self, _text: str) -> int:
        return 0

    def __enter__(self) -> _Null:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None
