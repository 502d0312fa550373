"""check_answer's results are unchanged for every generated exercise and answer form.

``fixtures/checker_snapshot.json`` holds the outputs of the hand-written checker (before
evaluation moved onto sympy) for train and held-out exercises of every kind, with their
right and wrong answers and a few odd ones; regenerate it only on purpose, with
``tests/assistant/make_checker_snapshot.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

from assistant.tutoring.checker import check_answer

SNAPSHOT = Path(__file__).with_name("fixtures") / "checker_snapshot.json"


def test_outputs_match_the_snapshot() -> None:
    rows = json.loads(SNAPSHOT.read_text())
    assert len(rows) > 5000
    changed = [(e, a) for e, a, want in rows if check_answer(e, a) != want]
    assert not changed, f"{len(changed)} results changed, e.g. {changed[:5]}"
