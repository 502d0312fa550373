"""Whole-conversation evaluation: each simulated conversation replayed on the model's own turns.

``assistant eval`` (``evaluation``) replays each held-out turn on the *recorded* history, so a
model that answered turn two wrongly still sees the right turn two when turn three is scored.
Here the customer's messages are replayed in order and the history is what the model itself
did: its tool calls, the tools' real results and its replies, as a worker stores them. A turn
is right when it passes every per-turn check of ``evaluation.judge_turn`` and does not repeat
an earlier reply of the conversation to a question that needs a new answer; a conversation is
right when every turn is right and its end state is: each ticket the customer asked for was
opened with its category and order, and a hand-off asked for was done (in the spirit of
tau-bench's conversation-level success).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assistant.agent.loop import AgentLoop
from assistant.agent.prompting import HistoryItem
from assistant.demo.shop import build_shop
from assistant.lab.corpus.build import read_dialogues
from assistant.lab.corpus.dialogue import Dialogue
from assistant.lab.evaluation import TurnScore, judge_turn, run_turn, serving_loops
from assistant.tools.runner import ToolRunner
from assistant.tools.shop import MemoryShop

if TYPE_CHECKING:
    from assistant.agent.decoding import DecodingMode

# Tools whose call changes the world: the end state of a conversation is made of them.
SIDE_EFFECTS = ("create_ticket", "handoff_to_human")


@dataclass
class ConversationScore:
    intent: str
    turns: list[TurnScore]
    repeated: list[bool]  # per turn: the reply repeats an earlier one to a new question
    end_state_ok: bool

    def turn_right(self, index: int) -> bool:
        return not self.turns[index].failed and not self.repeated[index]

    @property
    def right(self) -> bool:
        return self.end_state_ok and all(self.turn_right(i) for i in range(len(self.turns)))


@dataclass
class ConversationReport:
    mode: str
    conversations: list[ConversationScore] = field(default_factory=list)
    wall_s: float = 0.0

    def summary(self) -> dict[str, float]:
        convs = self.conversations
        turns = [(c, i) for c in convs for i in range(len(c.turns))]
        scores = [c.turns[i] for c, i in turns]
        handoffs = [s for s in scores if s.tool_expected == "handoff_to_human"]
        tokens = sum(s.tokens for s in scores)

        def pct(values: Sequence[bool]) -> float:
            return 100.0 * sum(values) / len(values) if values else float("nan")

        return {
            "conversations": float(len(convs)),
            "turns": float(len(turns)),
            "turns_right": pct([c.turn_right(i) for c, i in turns]),
            "conversations_right": pct([c.right for c in convs]),
            "end_state": pct([c.end_state_ok for c in convs]),
            "handoff_honoured": pct([s.tool_called == "handoff_to_human" for s in handoffs]),
            "tool_selection": pct([s.tool_called == s.tool_expected for s in scores]),
            "fact_accuracy": pct([s.facts_ok for s in scores]),
            "repeated": pct([r for c in convs for r in c.repeated]),
            "short_replies": pct([s.short for s in scores]),
            "unfinished_replies": pct([s.unfinished for s in scores]),
            "doubled_words": pct([s.doubled for s in scores]),
            "tokens_per_s": tokens / self.wall_s if self.wall_s else float("nan"),
            "forward_passes_per_token": sum(s.forward_passes for s in scores) / max(1, tokens),
        }


def end_state_ok(dialogue: Dialogue, made: Sequence[tuple[str, dict[str, Any]]]) -> bool:
    """Every side effect the customer asked for happened, with the expected arguments."""
    wanted = [(t.tool, t.arguments or {}) for t in dialogue.turns if t.tool in SIDE_EFFECTS]
    return all(call in made for call in wanted)


async def score_conversation(loop: AgentLoop, dialogue: Dialogue) -> ConversationScore:
    history: list[HistoryItem] = []
    scores: list[TurnScore] = []
    repeated: list[bool] = []
    made: list[tuple[str, dict[str, Any]]] = []
    replies: list[str] = []
    for turn in dialogue.turns:
        # Anything recorded before this user message that is not the assistant's (a system
        # note) is kept; the assistant's side is what the model itself did.
        history.append(dialogue.items[turn.index])
        run = await run_turn(loop, dialogue.channel, history)
        score = judge_turn(dialogue, turn, history, run)
        new_question = turn.tool is not None or bool(turn.facts)
        repeated.append(new_question and run.finished.text in replies)
        replies.append(run.finished.text)
        made += [(call.name, dict(call.arguments)) for call in run.calls]
        scores.append(score)
        history += run.items()
    return ConversationScore(
        intent=dialogue.intent,
        turns=scores,
        repeated=repeated,
        end_state_ok=end_state_ok(dialogue, made),
    )


async def evaluate_conversations(
    loop: AgentLoop, mode: str, conversations: Sequence[Dialogue], concurrency: int
) -> ConversationReport:
    report = ConversationReport(mode=mode)
    loop.runner = ToolRunner(MemoryShop(build_shop()))
    semaphore = asyncio.Semaphore(concurrency)

    async def one(dialogue: Dialogue) -> ConversationScore:
        async with semaphore:
            return await score_conversation(loop, dialogue)

    started = time.perf_counter()
    report.conversations = list(await asyncio.gather(*(one(d) for d in conversations)))
    report.wall_s = time.perf_counter() - started
    return report


async def run_conversation_evaluation(
    model_path: Path,
    path: Path,
    modes: Sequence[str],
    limit: int,
    concurrency: int = 1,
    entity_slots: bool = True,
    known: Mapping[str, DecodingMode] | None = None,
    redraft: bool | None = None,
) -> list[ConversationReport]:
    """The first ``limit`` conversations of ``path``, replayed in each decoding mode."""
    conversations = list(read_dialogues(path))[:limit]
    reports: list[ConversationReport] = []
    async with serving_loops(model_path, modes, concurrency, entity_slots, known, redraft) as loops:
        for name, loop in loops:
            reports.append(await evaluate_conversations(loop, name, conversations, concurrency))
    return reports


def write_conversation_failures(reports: Sequence[ConversationReport], path: Path) -> int:
    """Each conversation that was not right, turn by turn, as one JSON line."""
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for report in reports:
            for conversation in report.conversations:
                if conversation.right:
                    continue
                record = {
                    "mode": report.mode,
                    "intent": conversation.intent,
                    "end_state_ok": conversation.end_state_ok,
                    "turns": [
                        {
                            "right": conversation.turn_right(i),
                            "repeated": conversation.repeated[i],
                            "user": score.detail["user"],
                            "reply": score.reply,
                            "expected_tool": score.tool_expected,
                            "tool_called": score.tool_called,
                            "expected_arguments": score.detail["expected_arguments"],
                            "called_arguments": score.detail["called_arguments"],
                            "missing_facts": score.detail["missing_facts"],
                            "invented_figures": score.detail["invented_figures"],
                            "problem": score.problem,
                        }
                        for i, score in enumerate(conversation.turns)
                    ],
                }
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                count += 1
    return count


COLUMNS = [
    ("turns_right", "turns right %", "{:.1f}"),
    ("conversations_right", "conversations right %", "{:.1f}"),
    ("end_state", "end state %", "{:.1f}"),
    ("handoff_honoured", "handoff %", "{:.1f}"),
    ("tool_selection", "tool sel. %", "{:.1f}"),
    ("fact_accuracy", "facts %", "{:.1f}"),
    ("repeated", "repeated %", "{:.1f}"),
    ("short_replies", "short %", "{:.1f}"),
    ("unfinished_replies", "unfinished %", "{:.1f}"),
    ("doubled_words", "doubled %", "{:.1f}"),
    ("tokens_per_s", "tokens/s", "{:.0f}"),
    ("forward_passes_per_token", "fwd/token", "{:.2f}"),
]


def format_conversations(reports: Sequence[ConversationReport]) -> str:
    first = reports[0].summary() if reports else {}
    header = (
        f"{first.get('conversations', 0):.0f} conversations, {first.get('turns', 0):.0f} turns\n"
        "| mode | " + " | ".join(title for _, title, _ in COLUMNS) + " |"
    )
    rows = [header, "|" + "---|" * (len(COLUMNS) + 1)]
    for report in reports:
        summary = report.summary()
        cells = [fmt.format(summary[key]) for key, _, fmt in COLUMNS]
        rows.append(f"| {report.mode} | " + " | ".join(cells) + " |")
    return "\n".join(rows)
