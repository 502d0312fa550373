"""Regenerate ``fixtures/checker_snapshot.json``: check_answer's outputs before the sympy move.

Run once, before changing the checker:
``.venv/bin/python tests/assistant/make_checker_snapshot.py``.
The snapshot stores (exercise, answer, result) so the comparison test does not depend on the
generator (which itself calls check_answer).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from assistant.tutoring.checker import check_answer
from assistant.tutoring.exercises import KINDS, generate, right_answers, wrong_answers

PER_KIND_AND_SPLIT = 30
EXTRA_ANSWERS = ("", "idk", "banana", "12%", "x = 1", "3 km", "0")
OUT = Path(__file__).with_name("fixtures") / "checker_snapshot.json"


def cases() -> list[tuple[str, str]]:
    rng = random.Random(20261206)
    out: list[tuple[str, str]] = []
    for kind in KINDS:
        for split in ("train", "heldout"):
            for _ in range(PER_KIND_AND_SPLIT):
                ex = generate(kind, rng, split)
                answers = [*right_answers(ex, rng), *wrong_answers(ex, rng), *EXTRA_ANSWERS]
                for exercise in (ex.expression, ex.prompt):
                    out += [(exercise, answer) for answer in answers]
    return list(dict.fromkeys(out))


if __name__ == "__main__":
    rows = [[e, a, check_answer(e, a)] for e, a in cases()]
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(rows, ensure_ascii=False, separators=(",", ":")) + "\n")
