"""Whole-conversation evaluation: scoring rules (pure) and a replay on the bundled model."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from assistant.agent.toolcall import doubled_word
from assistant.checkpoints import model_dir
from assistant.demo.shop import build_shop
from assistant.lab.conversation_eval import (
    ConversationReport,
    ConversationScore,
    end_state_ok,
    format_conversations,
    score_conversation,
)
from assistant.lab.corpus.build import build_corpus, conversations, read_dialogues
from assistant.lab.corpus.dialogue import Dialogue
from assistant.lab.evaluation import (
    TurnScore,
    serving_loops,
    too_short,
    unfinished,
)


def _score(
    tool: str | None = None, called: str | None = None, reply: str = "Fine, thanks."
) -> TurnScore:
    return TurnScore(tool, called, None, True, None, 1.0, 1.0, 4, 4, reply)


def test_reply_shape_checks() -> None:
    assert too_short("Okay!") and too_short("Sure thing") and not too_short("Yes, it shipped.")
    assert unfinished("Order came to") and unfinished("It should arrive by")
    assert not unfinished("It ships today.") and not unfinished('He said "fine."')
    assert not unfinished("Is that all?") and not unfinished("(tracking below.)")


def test_end_state_needs_every_ticket_and_handoff_asked_for() -> None:
    dialogue = Dialogue("heldout", "support", "conversation_problem+handoff", "widget")
    dialogue.user(
        "it broke", tool="create_ticket", arguments={"order_id": "A-1", "category": "damaged"}
    )
    dialogue.user(
        "a person please", tool="handoff_to_human", arguments={"reason": "customer_request"}
    )
    ticket = ("create_ticket", {"order_id": "A-1", "category": "damaged"})
    handoff = ("handoff_to_human", {"reason": "customer_request"})
    assert end_state_ok(dialogue, [ticket, handoff])
    assert not end_state_ok(dialogue, [handoff])
    assert not end_state_ok(
        dialogue, [("create_ticket", {"order_id": "A-1", "category": "billing"}), handoff]
    )


def test_a_conversation_is_right_only_when_every_turn_and_the_end_state_are() -> None:
    good = _score()
    wrong_tool = _score("search_kb", None)
    assert ConversationScore("x", [good, good], [False, False], True).right
    assert not ConversationScore("x", [good, wrong_tool], [False, False], True).right
    assert not ConversationScore("x", [good, good], [False, True], True).right  # a repeat
    assert not ConversationScore("x", [good, good], [False, False], False).right
    report = ConversationReport(
        "fast-diffusion",
        [
            ConversationScore("x", [good, good], [False, False], True),
            ConversationScore("y", [good, _score("handoff_to_human", None)], [False, False], False),
        ],
        wall_s=1.0,
    )
    summary = report.summary()
    assert summary["conversations_right"] == 50.0 and summary["turns_right"] == 75.0
    assert summary["handoff_honoured"] == 0.0
    assert "| fast-diffusion | 75.0 | 50.0 |" in format_conversations([report])


def test_turns_are_replayed_on_the_models_own_history() -> None:
    """Turn two sees what the model said in turn one, not the recorded reply."""
    dialogue = next(d for d in conversations(40, "train", 7, build_shop()) if len(d.turns) >= 2)

    async def run() -> ConversationScore:
        async with serving_loops(model_dir(""), ["fast-diffusion"], 1) as loops:
            return await score_conversation(loops[0][1], dialogue)

    score = asyncio.run(run())
    assert len(score.turns) == len(dialogue.turns)
    second = score.turns[1].detail["history"]
    assert ["assistant", score.turns[0].reply] in second
    recorded = [i.text for i in dialogue.items[: dialogue.turns[1].index] if i.role == "assistant"]
    if recorded[-1] != score.turns[0].reply:
        assert ["assistant", recorded[-1]] not in second


def test_eval_command_scores_conversations(tmp_path: Path) -> None:
    build_corpus(
        tmp_path, train_dialogues=5, heldout_dialogues=5, seed=4, conversation_counts=(0, 3, 0)
    )
    assert len(list(read_dialogues(tmp_path / "heldout_conversations.jsonl"))) == 3
    dump = tmp_path / "fails.jsonl"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "assistant",
            "eval",
            "--conversations",
            str(tmp_path / "heldout_conversations.jsonl"),
            "--modes",
            "autoregressive,fast-diffusion",
            "--limit",
            "3",
            "--dump",
            str(dump),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    assert "3 conversations" in done.stdout
    assert "| autoregressive |" in done.stdout and "| fast-diffusion |" in done.stdout
    for line in dump.read_text().splitlines():
        assert json.loads(line)["turns"]


def test_doubled_words_are_counted_but_not_words_people_double() -> None:
    assert doubled_word("The answer answer is 3.") and doubled_word("Your order Order is here.")
    assert not doubled_word("Bye bye!") and not doubled_word("It is a a-ok.")
    assert not doubled_word("The answer is 3. The answer is right.")
