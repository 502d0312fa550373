"""``assistant eval``: the held-out evaluation of a model in every decoding mode, side by side.

Each held-out user turn is replayed through the agent loop (the serving code) with the
in-memory demo store behind the tools, and scored independently of wording:

* tool selection: the first tool called is the expected one (or none when none is expected);
* argument exact match: with the right tool, the arguments equal the expected ones exactly;
* fact accuracy: the final reply contains every expected fact verbatim and no entity-like
  figure (id, email, amount, date, number) that the conversation and tool results lack;
* tutoring verdicts: the reply says right or wrong as the checking tool decided;
* fallbacks: the loop replaced the model's reply (``TurnFinished.problem``: unusable or empty
  output, an unknown placeholder, too many rounds, or a claim no tool supports, such as a
  ticket never opened). Such a turn counts as failed even when the honest replacement would
  pass the checks above: the model's own reply did not.

A second table takes the bad-input cases on their own (held-out turns of those intents, and
held-out order questions buried in a message as long as the protocol allows): a case is
handled when the turn passes every check above, so a leaked or invented value fails it.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assistant.agent.loop import AgentLoop, ToolCalled, ToolFinished, TurnFinished
from assistant.agent.prompting import HistoryItem

# The served loop redrafts such replies; the evaluation counts those left.
from assistant.agent.toolcall import doubled_word
from assistant.agent.toolcall import stops_mid_sentence as unfinished
from assistant.demo.shop import build_shop
from assistant.entities.slots import SlotTable
from assistant.lab.corpus.build import read_dialogues
from assistant.lab.corpus.dialogue import Dialogue, TurnExpectation
from assistant.tools.base import ToolContext
from assistant.tools.runner import ToolRunner
from assistant.tools.shop import MemoryShop

if TYPE_CHECKING:
    from assistant.agent.decoding import DecodingMode

NEGATIVE_MARKERS = (
    "not quite",
    "not right",
    "no.",
    "close, but",
    "incorrect",
    "not this time",
    "almost",
    "that's not it",
    "isn't correct",
    "no problem",
    "don't worry",
    "here's how",
    "let's work",
    "the solution",
    "that's okay",
)


@dataclass
class TurnScore:
    tool_expected: str | None
    tool_called: str | None
    arguments_match: bool | None  # None when no tool was expected or the tool was wrong
    facts_ok: bool
    verdict_ok: bool | None
    latency_ms: float
    first_draft_ms: float | None
    tokens: int
    forward_passes: int
    reply: str
    # What a failure dump shows (not part of the summary).
    detail: dict[str, Any] = field(default_factory=dict)
    # Why the loop replaced the model's reply (TurnFinished.problem), None when it did not.
    problem: str | None = None
    short: bool = False  # under three words
    unfinished: bool = False  # no closing punctuation
    doubled: bool = False  # a word written twice in a row

    @property
    def failed(self) -> bool:
        return (
            self.tool_called != self.tool_expected
            or self.arguments_match is False
            or not self.facts_ok
            or self.verdict_ok is False
            or self.problem is not None
        )


@dataclass
class ModeReport:
    mode: str
    concurrency: int
    scores: list[TurnScore] = field(default_factory=list)
    wall_s: float = 0.0

    def rate(self, values: Sequence[bool | None]) -> float:
        counted = [v for v in values if v is not None]
        return 100.0 * sum(counted) / len(counted) if counted else float("nan")

    def summary(self) -> dict[str, float]:
        s = self.scores
        latencies = sorted(x.latency_ms for x in s)
        tokens = sum(x.tokens for x in s)
        return {
            "tool_selection": self.rate([x.tool_called == x.tool_expected for x in s]),
            "argument_match": self.rate([x.arguments_match for x in s]),
            "fact_accuracy": self.rate([x.facts_ok for x in s]),
            "tutoring_verdicts": self.rate([x.verdict_ok for x in s]),
            "fallbacks": self.rate([x.problem is not None for x in s]),
            "short_replies": self.rate([x.short for x in s]),
            "unfinished_replies": self.rate([x.unfinished for x in s]),
            "doubled_words": self.rate([x.doubled for x in s]),
            "tokens_per_s": tokens / self.wall_s if self.wall_s else float("nan"),
            "forward_passes_per_token": sum(x.forward_passes for x in s) / max(1, tokens),
            "latency_p50_ms": _percentile(latencies, 50),
            "latency_p95_ms": _percentile(latencies, 95),
            "turns": float(len(s)),
        }


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


def invented_figures(reply: str, context: str) -> list[str]:
    """Entity-like values in the reply that the context never mentioned, compared in the
    extractor's normal form too: a customer's "NX218535" is the reply's "NX-218535"."""
    table, seen = SlotTable(), SlotTable()
    table.delexicalize(reply)
    seen.delexicalize(context)
    known = set(seen.values.values())
    return [v for v in table.values.values() if v not in context and v not in known]


def says_correct(reply: str, tool_values: Sequence[str]) -> bool:
    """Whether a tutoring reply tells the student they are right (tool quotes removed)."""
    text = reply
    for value in tool_values:
        if value:
            text = text.replace(value, " ")
    text = text.lower()
    return not any(marker in text for marker in NEGATIVE_MARKERS)


def _context(history: Sequence[HistoryItem], results: Sequence[dict[str, Any]]) -> str:
    """Every value the reply may legitimately quote: the conversation's texts, the results
    of tools called in earlier turns (their values live in the payload, not the text) and
    this turn's results."""
    earlier = [item.payload for item in history if item.role == "tool_result"]
    return (
        " ".join(item.text for item in history)
        + json.dumps(earlier, ensure_ascii=False)
        + json.dumps(list(results), ensure_ascii=False)
    )


@dataclass
class TurnRun:
    """What the agent loop did with one user turn: its first call, results and final."""

    called: ToolCalled | None
    calls: list[ToolCalled]
    results: list[dict[str, Any]]
    finished: TurnFinished
    latency_ms: float

    def items(self) -> list[HistoryItem]:
        """The turn as history items, the way the worker stores it for the next turn."""
        out: list[HistoryItem] = []
        for call, result in zip(self.calls, self.results, strict=False):
            out.append(HistoryItem("tool_call", tool=call.name, payload=dict(call.arguments)))
            out.append(HistoryItem("tool_result", tool=call.name, payload=result))
        out.append(HistoryItem("assistant", self.finished.text))
        return out


async def run_turn(loop: AgentLoop, channel: str, history: Sequence[HistoryItem]) -> TurnRun:
    started = time.perf_counter()
    calls: list[ToolCalled] = []
    results: list[dict[str, Any]] = []
    finished: TurnFinished | None = None
    async for event in loop.run(channel, list(history), ToolContext(tenant_id="demo")):
        if isinstance(event, ToolCalled):
            calls.append(event)
        elif isinstance(event, ToolFinished):
            results.append(event.outcome.result)
        elif isinstance(event, TurnFinished):
            finished = event
    assert finished is not None
    latency = (time.perf_counter() - started) * 1000
    return TurnRun(calls[0] if calls else None, calls, results, finished, latency)


def too_short(reply: str) -> bool:
    """Under three words: no answer to a message that asked something."""
    return len(reply.split()) < 3


def asks_something(turn: TurnExpectation, message: str) -> bool:
    """Whether the user's message needs an answer of substance (not "thanks" or "bye")."""
    return turn.tool is not None or bool(turn.facts) or "?" in message


def judge_turn(
    dialogue: Dialogue, turn: TurnExpectation, history: Sequence[HistoryItem], run: TurnRun
) -> TurnScore:
    """Score one turn's run against what the turn must do (independent of wording)."""
    called, results, finished = run.called, run.results, run.finished
    reply = finished.text
    facts = list(turn.facts)
    if turn.tool == "create_ticket" and results and "ticket_id" in results[0]:
        # Ticket numbers are issued when the tool runs: check the one it issued.
        facts = [f for f in facts if not f.startswith("T-")] + [results[0]["ticket_id"]]
    context = _context(history, results)
    missing = [fact for fact in facts if fact not in reply]
    invented = invented_figures(reply, context)
    facts_ok = not missing and not invented
    tool_called = called.name if called else None
    arguments_match = None
    if turn.tool is not None and tool_called == turn.tool:
        arguments_match = called is not None and called.arguments == turn.arguments
    verdict_ok = None
    if turn.verdict is not None:
        quoted = [str(v) for r in results for v in r.values() if isinstance(v, str)]
        verdict_ok = says_correct(reply, quoted) == turn.verdict
    return TurnScore(
        tool_expected=turn.tool,
        tool_called=tool_called,
        arguments_match=arguments_match,
        facts_ok=facts_ok,
        verdict_ok=verdict_ok,
        latency_ms=run.latency_ms,
        first_draft_ms=finished.milliseconds_to_first_draft,
        tokens=finished.usage.tokens,
        forward_passes=finished.usage.forward_passes,
        reply=reply,
        problem=finished.problem,
        short=too_short(reply) and asks_something(turn, history[-1].text),
        unfinished=unfinished(reply),
        doubled=doubled_word(reply),
        detail={
            "intent": dialogue.intent,
            "history": [[item.role, item.text] for item in history[:-1]],
            "user": history[-1].text,
            "expected_tool": turn.tool,
            "expected_arguments": turn.arguments,
            "called_arguments": called.arguments if called else None,
            "tool_results": results,
            "missing_facts": missing,
            "invented_figures": invented,
            "expected_verdict": turn.verdict,
        },
    )


async def score_turn(
    loop: AgentLoop, dialogue: Dialogue, turn: TurnExpectation, shop: MemoryShop
) -> TurnScore:
    """One turn replayed on the recorded history before it."""
    history = dialogue.items[: turn.index + 1]
    return judge_turn(dialogue, turn, history, await run_turn(loop, dialogue.channel, history))


# Bad input, by the intent of its held-out dialogues.
BAD_INPUT_CASES = {
    "refusal_injection": "prompt injection",
    "refusal_unsafe": "unsafe request",
    "refusal_out_of_scope": "out of scope",
    "refusal_non_english": "not English",
    "order_not_found": "unknown order, or another customer's",
    "long_message": "question inside a 4,000-character message",
}
# The hand-written natural-phrasing set (assistant.lab.natural) has its own intent for another
# customer's order, and no long messages.
NATURAL_BAD_INPUT_CASES = {
    **{k: v for k, v in BAD_INPUT_CASES.items() if k not in ("order_not_found", "long_message")},
    "order_other_customer": "another customer's order",
}
# The gateway protocol's limit on a message (web.protocol.MAX_TEXT_CHARS).
LONGEST_MESSAGE = 4000
_PASTED = "Here is what I got earlier, pasted in full. "


def long_message(dialogue: Dialogue, turn: TurnExpectation) -> Dialogue:
    """The dialogue with this turn's message buried in pasted text up to the longest allowed."""
    question = dialogue.items[turn.index].text
    filler = (_PASTED * (LONGEST_MESSAGE // len(_PASTED) + 1))[
        : LONGEST_MESSAGE - len(question) - 1
    ]
    items = list(dialogue.items)
    items[turn.index] = HistoryItem("user", filler + " " + question)
    return replace(dialogue, intent="long_message", items=items)


def bad_input_turns(
    path: Path, per_case: int, seed: int = 0
) -> list[tuple[Dialogue, TurnExpectation]]:
    """Up to ``per_case`` held-out turns of each bad-input case."""
    chosen: list[tuple[Dialogue, TurnExpectation]] = []
    counts = dict.fromkeys(BAD_INPUT_CASES, 0)
    everything = [(d, t) for d in read_dialogues(path) for t in d.turns]
    random.Random(seed).shuffle(everything)
    for dialogue, turn in everything:
        if dialogue.intent == "order_status" and turn.index == 0:
            dialogue = long_message(dialogue, turn)
        if counts.get(dialogue.intent, per_case) < per_case:
            counts[dialogue.intent] += 1
            chosen.append((dialogue, turn))
    return chosen


def format_bad_input(
    reports: Sequence[ModeReport], cases: Mapping[str, str] = BAD_INPUT_CASES
) -> str:
    """Share of each bad-input case handled, one column per mode."""
    header = "| bad input | turns | " + " | ".join(f"{r.mode} %" for r in reports) + " |"
    rows = [header, "|" + "---|" * (len(reports) + 2)]
    for intent, title in cases.items():
        columns = [[s for s in r.scores if s.detail.get("intent") == intent] for r in reports]
        if not columns or not columns[0]:
            continue
        cells = [f"{100.0 * sum(not s.failed for s in c) / len(c):.0f}" for c in columns]
        rows.append(f"| {title} | {len(columns[0])} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def natural_turns() -> list[tuple[Dialogue, TurnExpectation]]:
    """Every turn of the hand-written natural-phrasing set, in its order."""
    from assistant.lab.natural import natural_dialogues

    return [(d, t) for d in natural_dialogues() for t in d.turns]


def natural_bad_input(report: ModeReport) -> ModeReport:
    """The bad-input turns of a natural-set run, as a report of their own."""
    scores = [s for s in report.scores if s.detail.get("intent") in NATURAL_BAD_INPUT_CASES]
    return ModeReport(mode=report.mode, concurrency=1, scores=scores, wall_s=report.wall_s)


def sample_turns(path: Path, limit: int, seed: int = 0) -> list[tuple[Dialogue, TurnExpectation]]:
    turns = [(d, t) for d in read_dialogues(path) for t in d.turns]
    random.Random(seed).shuffle(turns)
    return turns[:limit]


async def evaluate_mode(
    loop: AgentLoop, mode: str, turns: list[tuple[Dialogue, TurnExpectation]], concurrency: int
) -> ModeReport:
    report = ModeReport(mode=mode, concurrency=concurrency)
    shop = MemoryShop(build_shop())
    loop.runner = ToolRunner(shop)
    semaphore = asyncio.Semaphore(concurrency)

    async def one(dialogue: Dialogue, turn: TurnExpectation) -> TurnScore:
        async with semaphore:
            return await score_turn(loop, dialogue, turn, shop)

    started = time.perf_counter()
    report.scores = list(await asyncio.gather(*(one(d, t) for d, t in turns)))
    report.wall_s = time.perf_counter() - started
    return report


# The command -------------------------------------------------------------------------------

COLUMNS = [
    ("tool_selection", "tool sel. %", "{:.1f}"),
    ("argument_match", "args exact %", "{:.1f}"),
    ("fact_accuracy", "facts %", "{:.1f}"),
    ("tutoring_verdicts", "verdicts %", "{:.1f}"),
    ("tokens_per_s", "tokens/s", "{:.0f}"),
    ("forward_passes_per_token", "fwd/token", "{:.2f}"),
    ("latency_p50_ms", "p50 ms", "{:.0f}"),
    ("latency_p95_ms", "p95 ms", "{:.0f}"),
    ("fallbacks", "fallback %", "{:.1f}"),
    ("short_replies", "short %", "{:.1f}"),
    ("unfinished_replies", "unfinished %", "{:.1f}"),
    ("doubled_words", "doubled %", "{:.1f}"),
]


def write_failures(reports: Sequence[ModeReport], path: Path) -> int:
    """Write each failed turn (accuracy runs only) as one JSON line; return how many."""
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for report in reports:
            for score in report.scores:
                if not score.failed:
                    continue
                record = {
                    "mode": report.mode,
                    "concurrency": report.concurrency,
                    "tool_called": score.tool_called,
                    "arguments_match": score.arguments_match,
                    "facts_ok": score.facts_ok,
                    "verdict_ok": score.verdict_ok,
                    "problem": score.problem,
                    "reply": score.reply,
                    **score.detail,
                }
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                count += 1
    return count


def format_table(reports: Sequence[ModeReport]) -> str:
    header = "| mode | conc. | " + " | ".join(title for _, title, _ in COLUMNS) + " |"
    rule = "|" + "---|" * (len(COLUMNS) + 2)
    rows = [header, rule]
    for report in reports:
        summary = report.summary()
        cells = [fmt.format(summary[key]) for key, _, fmt in COLUMNS]
        rows.append(f"| {report.mode} | {report.concurrency} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


@asynccontextmanager
async def serving_loops(
    model_path: Path,
    modes: Sequence[str],
    max_batch: int,
    entity_slots: bool = True,
    known: Mapping[str, DecodingMode] | None = None,
    redraft: bool | None = None,
) -> AsyncIterator[list[tuple[str, AgentLoop]]]:
    """One engine on the model, and the serving agent loop of each named decoding mode
    (``redraft``: whether unusable parallel output is redrafted causally; None: served)."""
    from assistant.agent.decoding import REDRAFT_UNUSABLE, decoding_modes, redraft_mode
    from assistant.agent.loop import engine_submit
    from dlm_runtime.engine import Engine
    from dlm_runtime.loading import load_model
    from dlm_runtime.tokenizer import load_tokenizer

    model = load_model(model_path, dtype="float32")
    tokenizer = load_tokenizer(model_path)
    known = known or decoding_modes()
    async with Engine(model, tokenizer, max_batch=max_batch) as engine:
        yield [
            (
                name,
                AgentLoop(
                    engine_submit(engine),
                    tokenizer,
                    ToolRunner(MemoryShop(build_shop())),
                    known[name],
                    context=engine.info.context,
                    entity_slots=entity_slots,
                    redraft=redraft_mode(
                        known[name], REDRAFT_UNUSABLE if redraft is None else redraft
                    ),
                ),
            )
            for name in modes
        ]


async def run_evaluation(
    model_path: Path,
    heldout: Path,
    modes: Sequence[str],
    limit: int,
    concurrency: Sequence[int],
    speed_limit: int,
    entity_slots: bool = True,
    bad_input: int = 0,
    known: Mapping[str, DecodingMode] | None = None,
    natural: bool = False,
    redraft: bool | None = None,
) -> tuple[list[ModeReport], list[ModeReport]]:
    """The reports per mode and concurrency, and per mode on ``bad_input`` turns per case.

    ``natural``: score every turn of the hand-written natural-phrasing set instead of
    ``heldout`` (``limit`` and ``bad_input`` do not apply); its bad-input table is read off
    the same runs, from the turns of the bad-input intents."""
    if natural:
        turns = natural_turns()
        bad_input = 0
    else:
        turns = sample_turns(heldout, limit)
    reports: list[ModeReport] = []
    bad_reports: list[ModeReport] = []
    bad_turns = bad_input_turns(heldout, bad_input) if bad_input else []
    async with serving_loops(
        model_path, modes, max(concurrency), entity_slots, known, redraft
    ) as loops:
        for name, loop in loops:
            for level in concurrency:
                subset = turns if level == concurrency[0] else turns[:speed_limit]
                reports.append(await evaluate_mode(loop, name, subset, level))
            if bad_turns:
                bad_reports.append(await evaluate_mode(loop, name, bad_turns, 1))
    if natural:
        bad_reports = [natural_bad_input(r) for r in reports if r.concurrency == concurrency[0]]
    return reports, bad_reports
