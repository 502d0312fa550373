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

from assistant.agent.prompting import HistoryItem
from assistant.agent.trimming import shorten_text
from assistant.entities.slots import UNIT_WORDS
from assistant.lab.corpus.dialogue import Dialogue
from assistant.lab.corpus.smalltalk import all_pairs

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
    "of to in x y n times usd eur gbp dollar dollars euro euros january february march april may "
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
    return " ".join(_TRAILING_PUNCT.sub("", w) if _is_plain_word(w) else w for w in text.split(" "))


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


# Words and short phrases customers use for one another (train-only noise): a model that saw
# only one of each learnt the template's wording, not the request. Each group's members mean
# the same in every training phrasing they occur in; matched as whole lower-case words.
SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("order", "purchase"),
    ("package", "parcel", "delivery"),
    ("where is", "where's", "wheres", "what happened to"),
    ("speak to", "talk to", "chat with"),
    ("a person", "a human", "someone real", "a real person"),
    ("an agent", "a human agent", "a staff member", "a representative"),
    ("can you", "could you", "would you", "can u"),
    ("i want", "i'd like", "i would like"),
    ("i need", "i want"),
    ("help me", "assist me"),
    ("please", "pls", "plz"),
    ("thanks", "thank you", "thx", "cheers"),
    ("hello", "hi", "hey"),
    ("status", "progress"),
    ("when will", "when's", "when does"),
    ("arrive", "get here", "be delivered"),
    ("broken", "damaged", "smashed"),
    ("wrong", "incorrect"),
    ("how do i", "how can i", "how would i"),
    ("tell me", "let me know"),
    ("what is", "what's"),
    ("it is", "it's"),
    ("do not", "don't"),
    ("i am", "i'm"),
    ("cannot", "can't"),
    ("quick", "fast"),
    ("don't know", "dunno", "have no idea"),
    ("yes", "yeah", "yep"),
)
_SYNONYM_OF: dict[str, tuple[str, ...]] = {
    member: tuple(m for m in group if m != member) for group in SYNONYMS for member in group
}
_SYNONYM_PATTERN = re.compile(
    r"(?<![\w'@./-])("
    + "|".join(sorted(map(re.escape, _SYNONYM_OF), key=len, reverse=True))
    + r")(?![\w'@/-]|\.\w)",
    re.IGNORECASE,
)
# Words a terse customer leaves out without changing what they ask.
DROPPABLE = frozenset(("the", "a", "an", "my", "is", "are", "just", "so", "really", "please"))


def swap_synonym(text: str, rng: random.Random) -> str:
    """One word or phrase replaced by another that means the same (lower case)."""
    found = list(_SYNONYM_PATTERN.finditer(text))
    if not found:
        return text
    match = rng.choice(found)
    replacement = rng.choice(_SYNONYM_OF[match.group(1).lower()])
    return text[: match.start()] + replacement + text[match.end() :]


def drop_word(text: str, rng: random.Random) -> str:
    """One filler word left out ("where is my order" -> "where is order")."""
    words = text.split(" ")
    droppable = [i for i, w in enumerate(words) if w.lower() in DROPPABLE]
    if not droppable or len(words) < 4:
        return text
    del words[rng.choice(droppable)]
    return " ".join(words)


Transform = Callable[[str, random.Random], str]
# Each transform with its probability per augmented message, applied in this order.
TRANSFORMS: tuple[tuple[Transform, float], ...] = (
    (swap_synonym, 0.4),
    (swap_synonym, 0.2),
    (drop_word, 0.2),
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


# What a user pastes around a question (an email, notes, an earlier chat), train-only
# wording: lines repeated, or casual chat lines from the small-talk corpora's training split.
PASTE_LINES = (
    "Copy of the message I sent you before.",
    "Below is everything from my notes, sorry it is long.",
    "This is the text from the chat window yesterday.",
    "I am pasting the whole thing so you have the context.",
    "Forwarded message follows.",
    "--- original message ---",
    "Let me know if you need anything else from this.",
    "Anyway, as I said before, nothing has changed since.",
)
# Lengths in characters: a paste before or after the message, and the cut that serving
# makes to a message too long for the context (assistant.agent.trimming.shorten_text).
PASTE_CHARS = (200, 1600)
CUT_TO_CHARS = (700, 1100)


def _pasted_text(rng: random.Random, length: int) -> str:
    if rng.random() < 0.5:
        lines = [rng.choice(PASTE_LINES)]
    else:
        pairs = all_pairs()["train"]
        lines = [text for pair in rng.sample(pairs, 40) for text in pair]
    out: list[str] = []
    while sum(len(line) + 1 for line in out) < length:
        out.append(lines[len(out) % len(lines)])
    return " ".join(out)[:length].rstrip()


def bury_in_paste(text: str, rng: random.Random) -> str:
    """The message with a long paste before or after it, cut the way serving cuts it.

    Serving cuts a message too long for the context in the middle (``shorten_text``); a
    model that never saw a long or cut message answers none, so training shows both.
    """
    pasted = _pasted_text(rng, rng.randint(*PASTE_CHARS))
    message = f"{pasted} {text}" if rng.random() < 0.7 else f"{text} {pasted}"
    if len(message) > CUT_TO_CHARS[1]:
        message = shorten_text(message, rng.randint(*CUT_TO_CHARS))
    return message


def augment_dialogue(
    dialogue: Dialogue, rng: random.Random, share: float = 0.6, paste_share: float = 0.0
) -> Dialogue:
    """A copy of a training dialogue with about ``share`` of its user turns rewritten and,
    with probability ``paste_share``, its first user turn buried in pasted text."""
    if dialogue.split != "train":
        raise ValueError("only training dialogues are augmented")
    items = [
        HistoryItem("user", augment_text(item.text, rng))
        if item.role == "user" and item.text and rng.random() < share
        else item
        for item in dialogue.items
    ]
    if paste_share and rng.random() < paste_share:
        first = next((i for i, item in enumerate(items) if item.role == "user" and item.text), None)
        if first is not None:
            items[first] = HistoryItem("user", bury_in_paste(items[first].text, rng))
    return Dialogue(
        split=dialogue.split,
        domain=dialogue.domain,
        intent=dialogue.intent,
        channel=dialogue.channel,
        items=items,
        turns=dialogue.turns,
    )
