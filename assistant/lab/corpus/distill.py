"""Self-distillation: a training file whose text replies are the model's own causal ones.

Block diffusion commits a position when the model is sure of its token there. The corpus
writes each reply with one of many template wordings, so where wordings fork (mostly a
reply's first words) the model learns several answers and commits few positions per
forward. Replacing written replies by the model's own greedy autoregressive reply gives each
prompt one wording, the one the model already prefers, to learn in both modes: dParallel's
self-distillation, done once over a sample of the corpus. A reply is replaced only when the
model's is a whole reply that keeps what can be checked of the written one (``kept_reply``:
its facts and verdict; the wording is the model's to choose); tool calls are never replaced.

``distill_file`` writes the source file's tool-call examples (all, or ``tool`` of them: the
source's share of tool calls kept, so that the model's behaviour does not drift towards
calling tools) and ``text`` of its text examples, sampled with ``seed``, each text example
with its distilled or written reply.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assistant.agent.toolcall import doubled_word
from assistant.entities.slots import PLACEHOLDER
from assistant.lab.evaluation import says_correct

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerFast


def is_text_example(record: Mapping[str, Any]) -> bool:
    """An example whose reply to learn is text (not a tool call)."""
    last = record["messages"][-1]
    return last["role"] == "assistant" and not last.get("tool_calls") and bool(last["content"])


def _placeholders(text: str) -> set[str]:
    return {match.group(0) for match in PLACEHOLDER.finditer(text)}


def kept_reply(written: str, model: str, *, finished: bool, context: str, tutoring: bool) -> bool:
    """Whether the model's reply may replace the written one: it finished, writes no word
    twice in a row (the served loop redrafts such a reply; it is not one to learn), names every
    placeholder the written one names (the facts) and none the conversation lacks, and a
    tutoring reply gives the written one's verdict. Other wording is the model's to choose:
    that is the point."""
    model = model.strip()
    # A placeholder is a value, not words ("order [ORDER_ID_1]" doubles nothing).
    if not finished or not model or doubled_word(PLACEHOLDER.sub("0", model)):
        return False
    named = _placeholders(model)
    if not _placeholders(written) <= named or not named <= _placeholders(context + written):
        return False
    return not tutoring or says_correct(model, []) == says_correct(written, [])


@dataclass
class DistillStats:
    tool_examples: int = 0
    text_examples: int = 0
    distilled: int = 0
    same_as_written: int = 0


def _sample(
    path: Path, text: int, tool: int | None, seed: int
) -> tuple[list[dict[str, Any]], list[int], set[int]]:
    """All records of ``path``, the indices of ``text`` sampled text examples and those of
    ``tool`` sampled tool-call examples (every one when None)."""
    records = [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()]
    text_indices: list[int] = []
    tool_indices: list[int] = []
    for i, record in enumerate(records):
        (text_indices if is_text_example(record) else tool_indices).append(i)
    if text > len(text_indices):
        raise ValueError(f"{path} has {len(text_indices)} text examples, fewer than {text}")
    if tool is not None and tool > len(tool_indices):
        raise ValueError(f"{path} has {len(tool_indices)} tool-call examples, fewer than {tool}")
    rng = random.Random(seed)
    chosen = sorted(rng.sample(text_indices, text))
    tools = set(tool_indices if tool is None else rng.sample(tool_indices, tool))
    return records, chosen, tools


def _batches(items: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def distill_file(
    model: torch.nn.Module,
    tok: PreTrainedTokenizerFast,
    source: Path,
    out: Path,
    *,
    text: int,
    tool: int | None = None,
    seed: int = 0,
    concurrency: int = 16,
    max_context: int = 512,
) -> DistillStats:
    """Write ``out``: ``tool`` sampled tool-call examples of ``source`` (all when None) and
    ``text`` sampled text examples, their replies the model's autoregressive ones where
    ``kept_reply`` allows."""
    from tqdm import tqdm

    from assistant.agent.decoding import decoding_modes
    from assistant.lab.speed import serve_all
    from dlm_runtime.tokenizer import encode_chat

    records, chosen, tools = _sample(source, text, tool, seed)
    mode = decoding_modes()["autoregressive"]
    stats = DistillStats()
    replies: dict[int, str] = {}
    # A conversation too long to leave a reply room keeps its written reply.
    room = max_context - mode.policy.max_new_tokens
    with tqdm(total=len(chosen), desc="distilling", unit="reply") as progress:
        for batch in _batches(chosen, 256):
            prompts = [encode_chat(tok, records[i]["messages"][:-1]) for i in batch]
            fits = [j for j, ids in enumerate(prompts) if len(ids) <= room]
            run = asyncio.run(
                serve_all(model, tok, mode, [prompts[j] for j in fits], concurrency, concurrency)
            )
            for j, final in zip(fits, run.finals, strict=True):
                index = batch[j]
                messages = records[index]["messages"]
                written = messages[-1]["content"]
                context = json.dumps(messages[:-1], ensure_ascii=False)
                finished = final.finish_reason == "end"
                tutoring = records[index].get("domain") == "tutoring"
                if kept_reply(
                    written, final.text, finished=finished, context=context, tutoring=tutoring
                ):
                    replies[index] = final.text.strip()
            progress.update(len(batch))
    out.parent.mkdir(parents=True, exist_ok=True)
    wanted = set(chosen)
    with out.open("w", encoding="utf-8") as handle:
        for index, record in enumerate(records):
            if is_text_example(record):
                if index not in wanted:
                    continue
                stats.text_examples += 1
                reply = replies.get(index)
                if reply is not None:
                    stats.distilled += 1
                    stats.same_as_written += reply == record["messages"][-1]["content"]
                    last = {**record["messages"][-1], "content": reply}
                    record = {**record, "messages": [*record["messages"][:-1], last]}
            elif index in tools:
                stats.tool_examples += 1
            else:
                continue
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return stats
