"""What a reply claims that nothing in its turn supports (pure: no I/O, no model).

A reply may only announce what a tool really did. :func:`unsupported_claims` reads the final
reply and the evidence of the conversation's tool calls and returns the claims no successful
call backs:

* ``ticket``: a ticket announced ("I've opened ticket ...", "Ticket ... is open") without a
  successful ``create_ticket`` in this turn; a ticket spoken of ("your ticket number is",
  "support ticket") without one in the conversation; a ticket number (``T-12345``) that no
  successful ``create_ticket`` of the conversation issued; a ticket announced as just opened
  under an earlier turn's number while this turn's ``create_ticket`` issued another;
* ``handoff``: a person announced ("connecting you with", "a human agent will take over",
  "I've asked a human agent to join") without a successful ``handoff_to_human`` in this turn;
* ``order``: order facts (a status such as "has shipped", "in transit", "was delivered"; a
  tracking number; a delivery date; an order total) without a successful ``lookup_order``
  that found the order, in this turn or earlier in the conversation (a follow-up such as
  "how much did I pay?" is answered from the earlier lookup); or, when this turn's lookup
  found an order, facts naming only other order numbers (a corrected number ignored);
* ``verdict``: a tutoring verdict ("Correct!", "that's right", "well done" / "not quite",
  "incorrect") that disagrees with the check of the student's answer (the turn's first
  ``check_answer``), or any verdict when the checker could not judge (tool error or timeout,
  an exercise it could not read, no check);
* ``answer``: an answer given ("the answer is 42") whose numbers are not those of the
  checker's expected answer (only looked for where the reply's verdict is not a claim);
* ``article``: a reply to a turn whose last successful call found a help article
  (``search_kb``) that does not quote it: what it says of the store's policies is then
  another article's words or the model's own, not what the tool returned.

Choices:

* The reply is read with **real values**, as the user reads it (after the loop resolved its
  placeholders): ticket numbers are compared with the ones the tool issued, and a model
  served with entity slots off writes real values anyway.
* The phrase lists come from the corpus's reply templates (``assistant.lab.corpus``) plus
  close variants, and are kept narrow: offers ("I can open a ticket") and negations ("I
  couldn't open a ticket") are not claims, and the text a tool returned (a help article, the
  checker's explanation and hint) is removed before looking, so quoting it claims nothing.
  Every reply template the corpus writes after a successful call passes (tested).
* Evidence from earlier turns comes from the history's ``tool_result`` items, which hold what
  the model was shown (``ToolOutcome.for_model``): an error there is ``{"error": "tool_error"
  | "timeout", ...}``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from assistant.agent.prompting import HistoryItem, current_exercise
from assistant.entities.slots import SlotKind, SlotTable

__all__ = [
    "KINDS",
    "Claim",
    "ToolEvidence",
    "conversation_evidence",
    "evidence_from_history",
    "honest_reply",
    "order_status_reply",
    "unsupported_claims",
]

# In the order a turn's problem names them when a reply makes several.
KINDS: Final = ("verdict", "answer", "ticket", "handoff", "order", "article")


@dataclass(frozen=True)
class ToolEvidence:
    """One tool call of the conversation: its tool, how it ended and what it returned."""

    name: str
    status: str  # ok | error | timeout
    result: Mapping[str, Any] = field(default_factory=dict)
    # True for a call of the turn being answered, False for one of an earlier turn.
    this_turn: bool = True


@dataclass(frozen=True)
class Claim:
    kind: str  # one of KINDS
    phrase: str  # the words of the reply that make the claim
    reason: str  # why nothing supports it


def evidence_from_history(history: Sequence[HistoryItem]) -> list[ToolEvidence]:
    """The tool results an earlier turn left in the stored history, oldest first."""
    evidence = []
    for item in history:
        if item.role != "tool_result":
            continue
        error = item.payload.get("error")
        status = "timeout" if error == "timeout" else "error" if error == "tool_error" else "ok"
        evidence.append(ToolEvidence(item.tool or "", status, item.payload, this_turn=False))
    return evidence


# --- finding phrases ------------------------------------------------------------------------

_FLAGS: Final = re.IGNORECASE
# Words before a phrase (in its clause) that make it no claim: a negation or an offer.
_NOT_ASSERTED: Final = re.compile(
    # Not a word of an id such as NO-123456.
    r"(?<!-)\b(?:not|never|no|unable|cannot|can|could|would|shall|may|might|if|whether|want|"
    r"need|please|let me|try|trying)\b(?!-)|n't\b",
    _FLAGS,
)
_CLAUSE_END: Final = re.compile(r"[.!?;:,\n]|\s[-\u2013\u2014]\s")
_SENTENCE_END: Final = re.compile(r"[.!?\n]")


def _clause_before(text: str, start: int) -> str:
    ends = [m.end() for m in _CLAUSE_END.finditer(text, 0, start)]
    return text[ends[-1] if ends else 0 : start]


def _asserted(text: str, match: re.Match[str]) -> bool:
    """Whether the phrase is stated: not negated, offered or asked about."""
    if _NOT_ASSERTED.search(_clause_before(text, match.start())) is not None:
        return False
    end = _SENTENCE_END.search(text, match.end())
    return end is None or end.group(0) != "?"


def _first_asserted(
    text: str,
    patterns: Iterable[re.Pattern[str]],
    unless: Callable[[str, re.Match[str]], bool] | None = None,
) -> str | None:
    """The first phrase that ``patterns`` find stated in ``text`` (``_asserted``, and not
    ``unless(text, match)``)."""
    for pattern in patterns:
        for match in pattern.finditer(text):
            if _asserted(text, match) and (unless is None or not unless(text, match)):
                return match.group(0)
    return None


def _compile(*patterns: str) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(pattern, _FLAGS) for pattern in patterns)


def _ok(evidence: Sequence[ToolEvidence], name: str, this_turn_only: bool) -> list[ToolEvidence]:
    return [
        e
        for e in evidence
        if e.name == name and e.status == "ok" and (e.this_turn or not this_turn_only)
    ]


def _without(text: str, values: Iterable[str]) -> str:
    """The text with every quoted tool value blanked out (longest first)."""
    for value in sorted(set(values), key=len, reverse=True):
        if len(value) >= 4:
            text = text.replace(value, " \u2026 ")
    return text


def _strings(evidence: Iterable[ToolEvidence], names: Iterable[str]) -> list[str]:
    wanted = set(names)
    out: list[str] = []
    for e in evidence:
        if e.name in wanted:
            out += [v for v in e.result.values() if isinstance(v, str)]
    return out


# --- tickets --------------------------------------------------------------------------------

_TICKET_ID: Final = re.compile(r"\bT-\d{3,}\b")
_TICKET_ANNOUNCED: Final = _compile(
    r"\b(?:i'?ve|i have|i|we'?ve|we have|we)\s+(?:just\s+|now\s+)?(?:opened|created|logged|"
    r"raised|filed|submitted|registered|started)\b[^.!?]{0,40}?\btickets?\b",
    r"\btickets?\b[^.!?]{0,40}?\b(?:is|has been|was|are|have been)\s+(?:now\s+)?(?:open|opened|"
    r"created|logged|raised|filed|submitted|registered)\b",
    r"\blogged\s+(?:this|it|that|your \w+)\s+as\s+(?:a\s+)?(?:support\s+)?ticket\b",
)
# A ticket spoken of: an earlier turn's ticket supports it too.
_TICKET_MENTIONED: Final = _compile(
    r"\b(?:your|the)\s+(?:support\s+)?ticket\s+(?:number|id|reference)\b",
    r"\bsupport ticket\b",
)


def _ticket_claims(text: str, evidence: Sequence[ToolEvidence]) -> list[Claim]:
    claims = []
    this_turn = _ok(evidence, "create_ticket", this_turn_only=True)
    issued = {str(e.result.get("ticket_id")) for e in _ok(evidence, "create_ticket", False)}
    announced = _first_asserted(text, _TICKET_ANNOUNCED)
    if announced is not None and not this_turn:
        claims.append(Claim("ticket", announced, "no ticket was opened in this turn"))
    phrase = _first_asserted(text, _TICKET_MENTIONED)
    if phrase is not None and not issued and not claims:
        claims.append(Claim("ticket", phrase, "no ticket was opened in this conversation"))
    for match in _TICKET_ID.finditer(text if not claims else ""):
        if match.group(0) not in issued:
            claims.append(Claim("ticket", match.group(0), "no ticket with this number was opened"))
            break
    if not claims and announced is not None and this_turn:
        # "I've logged this as ticket T-1" when this turn opened T-3: an earlier ticket's
        # number copied from the conversation, announced as the new one.
        fresh = {str(e.result.get("ticket_id")) for e in this_turn}
        named = _TICKET_ID.findall(text)
        if named and not fresh & set(named):
            claims.append(
                Claim("ticket", named[0], "this turn opened a ticket with another number")
            )
    return claims


# --- handoffs -------------------------------------------------------------------------------

_PERSON: Final = (
    r"(?:human|person|colleague|operator|representative|agent|staff member|team member|"
    r"member of (?:our|the) (?:support )?team|someone from (?:our|the) (?:support )?team)"
)
_HANDOFF_ANNOUNCED: Final = _compile(
    r"\bconnect(?:ing|ed)?\s+you\s+(?:now\s+)?(?:with|to)\b",
    r"\b(?:hand(?:ing|ed)?|pass(?:ing|ed)?|transferr?(?:ing|ed)?|put(?:ting)?|escalat(?:ing|ed))"
    r"\s+(?:you|this|it|this conversation|the conversation|this chat|your (?:chat|request))"
    r"\s+(?:over\s+|through\s+|on\s+)?to\b",
    r"\bhand(?:ing|ed)?\s+you\s+over\b",
    r"\b(?:asked|requested|called|notified|alerted)\s+(?:a|an|our|one of our)\s+(?:human|live|"
    r"real)?\s*" + _PERSON,
    _PERSON + r"s?\b[^.!?]{0,40}?\b(?:will|'ll|is going to|are going to)\s+(?:now\s+)?"
    r"(?:join|take over|be with you|reply here|respond here|pick (?:this|it) up|"
    r"continue (?:this|the) (?:conversation|chat))",
    r"\b(?:they|someone)\s*(?:will|'ll)\s+(?:be with you|join (?:you|this|the chat)|"
    r"reply here|respond here|take over)",
)


# A sentence that says what the assistant can do ("I can look up orders, ... or hand you over
# to a human agent"), or offers it ("... connect you with a person if you like"), announces no
# hand-off, however far the phrase stands from the "can" (a comma ends _clause_before's clause).
_CAN_SENTENCE: Final = re.compile(r"\s*(?:i|we)\s+(?:can|could)\b", _FLAGS)
_CONDITION_AFTER: Final = re.compile(r"\bif\s+(?:you|needed|necessary)\b", _FLAGS)


def _offered(text: str, match: re.Match[str]) -> bool:
    starts = [m.end() for m in _SENTENCE_END.finditer(text, 0, match.start())]
    sentence_start = starts[-1] if starts else 0
    end = _SENTENCE_END.search(text, match.end())
    after = text[match.end() : end.start() if end else len(text)]
    return (
        _CAN_SENTENCE.match(text, sentence_start) is not None
        or _CONDITION_AFTER.search(after) is not None
    )


def _handoff_claims(text: str, evidence: Sequence[ToolEvidence]) -> list[Claim]:
    phrase = _first_asserted(text, _HANDOFF_ANNOUNCED, unless=_offered)
    if phrase is None or _ok(evidence, "handoff_to_human", this_turn_only=True):
        return []
    return [Claim("handoff", phrase, "the conversation was not handed to a person in this turn")]


# --- order facts ----------------------------------------------------------------------------

_DATE: Final = (
    r"(?:\d{4}-\d{2}-\d{2}|\d{1,2}/\d{1,2}(?:/\d{2,4})?|today|tomorrow|monday|tuesday|wednesday"
    r"|thursday|friday|saturday|sunday|(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)"
    r"[a-z]*\.?\s+\d{1,2}|\d{1,2}\s+(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec))"
)
_MONEY: Final = r"(?:[$\u20ac\u00a3]\s?\d[\d,]*(?:\.\d{2})?|\d[\d,]*(?:\.\d{2})?\s?(?:usd|eur|gbp))"
_ORDER_FACTS: Final = _compile(
    # status
    r"\b(?:has|have|had|was|were|is|are|got|been)\s+(?:already\s+|now\s+|just\s+)?(?:been\s+)?"
    r"(?:shipped|dispatched|delivered|cancell?ed)\b",
    r"\bshipped\s+(?:with|via|by)\b",
    r"\b(?:in transit|out for delivery|on (?:its|the|their) way|on the move|on the delivery "
    r"truck|left (?:our|the) warehouse|hasn't (?:shipped|left)|has not (?:shipped|left)|"
    r"being (?:prepared|packed|processed)|(?:is|still) processing|shows as cancell?ed|"
    r"marked (?:as )?delivered|as delivered)\b",
    # tracking
    r"\btracking(?:\s+(?:number|code|id|info))?\s*(?::|is|was)\s*\S",
    r"\btracking\s+(?:number\s+)?[A-Z0-9]{8,}\b",
    r"\btrack (?:it|your (?:order|package|parcel)) (?:with|using|at|on)\b",
    # delivery date
    r"\b(?:arrive|arriving|arrives|arrival|delivered|delivery|expected|expect it|due|have it|"
    r"reach you|get it)\s+(?:(?:is|was)\s+)?(?:expected\s+)?(?:on or before|by|on|before|"
    r"around)\s+" + _DATE,
    r"\b(?:estimated|expected)\s+(?:delivery|arrival)(?:\s+date)?\s*(?::|is|was|of)\s*\S",
    r"\b(?:delivery|arrival) date\s*(?::|is|was)\s*\S",
    r"\b(?:should|will)\s+(?:arrive|reach you|be delivered|be there|get to you)\s+(?:by\s+|on\s+)?"
    + _DATE,
    # items
    r"\b(?:in (?:that|this|your) order|you ordered|you bought)\s*:?\s*\S",
    r"\b(?:order|it|package|parcel)(?:\s+[A-Z]{2}-?\d{4,})?\s+(?:contains|contained|includes|"
    r"included)\b",
    r"\bthe order (?:has|had)\s+(?!been\b|not\b|shipped\b|left\b)\S",
    # order total
    r"\b(?:total|you paid|paid|came to|charged|cost)\b[^.!?]{0,30}?" + _MONEY,
    _MONEY + r"[^.!?]{0,15}?\b(?:in total|total)\b",
)


def _order_found(e: ToolEvidence) -> bool:
    return "order_id" in e.result and "error" not in e.result and e.result.get("found") is not False


def _order_claims(text: str, evidence: Sequence[ToolEvidence]) -> list[Claim]:
    # What a help article or the checker said may be quoted: it claims nothing of an order.
    text = _without(text, _strings(evidence, ("search_kb", "check_answer")))
    phrase = _first_asserted(text, _ORDER_FACTS)
    if phrase is None:
        return []
    found_now = [e for e in _ok(evidence, "lookup_order", this_turn_only=True) if _order_found(e)]
    if found_now:
        # This turn looked an order up: facts told of another order only (a correction the
        # reply ignored, or the previous order's number) are not what the lookup found.
        wanted = str(found_now[-1].result["order_id"])
        named = _order_numbers(text)
        if named and wanted not in named:
            return [Claim("order", named[0], f"this turn's lookup found order {wanted}")]
        return []
    if any(_order_found(e) for e in _ok(evidence, "lookup_order", this_turn_only=False)):
        return []
    return [Claim("order", phrase, "no lookup in this conversation found the order")]


def _order_numbers(text: str) -> list[str]:
    """The order numbers ``text`` names, in the extractor's normal form (``NW-123456``)."""
    table = SlotTable()
    table.delexicalize(text)
    prefix = f"[{SlotKind.ORDER_ID.value}_"
    return [value for slot, value in table.values.items() if slot.startswith(prefix)]


# --- tutoring verdicts ------------------------------------------------------------------------

_POSITIVE: Final = _compile(
    r"^\W*(?:correct|exactly|spot on|well done|nice work|nice job|great job|good job|great work|"
    r"perfect|excellent|bingo|yes|yep|right)\s*[!.,:]",
    r"\b(?:that'?s|that is|it'?s|it is|you'?re|you are|you got it|is|are|was)\s+(?:exactly\s+|"
    r"absolutely\s+|totally\s+|completely\s+|perfectly\s+)?(?:right|correct)\b",
    r"\b(?:exactly right|spot on|well done|nice work|great job|good job|nailed it|you got it)\b",
    r"\bcorrect!",
)
_NEGATIVE: Final = _compile(
    r"\bnot quite\b",
    r"\b(?:not|isn'?t|aren'?t|wasn'?t)\s+(?:quite\s+)?(?:right|correct|it)\b",
    r"\bincorrect\b",
    r"\bwrong\b",
    r"\bclose,?\s+but\b",
    r"\bnot this time\b",
    r"\balmost\b",
    r"\bnot exactly\b",
    r"\bnope\b",
    r"^\W*no\s*[,.!:]",
)


def _verdict(text: str) -> str | None:
    """``"negative"``, ``"positive"`` or None: what the reply tells the student."""
    if any(p.search(text) for p in _NEGATIVE):
        return "negative"
    if any(p.search(text) for p in _POSITIVE):
        return "positive"
    return None


def _student_check(evidence: Sequence[ToolEvidence]) -> ToolEvidence | None:
    """The check of the student's answer: the turn's first, else the conversation's latest.

    A later check in the same turn is the model checking again, and the model has then read
    the expected answer from the first result: seen served, it re-checked that expected answer
    and said "Exactly right" to a student who had written something else.
    """
    checks = [e for e in evidence if e.name == "check_answer"]
    this_turn = [e for e in checks if e.this_turn]
    if this_turn:
        return this_turn[0]
    return checks[-1] if checks else None


def _judged(check: ToolEvidence) -> bool | None:
    """The checker's verdict (True right, False wrong), None when it could not judge."""
    if check.status != "ok" or "expected" not in check.result:
        return None  # a failed call, or an exercise it could not read
    correct = check.result.get("correct")
    if correct is True and "error" not in check.result:
        return True
    return False if correct is False else None


def _verdict_claims(
    text: str, channel: str, check: ToolEvidence | None, evidence: Sequence[ToolEvidence]
) -> list[Claim]:
    if check is None and channel != "tutor":
        return []
    said = _verdict(_without(text, _strings(evidence, ("check_answer",))))
    if said is None:
        return []
    if check is None:
        return [Claim("verdict", said, "no answer was checked")]
    judged = _judged(check)
    if judged is None:
        return [Claim("verdict", said, "the checker could not judge the answer")]
    if judged != (said == "positive"):
        real = "right" if judged else "wrong"
        return [Claim("verdict", said, f"the checker found the answer {real}")]
    return []


# "The answer is 9000 g." / "so the correct answer is 3/4": what a reply gives as the answer.
_STATED_ANSWER: Final = re.compile(
    r"\b(?:the\s+(?:correct\s+|right\s+)?answer\s+is|answer:)\s*(.+?)(?=,\s|[;!?]|\.\s|\.$|$)",
    _FLAGS,
)
_NUMBER: Final = re.compile(r"\d+(?:[./]\d+)?")


def _numbers(text: str) -> list[str]:
    return _NUMBER.findall(text.replace(",", ""))


def _answer_claims(text: str, check: ToolEvidence | None) -> list[Claim]:
    """A reply that gives as the answer numbers other than the checker's expected answer."""
    if check is None or check.status != "ok" or "expected" not in check.result:
        return []
    expected = _numbers(str(check.result["expected"]))
    for match in _STATED_ANSWER.finditer(text):
        stated = _numbers(match.group(1))
        if stated and stated != expected:
            answer = check.result["expected"]
            return [Claim("answer", match.group(0), f"the checker's answer is {answer}")]
    return []


# --- help articles --------------------------------------------------------------------------


def _plain(text: str) -> str:
    return " ".join(text.replace("\u2019", "'").casefold().split())


def _last_article(evidence: Sequence[ToolEvidence]) -> str | None:
    """The help article this turn's last successful call returned, if that call found one."""
    calls = [e for e in evidence if e.this_turn and e.status == "ok"]
    if not calls or calls[-1].name != "search_kb":
        return None
    answer = calls[-1].result.get("answer")
    return answer if isinstance(answer, str) and answer.strip() else None


def _article_claims(text: str, evidence: Sequence[ToolEvidence]) -> list[Claim]:
    """A reply that does not quote the article the turn found (every trained reply to one
    quotes it whole; one that does not has paraphrased another article or invented one)."""
    article = _last_article(evidence)
    if article is None or _plain(article) in _plain(text):
        return []
    return [Claim("article", text[:80], "the reply does not quote the help article found")]


# --- the check ------------------------------------------------------------------------------


def unsupported_claims(text: str, channel: str, evidence: Sequence[ToolEvidence]) -> list[Claim]:
    """The claims of ``text`` (real values) that ``evidence`` does not support: at most one
    of each kind, in the order of ``KINDS``.

    ``evidence`` holds this turn's calls (``this_turn=True``) and the earlier turns' ones
    (see :func:`evidence_from_history`); on the tutor channel pass only the current
    exercise's history (``prompting.current_exercise``), as the model sees it.
    """
    text = text.replace("\u2019", "'")
    check = _student_check(evidence)
    # A reply that misjudges the answer and also states another one needs one correction.
    claims = _verdict_claims(text, channel, check, evidence) or _answer_claims(text, check)
    claims += _ticket_claims(text, evidence)
    claims += _handoff_claims(text, evidence)
    claims += _order_claims(text, evidence)
    claims += _article_claims(text, evidence)
    return sorted(claims, key=lambda claim: KINDS.index(claim.kind))


def conversation_evidence(
    channel: str, history: Sequence[HistoryItem], this_turn: Sequence[ToolEvidence]
) -> list[ToolEvidence]:
    """Earlier turns' evidence (the current exercise only on the tutor channel) and this
    turn's. ``history`` is the stored conversation up to the user's message."""
    earlier = current_exercise(history) if channel == "tutor" else history
    return [*evidence_from_history(earlier), *this_turn]


# --- honest replies -------------------------------------------------------------------------

TICKET_FALLBACK: Final = (
    "I couldn't open a ticket just now \u2014 could you tell me the order number and what "
    "went wrong?"
)
HANDOFF_FALLBACK: Final = (
    "I couldn't reach a person just now \u2014 could you tell me what you need help with, and "
    "I'll do my best?"
)
ORDER_FALLBACK: Final = (
    "I couldn't look up that order just now \u2014 could you send me the order number and the "
    "email address you used for it?"
)
ORDER_NOT_FOUND_FALLBACK: Final = (
    "I couldn't find that order \u2014 could you check the order number and the email address "
    "on it?"
)
ARTICLE_LEAD: Final = "Here's what our help article says:"
VERDICT_FALLBACK: Final = (
    "I couldn't check that answer just now \u2014 could you send the exercise and your answer "
    "again as plain maths, for example 3/4 + 1/8 and 7/8?"
)


_STATUS_WORDS: Final = {
    "processing": "is being prepared and hasn't shipped yet",
    "shipped": "has shipped",
    "in_transit": "is in transit",
    "out_for_delivery": "is out for delivery today",
    "delivered": "was delivered",
    "cancelled": "was cancelled",
}


def order_status_reply(result: Mapping[str, Any]) -> str:
    """The status of the order a lookup found, in its own words: carrier, tracking and the
    expected delivery where the result has them."""
    status = str(result.get("status", ""))
    words = _STATUS_WORDS.get(status, f"has the status {status.replace('_', ' ')}")
    parts = [f"Order {result['order_id']} {words}."]
    if result.get("carrier"):
        parts.append(
            f"Carrier: {result['carrier']}, tracking number {result.get('tracking_number')}."
        )
    if result.get("estimated_delivery"):
        parts.append(f"It should arrive by {result['estimated_delivery']}.")
    return " ".join(parts)


def honest_reply(claim: Claim, evidence: Sequence[ToolEvidence]) -> str:
    """A short reply for a turn whose reply made ``claim``: it claims nothing unsupported."""
    if claim.kind == "ticket":
        opened = _ok(evidence, "create_ticket", this_turn_only=True)
        if opened:  # the tool did open one: say which
            ticket = opened[-1].result
            order = f" for order {ticket['order_id']}" if ticket.get("order_id") else ""
            return (
                f"I've opened ticket {ticket.get('ticket_id')}{order}. "
                "Our team will email you the next steps."
            )
        return TICKET_FALLBACK
    if claim.kind == "handoff":
        return HANDOFF_FALLBACK
    if claim.kind == "order":
        lookups = [e for e in evidence if e.name == "lookup_order" and e.this_turn]
        if lookups and _order_found(lookups[-1]):  # facts of another order than it found
            return order_status_reply(lookups[-1].result)
        if lookups and lookups[-1].status == "ok":  # it ran and found nothing
            return ORDER_NOT_FOUND_FALLBACK
        return ORDER_FALLBACK
    if claim.kind == "article":
        return f"{ARTICLE_LEAD} {_last_article(evidence)}"
    check = _student_check(evidence)
    if check is None or check.status != "ok":
        return VERDICT_FALLBACK
    result = check.result
    explanation = str(result.get("explanation") or "")
    hint = result.get("hint")
    right = f"That's correct! {explanation}".strip()
    shown = f"The answer is {result.get('expected')}. {explanation}".strip()
    if claim.kind == "answer":  # the reply gave another answer than the checker's
        return right if _judged(check) is True else shown
    if result.get("error") == "empty_answer" and "expected" in result:
        return shown
    if "error" in result or _judged(check) is None:
        if isinstance(hint, str) and hint:
            return f"I couldn't check that answer. {hint}"
        return VERDICT_FALLBACK
    if result.get("correct") is True:
        return right
    return f"Not quite: the answer is {result.get('expected')}. {explanation}".strip()
