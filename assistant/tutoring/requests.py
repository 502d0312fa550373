"""What a student's typed message asks of the tutor, where that is not a maths answer.

``asks_for_next_exercise`` says whether a message only asks for a new exercise ("next one",
"another", "give me a harder one", "skip"): the gateway then starts one exactly as the tutor
page's button does, instead of a model turn that would check the words against the current
exercise. The rule is conservative, because a miss only costs a model turn while a false hit
throws the student's answer away:

- the whole message must be such a request (one grammar, matched on all of it, after
  lowercasing and dropping punctuation and emoji), at most ``MAX_WORDS`` words;
- a digit anywhere means an answer may be in it: never a request ("next, x = 5");
- the grammar's nouns are exercises (one, exercise, question, problem, ...), never a step,
  hint, example, way or answer ("next step please", "another hint" are questions about the
  current exercise), and it has no negations ("not another one").

"Harder" and "easier" are read as "another one": the generator has no difficulty levels, so
such a request gets a new exercise of the same kind.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

from assistant.tutoring.checker import classify
from assistant.tutoring.exercises import KINDS

__all__ = ["EXERCISE_PREFIX", "MAX_WORDS", "asks_for_next_exercise", "exercise_kind"]

MAX_WORDS: Final = 10
EXERCISE_PREFIX: Final = "Exercise: "  # as Exercise.system_message writes it
_MAX_CHARS: Final = 120


def _alternatives(*words: str) -> str:
    return "(?:" + "|".join(sorted(words, key=len, reverse=True)) + ")"


_NOUN: Final = _alternatives(
    "one", "ones", "exercise", "exercises", "question", "questions", "problem", "problems",
    "task", "sum", "puzzle", "challenge", "round", "practice problem",
)  # fmt: skip
_ADJECTIVE: Final = _alternatives(
    "harder", "easier", "tougher", "trickier", "simpler", "more difficult", "less difficult",
    "different", "new", "fresh", "other", "random",
)  # fmt: skip
_COMPARATIVE: Final = _alternatives(
    "harder", "easier", "tougher", "trickier", "simpler", "more difficult", "less difficult"
)
_ONE_MORE_NOUN: Final = _alternatives("exercise", "problem", "task", "sum", "puzzle", "round")
_MODIFIED_NOUN: Final = rf"(?:{_ADJECTIVE} )*{_NOUN}"
# The thing asked for: "the next one", "another (harder) question", "a new exercise",
# "one more", "something harder".
_THING: Final = (
    rf"(?:(?:the )?next(?: {_MODIFIED_NOUN})?"
    rf"|another(?: {_MODIFIED_NOUN})?"
    rf"|(?:a |an )?{_ADJECTIVE}(?: {_ADJECTIVE})* {_NOUN}"
    rf"|(?:a |an )?{_COMPARATIVE}(?: {_ADJECTIVE})*"  # "harder please", "a harder"
    rf"|one more(?: {_ONE_MORE_NOUN})?"  # not "one more question": a question may follow
    rf"|(?:something|anything) {_ADJECTIVE})"
)
# What may come before the thing: acknowledgement, then a request.
_ACK: Final = _alternatives(
    "ok", "okay", "k", "kk", "cool", "great", "nice", "good", "got it", "thanks", "thank you",
    "alright", "all right", "yes", "yeah", "yep", "yup", "sure", "done", "right", "fine", "awesome",
    "perfect", "ok so", "okay so", "so", "now", "and", "ok now", "right then", "hmm", "well",
)  # fmt: skip
_ASK: Final = _alternatives(
    "give me", "gimme", "give us", "send me", "show me", "hit me with", "can i have", "can i get",
    "could i have", "could i get", "may i have", "can you give me", "could you give me",
    "can you give", "could you give", "i want", "i wanna", "i'd like", "id like", "i would like",
    "i need", "let's do", "lets do", "let's try", "lets try", "let's have", "let's go to",
    "lets go to", "let's go with", "try", "do", "go to", "go on to", "on to", "onto", "to",
    "i'm ready for", "im ready for", "i am ready for", "ready for", "can we do", "could we do",
    "can we try", "can we have", "can we get", "can we go to", "time for", "how about",
    "what about", "please give me", "pls give me",
)  # fmt: skip
_POLITE: Final = _alternatives("please", "pls", "plz", "thanks", "thank you", "thx", "ty")
_SUFFIX: Final = _alternatives(
    "please", "pls", "plz", "thanks", "thank you", "thx", "ty", "then", "now", "instead",
    "for me", "again", "this time", "too", "as well", "already",
)  # fmt: skip
# Skipping the current exercise, or moving on from it.
_SKIP: Final = (
    r"(?:(?:can i |could i |can we |could we |let me |let's |lets |i want to |i'd like to |"
    r"i wanna )?skip(?: (?:it|this|that|this one|that one|the exercise|this exercise|"
    rf"this question|the question|this problem|the problem|ahead|forward))?"
    rf"(?: (?:and |then )?(?:give me )?{_THING})?"
    r"|(?:can we |could we |let's |lets |i want to |i'd like to )?move on"
    rf"(?: to {_THING})?"
    r"|(?:make it|make the next one) (?:harder|easier|tougher|simpler))"
)
_REQUEST: Final = re.compile(
    rf"(?:{_ACK} )*(?:{_POLITE} )?(?:{_ASK} )?(?:{_THING}|{_SKIP})(?: {_SUFFIX})*"
)
_DROP: Final = re.compile(r"[^\w' ]+|_")  # punctuation, symbols and emoji; keep apostrophes


def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower().replace("\u2019", "'")
    text = _DROP.sub(" ", text)
    text = re.sub(r"(?<!\w)'|'(?!\w)", " ", text)  # quotes, not contractions
    return " ".join(text.split())


def asks_for_next_exercise(text: str) -> bool:
    """Whether ``text`` only asks for a new exercise (see the module's rule); never raises."""
    if not isinstance(text, str) or len(text) > _MAX_CHARS:
        return False
    if any(ch.isnumeric() for ch in text):
        return False
    words = _normalise(text)
    if not words or len(words.split()) > MAX_WORDS:
        return False
    return _REQUEST.fullmatch(words) is not None


def exercise_kind(system_text: str) -> str | None:
    """The kind of the exercise a system message sets, or None if it sets no exercise.

    The kind is read back from the prompt (``checker.classify`` knows every generated form).
    """
    if not system_text.startswith(EXERCISE_PREFIX):
        return None
    kind = classify(system_text[len(EXERCISE_PREFIX) :])
    return kind if kind in KINDS else None
