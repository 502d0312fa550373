"""Small talk from two permissively licensed corpora, cleaned, plus greetings and thanks.

``chitchat-dataset`` (MIT) gives casual two-person openings; ``chatterbot-corpus`` (BSD)
gives short question/answer pairs. Pairs are kept only when both sides are short, free of
entities that the slot extractor would replace, and not rude; conversations are assigned to
a split by a hash of their id (chatterbot: of the question), so the split is stable.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator
from functools import cache
from pathlib import Path

from assistant.entities.slots import SlotTable
from assistant.lab.corpus.dialogue import Dialogue

_BLOCKLIST = re.compile(
    r"\b(fuck|shit|damn|sex|kill|drunk|hate|stupid|idiot|porn|drugs?|weed|beer)\b", re.I
)
_MAX_CHARS = 140


def _split_of(key: str) -> str:
    """Held out: one in five; dev (kept out of training to choose checkpoints): one in 40."""
    bucket = zlib.crc32(key.encode()) % 40
    if bucket % 5 == 4:
        return "heldout"
    return "dev" if bucket == 3 else "train"


def _clean(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text[0].upper() + text[1:] if text else text


def _usable(text: str) -> bool:
    if not text or len(text) > _MAX_CHARS or _BLOCKLIST.search(text):
        return False
    table = SlotTable()
    return table.delexicalize(text) == text and not re.search(r"https?://|@", text)


def chitchat_pairs() -> Iterator[tuple[str, str, str]]:
    """(split, user text, reply text) from the openings of chitchat conversations."""
    import chitchat_dataset  # type: ignore[import-untyped]

    dataset = chitchat_dataset.Dataset()
    for conversation_id in sorted(dataset):
        groups = dataset[conversation_id]["messages"]
        if len(groups) < 2:
            continue
        user = _clean(" ".join(m["text"] for m in groups[0]))
        reply = _clean(" ".join(m["text"] for m in groups[1]))
        if _usable(user) and _usable(reply):
            yield _split_of(conversation_id), user, reply


def chatterbot_pairs() -> Iterator[tuple[str, str, str]]:
    """(split, question, answer) from chatterbot-corpus's English conversation files."""
    import chatterbot_corpus  # type: ignore[import-untyped]

    folder = Path(chatterbot_corpus.__file__).parent / "data" / "english"
    for name in (
        "greetings",
        "conversations",
        "botprofile",
        "emotion",
        "humor",
        "ai",
        "psychology",
        "food",
    ):
        path = folder / f"{name}.yml"
        if not path.is_file():
            continue
        for question, answer in _yaml_pairs(path.read_text(encoding="utf-8")):
            question, answer = _clean(question), _clean(answer)
            if _usable(question) and _usable(answer):
                yield _split_of(question), question, answer


def _yaml_pairs(text: str) -> Iterator[tuple[str, str]]:
    """The first two lines of each ``- - question / - answer`` entry (no YAML dependency)."""
    entry: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("- - "):
            if len(entry) >= 2:
                yield entry[0], entry[1]
            entry = [stripped[4:].strip().strip("'\"")]
        elif stripped.startswith("- ") and entry:
            entry.append(stripped[2:].strip().strip("'\""))
    if len(entry) >= 2:
        yield entry[0], entry[1]


@cache
def all_pairs() -> dict[str, list[tuple[str, str]]]:
    pairs: dict[str, list[tuple[str, str]]] = {"train": [], "dev": [], "heldout": []}
    for source in (chatterbot_pairs(), chitchat_pairs()):
        for split, user, reply in source:
            pairs[split].append((user, reply))
    return pairs


def smalltalk(rng: object, _store: object, split: str) -> Dialogue:
    import random

    assert isinstance(rng, random.Random)
    pairs = all_pairs()[split]
    if split == "train":
        # Learn whole-sentence replies only: a one-word answer to small talk reads as broken.
        pairs = [(u, r) for u, r in pairs if len(r.split()) >= 3 and r.rstrip()[-1:] in ".!?"]
    user, reply = rng.choice(pairs)
    dialogue = Dialogue(split, "smalltalk", "smalltalk", "widget")
    dialogue.user(user)
    dialogue.say(reply)
    return dialogue
