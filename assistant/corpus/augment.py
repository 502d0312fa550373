"""Noise on training user turns, so the model learns the task rather than the phrasings.

The bundled model memorised its training templates (held-out loss stopped improving long
before training loss did). Real customers write with and without greetings, in lower case,
without punctuation, with typos and with their sentences in another order; this module
rewrites *training* user messages in those ways. It never touches the entities the
extractor turns into placeholders (ids, emails, numbers, expressions, dates), so the tool
arguments and facts of a turn stay what they were.

It is applied only to the training split (``build_corpus`` does that) and draws from its
own random generator, so the held-out dialogues stay byte-for-byte what the generators
make. None of the fillers below is a held-out template (a test checks).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

from assistant.corpus.dialogue import Dialogue
from assistant.prompting import HistoryItem
from assistant.slots import UNIT_WORDS

# Openers and closers a user adds around a request (train-only wording).
OPENERS = (
    "hi,",
    "hi",
    "hey there,",
    "hello,",
    "hey",
    "hi again,",
    "hello there,",
    "good afternoon,",
    "ok so",
    "quick question:",
    "um,",
    "yo,",
    "hey, quick one:",
    "excuse me,",
    "sorry to bother you,",
)
CLOSERS = (
    "thanks!",
    "thanks",
    "please",
    "pls",
    "thank you",
    "ty",
    "thx!",
    "asap please",
    "thanks in advance",
    "appreciate it",
    ":)",
    "!!",
)
# Words the extractor reads as parts of amounts, expressions and dates: left untouched.
_PROTECTED_WORDS = (
    "of to in x times usd eur gbp dollar dollars euro euros january february march april may "
    "june july august september october november december jan feb mar apr jun jul aug sep "
    "sept oct nov dec"
)
_PROTECTED = frozenset(_PROTECTED_WORDS.split()) | UNIT_WORDS
_TRAILING_PUNCT = re.compile(r"[.,!?;:]+$")
_SENTENCE_BREAK = re.compile(r"(?<=[.?!])\s+")


def _is_plain_word(word: str) -> bool:
    """A word with no entity in it: letters (and apostrophes) only, not a protected word."""
    core = _TRAILING_PUNCT.sub("", word)
    return (
        bool(core)
        and all(ch.isalpha() or ch == "'" for ch in core)
        and core.lower() not in _PROTECTED
    )


def _typo(word: str, rng: random.Random) -> str:
    """One keyboard slip inside a word: swapped, dropped or doubled letter."""
    core = _TRAILING_PUNCT.sub("", word)
    tail = word[len(core) :]
    if len(core) < 4:
        return word
    i = rng.randrange(1, len(core) - 1)
    kind = rng.randrange(3)
    if kind == 0:
        core = core[: i - 1] + core[i] + core[i - 1] + core[i + 1 :]
    elif kind == 1:
        core = core[:i] + core[i + 1 :]
    else:
        core = core[:i] + core[i] + core[i:]
    return core + tail


def add_typos(text: str, rng: random.Random) -> str:
    words = text.split(" ")
    plain = [i for i, w in enumerate(words) if _is_plain_word(w)]
    for i in rng.sample(plain, min(len(plain), rng.choice((1, 1, 2)))):
        words[i] = _typo(words[i], rng)
    return " ".join(words)


def drop_punctuation(text: str, rng: random.Random) -> str:
    """Drop sentence punctuation after plain words (never inside an entity)."""
    del rng
    return " ".join(
        _TRAILING_PUNCT.sub("", w) if _is_plain_word(w) else w for w in text.split(" ")
    )


def lower_case(text: str, rng: random.Random) -> str:
    """Lower-case plain words only: entities keep their form (the extractor normalises)."""
    del rng
    return " ".join(w.lower() if _is_plain_word(w) else w for w in text.split(" "))


def upper_case(text: str, rng: random.Random) -> str:
    """An angry customer's capitals, on plain words only."""
    del rng
    return " ".join(w.upper() if _is_plain_word(w) else w for w in text.split(" "))


def swap_sentences(text: str, rng: random.Random) -> str:
    """Two sentences in the other order ("Where is X? My email is Y." -> "My email ...")."""
    del rng
    parts = _SENTENCE_BREAK.split(text.strip())
    if len(parts) != 2 or not all(p[-1:] in ".?!" for p in parts):
        return text
    return f"{parts[1]} {parts[0]}"


def add_opener(text: str, rng: random.Random) -> str:
    return f"{rng.choice(OPENERS)} {text}"


def add_closer(text: str, rng: random.Random) -> str:
    return f"{text} {rng.choice(CLOSERS)}"


Transform = Callable[[str, random.Random], str]
# Each transform with its probability per augmented message, applied in this order.
TRANSFORMS: tuple[tuple[Transform, float], ...] = (
    (swap_sentences, 0.3),
    (add_opener, 0.3),
    (add_closer, 0.25),
    (drop_punctuation, 0.35),
    (add_typos, 0.3),
    (lower_case, 0.4),
    (upper_case, 0.03),
)


def augment_text(text: str, rng: random.Random) -> str:
    """One noisy rewrite of a user message (the same for the same generator state)."""
    out = text
    for transform, probability in TRANSFORMS:
        if rng.random() < probability:
            out = transform(out, rng)
    return out.strip() or text


def augment_dialogue(dialogue: Dialogue, rng: random.Random, share: float = 0.6) -> Dialogue:
    """A copy of a training dialogue with about ``share`` of its user turns rewritten."""
    if dialogue.split != "train":
        raise ValueError("only training dialogues are augmented")
    items = [
        HistoryItem("user", augment_text(item.text, rng))
        if item.role == "user" and item.text and rng.random() < share
        else item
        for item in dialogue.items
    ]
    return Dialogue(
        split=dialogue.split,
        domain=dialogue.domain,
        intent=dialogue.intent,
        channel=dialogue.channel,
        items=items,
        turns=dialogue.turns,
    )
