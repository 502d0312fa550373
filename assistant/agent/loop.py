"""The agent loop of one turn: prompt -> generate -> (tool call -> tool -> generate)* -> reply.

It knows nothing of Redis or SQL: the worker gives it the stored history, a way to generate
(the diffusion engine) and a tool runner, and relays the events it yields. The evaluation
drives the same loop with an in-memory store.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from assistant.agent.claims import (
    Claim,
    ToolEvidence,
    conversation_evidence,
    honest_reply,
    unsupported_claims,
)
from assistant.agent.decoding import reply_room
from assistant.agent.errors import GenerationFailed, PromptTooLong
from assistant.agent.prompting import (
    HistoryItem,
    model_messages,
    tool_specs,
    with_tool_instructions,
)
from assistant.agent.toolcall import (
    ParseError,
    Reply,
    ToolRequest,
    doubled_word,
    parse_foreign_output,
    parse_output,
    stops_mid_sentence,
)
from assistant.agent.trimming import fit_history
from assistant.entities.slots import Resolved, SlotTable, UnresolvedSlot
from assistant.tools.base import ToolContext
from assistant.tools.registry import tools_for
from assistant.tools.runner import ToolOutcome, ToolRunner
from dlm_runtime.chat_format import chat_format
from dlm_runtime.decoding import DecodingMode
from dlm_runtime.engine import Draft, Engine, Final, GenerationRequest
from dlm_runtime.engine import Usage as EngineUsage
from dlm_runtime.tokenizer import encode_chat

log = structlog.get_logger(__name__)

FALLBACK_REPLY = "Sorry, something went wrong on my side. Could you say that again?"
PROMPT_TOO_LONG = "prompt_too_long"
# How a foreign model's tool call starts (toolcall.parse_foreign_output): no draft shown.
FOREIGN_CALL_STARTS = ("{", "[{", "<tool_call>", "[TOOL_CALLS]", "<|python_tag|>", "```json")

Submit = Callable[[GenerationRequest], AsyncIterator[Draft | Final]]


def engine_submit(engine: Engine) -> Submit:
    """Adapt ``Engine.submit`` (awaited, then iterated) to the loop's one-call form."""

    async def submit(request: GenerationRequest) -> AsyncIterator[Draft | Final]:
        stream = await engine.submit(request)
        async for event in stream:
            yield event

    return submit


@dataclass
class Usage:
    steps: int = 0
    forward_passes: int = 0
    tokens: int = 0
    milliseconds: float = 0.0
    rounds: int = 0

    def add(self, final: Final) -> None:
        self.steps += final.usage.steps
        self.forward_passes += final.usage.forward_passes
        self.tokens += final.usage.tokens
        self.milliseconds += final.usage.milliseconds
        self.rounds += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "forward_passes": self.forward_passes,
            "tokens": self.tokens,
            "milliseconds": round(self.milliseconds, 1),
            "rounds": self.rounds,
        }


@dataclass(frozen=True)
class DraftUpdate:
    """A whole-reply snapshot: masked positions shown as the placeholder character."""

    text: str
    step: int
    round: int
    revised: int  # positions re-masked in this step


@dataclass(frozen=True)
class ToolCalled:
    name: str
    arguments: dict[str, Any]
    round: int


@dataclass(frozen=True)
class ToolFinished:
    outcome: ToolOutcome
    round: int


@dataclass(frozen=True)
class TurnFinished:
    text: str
    status: str  # complete | cancelled | failed
    usage: Usage = field(default_factory=Usage)
    # Why the reply is (partly) a fallback: a parse error code, "unresolved_slot",
    # "too_many_rounds", "empty_output", "prompt_too_long" (even trimmed, the prompt does not
    # fit beside the reply: a context too small for the system prompt), or
    # "unsupported_claim:<kind>" (the model's reply claimed what no tool did and was replaced
    # by an honest one; see agent/claims.py).
    problem: str | None = None
    milliseconds_to_first_draft: float | None = None


AgentEvent = DraftUpdate | ToolCalled | ToolFinished | TurnFinished


class AgentLoop:
    """Runs turns against one engine, tokenizer, tool runner and decoding mode."""

    def __init__(
        self,
        submit: Submit,
        tokenizer: Any,
        runner: ToolRunner,
        decoding: DecodingMode,
        max_rounds: int = 3,
        context: int | None = None,
        entity_slots: bool = True,
        redraft: DecodingMode | None = None,
    ) -> None:
        self.submit = submit
        self.tokenizer = tokenizer
        self.runner = runner
        self.decoding = decoding
        self.max_rounds = max_rounds
        # Positions the model can see (None: unbounded); prompt + reply budget must fit.
        self.context = context
        # Whether the model reads entities as placeholders (see assistant.entities.slots).
        self.entity_slots = entity_slots
        # The native chat format, or a foreign checkpoint's own template and end tokens.
        self.chat = chat_format(tokenizer)
        self.tool_call_open = self.chat.tool_call_open
        # The causal mode of the same weights, asked once to rewrite a round whose parallel
        # output is unusable (malformed tool call, unknown placeholder, nothing left): a
        # diffusion block that garbles a tool name fails the turn, a causal pass rarely does.
        # Native checkpoints only (trained both ways); a foreign one's unusable call is a reply.
        self.redraft = redraft if self.chat.native else None

    async def run(
        self,
        channel: str,
        history: Sequence[HistoryItem],
        context: ToolContext,
        request_id: str | None = None,
        seed: int | None = None,
    ) -> AsyncIterator[AgentEvent]:
        history = list(history)
        # What the turn's tools did, to hold the reply to (earlier turns' calls first).
        evidence = conversation_evidence(channel, history, [])
        usage = Usage()
        started = time.perf_counter()
        first_draft: float | None = None
        request_id = request_id or uuid.uuid4().hex
        for round_ in range(self.max_rounds + 1):
            try:
                prompt, table = self._prompt(channel, history)
            except PromptTooLong as exc:
                # It would not fit on any delivery: the turn ends now, with the fallback.
                log.warning("prompt does not fit the context even trimmed", error=str(exc))
                yield TurnFinished(FALLBACK_REPLY, "failed", usage, PROMPT_TOO_LONG, first_draft)
                return
            attempts = [self.decoding] + ([self.redraft] if self.redraft is not None else [])
            for attempt, decoding in enumerate(attempts):
                request = GenerationRequest(
                    request_id=f"{request_id}:{round_}" + (":redraft" if attempt else ""),
                    prompt_ids=prompt,
                    decoding=decoding,
                    seed=seed,
                )
                final: Final | None = None
                async for item in self._generate(request, table, round_):
                    if isinstance(item, Final):
                        final = item
                        continue
                    if first_draft is None:
                        first_draft = (time.perf_counter() - started) * 1000
                    yield item
                assert final is not None, "the engine ended a request without a Final event"
                if final.finish_reason == "error":
                    # Not a reply: the worker decides whether another delivery could do better.
                    raise GenerationFailed(request.request_id, final.error or "unknown error")
                usage.add(final)
                if final.finish_reason == "cancelled":
                    yield TurnFinished("", "cancelled", usage, None, first_draft)
                    return
                parsed = self._parse(final, channel)
                resolved = table.resolve(parsed.text) if isinstance(parsed, Reply) else None
                # What the reply claims that no tool did: worth a causal redraft, and what
                # _honest replaces if the last attempt still claims it.
                claims = []
                if resolved is not None:
                    claims = unsupported_claims(resolved.text, channel, evidence)
                unusable = _unusable(parsed, table, resolved) or (
                    f"unsupported_claim:{claims[0].kind}" if claims else None
                )
                if unusable is None or attempt + 1 == len(attempts):
                    break
                log.info("unusable output; redrafting causally", problem=unusable, round=round_)
            if isinstance(parsed, ParseError):
                log.warning("unusable model output", code=parsed.code, detail=parsed.message)
                yield TurnFinished(FALLBACK_REPLY, "failed", usage, parsed.code, first_draft)
                return
            if resolved is not None:
                if resolved.unresolved:
                    log.warning("reply named unknown placeholders", slots=resolved.unresolved)
                problem = "unresolved_slot" if resolved.unresolved else None
                if not resolved.text:
                    # Still "complete" (as before: the fallback is a reply), but counted.
                    log.warning("nothing left of the model's reply", problem=problem)
                    problem = problem or "empty_output"
                    yield TurnFinished(FALLBACK_REPLY, "complete", usage, problem, first_draft)
                    return
                text, claimed = self._honest(resolved.text, claims, evidence, request_id)
                yield TurnFinished(text, "complete", usage, claimed or problem, first_draft)
                return
            assert isinstance(parsed, ToolRequest)
            if round_ == self.max_rounds:
                yield TurnFinished(FALLBACK_REPLY, "failed", usage, "too_many_rounds", first_draft)
                return
            try:
                arguments = table.resolve_arguments(parsed.arguments)
            except UnresolvedSlot as exc:
                arguments = parsed.arguments
                outcome = ToolOutcome(parsed.name, arguments, "error", error=str(exc))
            else:
                outcome = None
            yield ToolCalled(parsed.name, arguments, round_)
            if outcome is None:
                outcome = await self.runner.run(context, parsed.name, arguments)
            yield ToolFinished(outcome, round_)
            evidence.append(ToolEvidence(outcome.name, outcome.status, outcome.result))
            history.append(HistoryItem("tool_call", tool=parsed.name, payload=arguments))
            history.append(
                HistoryItem("tool_result", tool=parsed.name, payload=outcome.for_model())
            )

    async def _generate(
        self, request: GenerationRequest, table: SlotTable, round_: int
    ) -> AsyncIterator[DraftUpdate | Final]:
        """The request's drafts (a tool call's are not shown), then its Final."""
        stream = self.submit(request)
        submitted = time.perf_counter()
        final: Final | None = None
        try:
            async for event in stream:
                if isinstance(event, Final):
                    final = event
                    break
                if not self._is_tool_call(event):
                    yield DraftUpdate(
                        text=table.resolve_draft(self._draft_text(event)),
                        step=event.step,
                        round=round_,
                        revised=len(event.revised),
                    )
                final = self._ended(event, submitted, request.decoding)
                if final is not None:
                    break
        finally:
            # Closed now: a reply that ended at its end token frees its engine row at once.
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()
        if final is not None:
            yield final

    def _parse(self, final: Final, channel: str) -> Reply | ToolRequest | ParseError:
        known = {tool.name for tool in tools_for(channel)} or None
        if self.chat.native:
            output = self.tokenizer.decode(final.token_ids, skip_special_tokens=False)
            return parse_output(output, known)
        # Cut at the checkpoint's end token; no usable call is a reply, never an error.
        return parse_foreign_output(self.chat.reply_text(final.token_ids), known)

    @staticmethod
    def _honest(
        text: str, claims: Sequence[Claim], evidence: Sequence[ToolEvidence], request_id: str
    ) -> tuple[str, str | None]:
        """The reply, or an honest one when it makes ``claims`` (what no tool did); and the
        problem."""
        if not claims:
            return text, None
        claim = claims[0]
        log.warning(
            "reply claimed what no tool did; replaced",
            request_id=request_id,
            kind=claim.kind,
            phrase=claim.phrase,
            reason=claim.reason,
            kinds=sorted({c.kind for c in claims}),
        )
        return honest_reply(claim, evidence), f"unsupported_claim:{claim.kind}"

    def _prompt(self, channel: str, history: Sequence[HistoryItem]) -> tuple[list[int], SlotTable]:
        """The prompt's token ids and its slot table, trimmed to leave room for the reply.

        Without trimming, a conversation longer than the context fails every delivery and
        ends dead-lettered; with it, the oldest exchanges are left out of the prompt, then
        what ``fit_history`` reduces next. Raises :class:`PromptTooLong` when even that does
        not fit.
        """

        def encode(items: Sequence[HistoryItem]) -> tuple[list[int], SlotTable]:
            # A fresh table each time: placeholders are numbered by first appearance.
            table = SlotTable(enabled=self.entity_slots)
            messages = model_messages(channel, items, table)
            if self.chat.native:
                return encode_chat(self.tokenizer, messages, add_generation_prompt=True), table
            # A foreign template: tools in its own format, or described in the system message.
            tools = tool_specs(channel)
            if not self.chat.tool_format:
                messages, tools = with_tool_instructions(messages, tools), []
            return self.chat.encode(messages, tools=tools or None), table

        prompt, table = encode(history)
        if self.context is None:
            return prompt, table
        room = reply_room(self.decoding)
        limit = self.context - room
        if len(prompt) <= limit:
            return prompt, table

        def fits(items: Sequence[HistoryItem]) -> bool:
            return len(encode(items)[0]) <= limit

        # A single message longer than the context (the protocol allows 4,000 characters)
        # is cut in the middle rather than failing the turn.
        fitted = fit_history(history, fits)
        prompt, table = encode(fitted.items)
        if len(prompt) > limit:
            raise PromptTooLong(len(prompt), limit, room)
        log.info(
            "history trimmed to fit the context",
            dropped_items=fitted.dropped_items,
            cut_chars=fitted.cut_chars,
            dropped_rounds=fitted.dropped_rounds,
            payload_chars=fitted.payload_chars,
            system_chars=fitted.system_chars,
            prompt_tokens=len(prompt),
            limit=limit,
        )
        return prompt, table

    def _is_tool_call(self, draft: Draft) -> bool:
        """A reply that opens with a tool call is not shown as a draft."""
        if self.chat.native:
            return bool(draft.token_ids) and draft.token_ids[0] == self.tool_call_open
        return self._draft_text(draft).lstrip().startswith(FOREIGN_CALL_STARTS)

    def _ended(self, draft: Draft, started: float, decoding: DecodingMode) -> Final | None:
        """A foreign reply settled up to one of its end tokens, as the request's Final.

        The engine stops only at the config's ``eos_token_id``; an instruct model ends its
        turn with its own end token (LLaDA's ``<|eot_id|>``), after which nothing is shown
        or stored. Once every position before such a token is committed, and the policy
        cannot re-mask it, the reply is done and the request is closed. Usage counts the
        steps so far (one forward each).
        """
        if self.chat.native or decoding.policy.revision is not None:
            return None
        for index, token in enumerate(draft.token_ids):
            if index >= len(draft.spans) or draft.spans[index].masked:
                return None
            if token in self.chat.end_ids:
                ids = draft.token_ids[:index]
                text = draft.text[: draft.spans[index].start]
                elapsed = (time.perf_counter() - started) * 1000
                usage = EngineUsage(draft.step, draft.step, len(ids), elapsed)
                return Final(draft.request_id, ids, text, "end", usage)
        return None

    def _draft_text(self, draft: Draft) -> str:
        """The draft's text; a foreign model's cut at its first end token."""
        if self.chat.native:
            return draft.text
        for index, token in enumerate(draft.token_ids):
            if token in self.chat.end_ids and index < len(draft.spans):
                return draft.text[: draft.spans[index].start]
        return draft.text


def _unusable(
    parsed: Reply | ToolRequest | ParseError, table: SlotTable, resolved: Resolved | None
) -> str | None:
    """Why an output cannot be used as it is (the problem code the turn would report), or
    None: a parse error, a reply (``resolved``: its text with real values) naming
    placeholders the prompt never had, with nothing left, stopping mid-sentence or writing a
    word twice in a row ("the the number"), a tool call whose arguments name such
    placeholders."""
    if isinstance(parsed, ParseError):
        return parsed.code
    if resolved is not None:
        if resolved.unresolved:
            return "unresolved_slot"
        if not resolved.text:
            return "empty_output"
        if stops_mid_sentence(resolved.text):
            return "unfinished_reply"
        return "doubled_word" if doubled_word(resolved.text) else None
    assert isinstance(parsed, ToolRequest)
    try:
        table.resolve_arguments(parsed.arguments)
    except UnresolvedSlot:
        return "unresolved_slot"
    return None
