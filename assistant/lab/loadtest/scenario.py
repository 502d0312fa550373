"""What the load generator says and what it checks: scripted conversations and their ledger.

Pure code. A ``Script`` is the list of user messages one simulated client sends (support
questions about real demo orders, or tutoring answers); a ``Ledger`` records every frame one
client received and finds what breaks the protocol's promises (a reply shown twice, a final
missing, sequence numbers going backwards); ``summarise`` turns many clients' timings into
the percentiles the report prints.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from assistant.tools.shop import Order

Kind = Literal["support", "tutoring"]

SUPPORT_OPENERS = (
    "Where is my order {order}? My email is {email}.",
    "Hi, can you check order {order} for {email}?",
    "What's the status of {order}? Email: {email}",
)
SUPPORT_FOLLOW_UPS = (
    "Thanks! How long does shipping usually take?",
    "Can I return an item if it doesn't fit?",
    "Thank you, that's all.",
    "How do refunds work?",
)
TUTORING_ANSWERS = ("7", "12", "3/4", "0.5", "25%", "x = 4", "I don't know")


@dataclass(frozen=True)
class Step:
    """One thing a simulated client does: ask for an exercise, or send a message."""

    text: str = ""  # the user message; empty for an exercise request
    next_exercise: bool = False


@dataclass(frozen=True)
class Script:
    kind: Kind
    steps: tuple[Step, ...]

    @property
    def user_turns(self) -> int:
        return sum(1 for step in self.steps if not step.next_exercise)


def support_script(rng: random.Random, order: Order, turns: int) -> Script:
    opener = rng.choice(SUPPORT_OPENERS).format(order=order.number, email=order.email)
    steps = [Step(text=opener)]
    steps += [Step(text=rng.choice(SUPPORT_FOLLOW_UPS)) for _ in range(turns - 1)]
    return Script("support", tuple(steps))


def tutoring_script(rng: random.Random, turns: int) -> Script:
    steps: list[Step] = []
    for _ in range(turns):
        steps.append(Step(next_exercise=True))
        steps.append(Step(text=rng.choice(TUTORING_ANSWERS)))
    return Script("tutoring", tuple(steps))


def make_scripts(
    count: int, turns: int, orders: Sequence[Order], tutoring_share: float, seed: int
) -> list[Script]:
    """``count`` scripts, a ``tutoring_share`` of them tutoring, the same for the same seed."""
    if not orders:
        raise ValueError("support scripts need at least one demo order")
    rng = random.Random(seed)
    tutoring = round(count * tutoring_share)
    scripts = [tutoring_script(rng, turns) for _ in range(tutoring)]
    scripts += [support_script(rng, rng.choice(orders), turns) for _ in range(count - tutoring)]
    rng.shuffle(scripts)
    return scripts


# what one client saw -------------------------------------------------------------------


@dataclass
class TurnTiming:
    sent_at: float
    first_draft_at: float | None = None
    final_at: float | None = None
    status: str = ""
    usage: dict[str, Any] = field(default_factory=dict)  # the final's steps, tokens, ms...

    @property
    def first_draft_ms(self) -> float | None:
        return None if self.first_draft_at is None else (self.first_draft_at - self.sent_at) * 1e3

    @property
    def final_ms(self) -> float | None:
        return None if self.final_at is None else (self.final_at - self.sent_at) * 1e3


@dataclass
class Ledger:
    """Every event one client received, checked against the exactly-once promise."""

    seqs: list[int] = field(default_factory=list)
    acks: Counter[str] = field(default_factory=Counter)  # client message id -> user_message events
    finals: Counter[str] = field(default_factory=Counter)  # turn id -> final events
    errors: Counter[str] = field(default_factory=Counter)  # error code -> count
    turns: dict[str, TurnTiming] = field(default_factory=dict)  # client message id -> timing
    turn_of: dict[str, str] = field(default_factory=dict)  # turn id -> client message id

    def sent(self, client_id: str, at: float) -> None:
        self.turns[client_id] = TurnTiming(sent_at=at)

    def record(self, frame: Mapping[str, Any], at: float) -> None:
        """Account for one server frame received at monotonic time ``at``."""
        kind = frame.get("type")
        seq = frame.get("seq")
        if isinstance(seq, int):
            self.seqs.append(seq)
        if kind == "user_message":
            client_id = str(frame.get("client_id", ""))
            self.acks[client_id] += 1
            if frame.get("turn_id"):
                self.turn_of[str(frame["turn_id"])] = client_id
        elif kind == "draft":
            timing = self._timing(frame)
            if timing is not None and timing.first_draft_at is None:
                timing.first_draft_at = at
        elif kind == "final":
            turn_id = str(frame.get("turn_id", ""))
            self.finals[turn_id] += 1
            timing = self._timing(frame)
            if timing is not None and timing.final_at is None:
                timing.final_at = at
                timing.status = str(frame.get("status", ""))
                usage = frame.get("usage")
                timing.usage = dict(usage) if isinstance(usage, dict) else {}
        elif kind == "error":
            self.errors[str(frame.get("code", "unknown"))] += 1
            ref = frame.get("ref")
            if isinstance(ref, str) and ref in self.turns and self.turns[ref].final_at is None:
                self.turns[ref].status = f"error:{frame.get('code')}"

    def _timing(self, frame: Mapping[str, Any]) -> TurnTiming | None:
        client_id = self.turn_of.get(str(frame.get("turn_id", "")))
        return None if client_id is None else self.turns.get(client_id)

    def violations(self) -> list[str]:
        """Broken promises: duplicates, reordering, a message or a reply that never came."""
        found: list[str] = []
        for earlier, later in zip(self.seqs, self.seqs[1:], strict=False):
            if later <= earlier:
                found.append(f"seq {later} arrived after {earlier}")
        found += [f"user message {c} acknowledged {n} times" for c, n in self.acks.items() if n > 1]
        found += [f"turn {t} has {n} final replies" for t, n in self.finals.items() if n > 1]
        for client_id, timing in self.turns.items():
            if self.acks[client_id] == 0 and not timing.status.startswith("error"):
                found.append(f"user message {client_id} never acknowledged")
            elif timing.final_at is None and not timing.status.startswith("error"):
                found.append(f"user message {client_id} got no final reply")
        return found


# summary -------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Summary:
    clients: int
    turns: int
    completed: int
    duration_s: float
    first_draft_ms: tuple[float, float, float]  # p50, p95, p99
    final_ms: tuple[float, float, float]
    errors: dict[str, int]
    violations: list[str]
    tokens: int = 0  # reply tokens the model generated, over every completed turn
    forward_passes: int = 0
    generation_s: float = 0.0  # the model's own time on those turns (engine wall time)
    samples: dict[str, list[float]] = field(default_factory=dict)  # per-turn values, for plots

    @property
    def turns_per_s(self) -> float:
        return self.completed / self.duration_s if self.duration_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "clients": self.clients,
            "turns": self.turns,
            "completed": self.completed,
            "duration_s": round(self.duration_s, 2),
            "turns_per_s": round(self.turns_per_s, 2),
            "first_draft_ms": dict(zip(("p50", "p95", "p99"), self.first_draft_ms, strict=True)),
            "final_ms": dict(zip(("p50", "p95", "p99"), self.final_ms, strict=True)),
            "errors": self.errors,
            "violations": self.violations,
            "tokens": self.tokens,
            "forward_passes": self.forward_passes,
            "generation_s": round(self.generation_s, 3),
            "samples": self.samples,
        }


def summarise(ledgers: Iterable[Ledger], duration_s: float) -> Summary:
    ledgers = list(ledgers)
    timings = [timing for ledger in ledgers for timing in ledger.turns.values()]
    drafts = [t.first_draft_ms for t in timings if t.first_draft_ms is not None]
    finals = [t.final_ms for t in timings if t.final_ms is not None]
    errors: Counter[str] = Counter()
    violations: list[str] = []
    for index, ledger in enumerate(ledgers):
        errors.update(ledger.errors)
        violations += [f"client {index}: {v}" for v in ledger.violations()]

    def pcts(values: list[float]) -> tuple[float, float, float]:
        return (percentile(values, 50), percentile(values, 95), percentile(values, 99))

    done = [t for t in timings if t.final_at is not None and t.status == "complete"]

    def used(timing: TurnTiming, name: str) -> float:
        value = timing.usage.get(name, 0)
        return float(value) if isinstance(value, int | float) else 0.0

    speeds = [
        used(t, "tokens") / used(t, "milliseconds") * 1000
        for t in done
        if used(t, "milliseconds") > 0
    ]
    return Summary(
        clients=len(ledgers),
        turns=len(timings),
        completed=sum(1 for t in timings if t.final_at is not None and t.status == "complete"),
        duration_s=duration_s,
        first_draft_ms=pcts(drafts),
        final_ms=pcts(finals),
        errors=dict(errors),
        violations=violations,
        tokens=int(sum(used(t, "tokens") for t in done)),
        forward_passes=int(sum(used(t, "forward_passes") for t in done)),
        generation_s=sum(used(t, "milliseconds") for t in done) / 1000,
        samples={
            "first_draft_ms": [round(v, 1) for v in drafts],
            "final_ms": [round(v, 1) for v in finals],
            "turn_tokens_per_s": [round(v, 1) for v in speeds],
        },
    )


def render(summary: Summary, label: str = "") -> str:
    """The report as aligned text lines."""

    def ms(values: tuple[float, float, float]) -> str:
        return " / ".join("-" if math.isnan(v) else f"{v:.0f}" for v in values)

    errors = ", ".join(f"{code} {n}" for code, n in sorted(summary.errors.items())) or "none"
    lines = [
        f"load test{f' ({label})' if label else ''}: {summary.clients} clients, "
        f"{summary.turns} turns in {summary.duration_s:.1f} s",
        f"  completed turns        {summary.completed} ({summary.turns_per_s:.2f} turns/s)",
        f"  first draft p50/95/99  {ms(summary.first_draft_ms)} ms",
        f"  final       p50/95/99  {ms(summary.final_ms)} ms",
        f"  model                  {summary.tokens} tokens, "
        f"{summary.forward_passes / max(summary.tokens, 1):.2f} forward passes per token",
        f"  errors                 {errors}",
        f"  exactly-once           {'ok' if not summary.violations else 'VIOLATED'}",
    ]
    lines += [f"    {v}" for v in summary.violations[:20]]
    if len(summary.violations) > 20:
        lines.append(f"    ... and {len(summary.violations) - 20} more")
    return "\n".join(lines)
