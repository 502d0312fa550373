"""Claims a reply makes that no tool supports (pure), and the corpus's replies against them."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import pytest

from assistant.agent.claims import (
    ARTICLE_LEAD,
    HANDOFF_FALLBACK,
    ORDER_FALLBACK,
    ORDER_NOT_FOUND_FALLBACK,
    TICKET_FALLBACK,
    VERDICT_FALLBACK,
    Claim,
    ToolEvidence,
    conversation_evidence,
    evidence_from_history,
    honest_reply,
    order_status_reply,
    unsupported_claims,
)
from assistant.agent.prompting import HistoryItem
from assistant.demo.shop import build_shop
from assistant.lab.corpus.build import conversations, dialogues
from assistant.lab.corpus.dialogue import Dialogue
from assistant.tools.create_ticket import ticket_view
from assistant.tools.handoff_to_human import handoff_view
from assistant.tools.lookup_order import NOT_FOUND, order_view
from assistant.tools.search_kb import kb_view
from assistant.tutoring.checker import check_answer

SHOP = build_shop()
ORDER = next(o for o in SHOP.orders if o.status == "shipped")
TICKET = ToolEvidence("create_ticket", "ok", ticket_view("T-12345", "damaged", ORDER.number))
HANDOFF = ToolEvidence("handoff_to_human", "ok", handoff_view())
FOUND = ToolEvidence("lookup_order", "ok", order_view(ORDER))
NOT_FOUND_ = ToolEvidence("lookup_order", "ok", dict(NOT_FOUND))
REJECTED_KB = ToolEvidence("search_kb", "error", {})
RIGHT = ToolEvidence("check_answer", "ok", check_answer("2 + 2", "4"))
WRONG = ToolEvidence("check_answer", "ok", check_answer("2 + 2", "5"))
UNREADABLE = ToolEvidence("check_answer", "ok", check_answer("what is love", "4"))
FAILED_CHECK = ToolEvidence("check_answer", "timeout", {})


def kinds(text: str, evidence: Sequence[ToolEvidence], channel: str = "widget") -> list[str]:
    return [claim.kind for claim in unsupported_claims(text, channel, evidence)]


def earlier(evidence: ToolEvidence) -> ToolEvidence:
    return ToolEvidence(evidence.name, evidence.status, evidence.result, this_turn=False)


# tickets -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "I've opened a ticket for you.",
        "I have created a support ticket about your order.",
        "Ticket T-12345 is open and someone will follow up soon.",
        "Your ticket number is T-55555.",
        "I logged this as ticket T-12345.",
        "Done! We've raised a ticket with the warehouse.",
    ],
)
def test_a_ticket_without_create_ticket_is_a_claim(text: str) -> None:
    """The reported reply: a ticket announced while the only call was a rejected search."""
    assert kinds(text, [REJECTED_KB]) == ["ticket"]


def test_a_ticket_is_supported_by_create_ticket_of_the_turn() -> None:
    text = "I'm sorry about that. I've opened ticket T-12345 for order NW-1; we'll email you."
    assert kinds(text, [TICKET]) == []
    # A ticket number the tool never issued is a claim even when a ticket was opened.
    assert kinds("I've opened ticket T-99999 for you.", [TICKET]) == ["ticket"]
    # A failed create_ticket supports nothing.
    assert kinds("I've opened ticket T-12345.", [ToolEvidence("create_ticket", "error")]) == [
        "ticket"
    ]


def test_an_earlier_ticket_may_be_quoted_but_not_announced_again() -> None:
    assert kinds("Your ticket number is T-12345.", [earlier(TICKET)]) == []
    assert kinds("I've opened a new ticket for this.", [earlier(TICKET)]) == ["ticket"]


def test_the_new_ticket_is_not_announced_under_an_earlier_number() -> None:
    """Seen on dev conversations: a second problem's ticket announced as the first one."""
    second = ToolEvidence("create_ticket", "ok", ticket_view("T-12347", "missing_item", "NW-1"))
    evidence = [earlier(TICKET), second]
    text = "I've logged this as ticket T-12345 for order NW-1. We'll email you the next steps."
    assert kinds(text, evidence) == ["ticket"]
    assert kinds(text.replace("T-12345", "T-12347"), evidence) == []
    # Quoting both, the new one included, is fine.
    assert kinds("I've opened ticket T-12347; your earlier one is T-12345.", evidence) == []
    claim = unsupported_claims(text, "widget", evidence)[0]
    assert honest_reply(claim, evidence) == (
        "I've opened ticket T-12347 for order NW-1. Our team will email you the next steps."
    )


@pytest.mark.parametrize(
    "text",
    [
        TICKET_FALLBACK,
        "I can open a ticket for you if you tell me the order number.",
        "Would you like me to open a support ticket?",
        "Sorry, I couldn't create a ticket right now.",
        "No ticket was opened yet.",
    ],
)
def test_offers_and_negations_are_not_ticket_claims(text: str) -> None:
    assert kinds(text, []) == []


# handoffs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "I'm connecting you with a person now.",
        "No problem, I'm connecting you with a member of our team now.",
        "Sure. A human agent will take over this conversation in a moment.",
        "I've asked a human agent to join; they'll be with you shortly.",
        "Okay, I'm handing you over to a human colleague.",
        # what it can do, then what it did: the second sentence still announces a hand-off
        "I can help with orders. I'm connecting you with a person now.",
        "I've passed this conversation to our support team; someone will reply here soon.",
    ],
)
def test_a_handoff_without_handoff_to_human_is_a_claim(text: str) -> None:
    assert kinds(text, []) == ["handoff"]
    assert kinds(text, [HANDOFF]) == []
    assert kinds(text, [ToolEvidence("handoff_to_human", "timeout")]) == ["handoff"]


@pytest.mark.parametrize(
    "text",
    [
        HANDOFF_FALLBACK,
        "I can connect you with a person if you like.",
        "I can check your order status, answer questions about shipping, returns and payment, "
        "open a ticket for a problem, or connect you with a person.",
        "I can look up orders, explain our policies, report a problem with an order or hand you "
        "over to a human agent. What do you need?",
        "I'm the store's virtual assistant. I can check orders, answer policy questions and "
        "connect you with a person if you like.",
        "Shall I pass you? I'd be happy to hand you over to a human agent if you prefer.",
        "Do you want me to connect you to a human agent?",
        "Our team will contact you by email.",  # a ticket's follow-up, not a handoff
        "Someone will follow up soon.",
    ],
)
def test_offers_and_follow_ups_are_not_handoff_claims(text: str) -> None:
    assert kinds(text, []) == []


# order facts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Your order NW-123456 has shipped with UPS.",
        "It is in transit and should arrive by 2026-11-12.",
        "Tracking number: 1Z999AA10123456784.",
        "Order NO-123456 was delivered yesterday.",
        "It's out for delivery today.",
        "You should have it by 2026-11-09.",
        "The total for order NW-123456 was $108.00.",
        "You paid $54.00.",
        "In that order: Sun Hat and Camp Stove.",
        "I see that order NO-591948 was cancelled and will not be delivered.",
    ],
)
def test_order_facts_need_a_lookup_that_found_the_order(text: str) -> None:
    assert kinds(text, []) == ["order"]
    assert kinds(text, [NOT_FOUND_]) == ["order"]
    assert kinds(text, [ToolEvidence("lookup_order", "error")]) == ["order"]
    assert kinds(re.sub(r"N[OW]-\d{6}", ORDER.number, text), [FOUND]) == []
    assert kinds(text, [earlier(FOUND)]) == []  # a follow-up to an earlier lookup


@pytest.mark.parametrize(
    "text",
    [
        "Your order NW-123456 has shipped with UPS.",
        "Order NO-123456 was delivered yesterday.",
        "The total for order nw123456 was $108.00.",
    ],
)
def test_facts_of_another_order_than_this_turns_lookup_found_are_a_claim(text: str) -> None:
    """A corrected order number looked up, the reply still about the old one: the honest
    reply tells the found order's status with its own carrier, tracking and date."""
    claims = unsupported_claims(text, "widget", [earlier(FOUND), FOUND])
    assert [c.kind for c in claims] == ["order"]
    reply = honest_reply(claims[0], [earlier(FOUND), FOUND])
    assert reply == order_status_reply(FOUND.result)
    assert ORDER.number in reply and str(ORDER.tracking_number) in reply
    assert str(ORDER.carrier) in reply and "NW-123456" not in reply
    assert kinds(reply, [FOUND]) == []
    # Naming the found order too (beside another) is not this claim.
    assert kinds(f"{text} Order {ORDER.number} has shipped.", [FOUND]) == []


def test_every_status_reads_as_a_sentence() -> None:
    for order in {o.status: o for o in SHOP.orders}.values():
        reply = order_status_reply(order_view(order))
        assert reply.startswith(f"Order {order.number} ") and "_" not in reply


@pytest.mark.parametrize(
    "text",
    [
        ORDER_FALLBACK,
        ORDER_NOT_FOUND_FALLBACK,
        "I can check that. What email address did you use for order NW-123456?",
        "I couldn't find an order NW-123456 for a@b.co. Please check the order number.",
        "Has it shipped? I can check if you send me the order number.",
        "Orders can be cancelled until they ship.",
        "My pleasure!",
    ],
)
def test_questions_and_general_words_are_not_order_claims(text: str) -> None:
    assert kinds(text, []) == []


def test_a_quoted_help_article_claims_nothing_of_an_order() -> None:
    article = next(a for a in SHOP.articles if a.topic == "payment")
    text = f"Sure. {article.answer}"
    assert "charged when the order ships" in text
    assert kinds(text, [ToolEvidence("search_kb", "ok", kb_view(article))]) == []


# help articles -------------------------------------------------------------------------------

ARTICLES = {a.topic: a for a in SHOP.articles}
FOUND_INTERNATIONAL = ToolEvidence("search_kb", "ok", kb_view(ARTICLES["international"]))


def test_a_reply_must_quote_the_article_the_turn_found() -> None:
    """Seen on dev conversations with run 14: search_kb(international) answered with the
    warranty article's words."""
    wrong = f"Of course. {ARTICLES['warranty'].answer}"
    assert kinds(wrong, [FOUND_INTERNATIONAL]) == ["article"]
    assert kinds("Sure, we ship abroad!", [FOUND_INTERNATIONAL]) == ["article"]
    right = f"Good question!  {ARTICLES['international'].answer.upper()} Anything else?"
    assert kinds(right, [FOUND_INTERNATIONAL]) == []


def test_only_an_article_found_by_the_turns_last_call_must_be_quoted() -> None:
    assert kinds("Happy to help!", [earlier(FOUND_INTERNATIONAL)]) == []  # an earlier turn's
    shipped = f"Order {ORDER.number} has shipped."
    assert kinds(shipped, [FOUND_INTERNATIONAL, FOUND]) == []  # a lookup came after it
    not_found = ToolEvidence("search_kb", "ok", {"found": False, "error": "not_found"})
    assert kinds("I couldn't find an article on that.", [not_found, REJECTED_KB]) == []


def test_the_honest_reply_to_a_misquoted_article_quotes_it() -> None:
    reply = honest_reply(Claim("article", "", ""), [FOUND_INTERNATIONAL])
    assert reply == f"{ARTICLE_LEAD} {ARTICLES['international'].answer}"
    assert kinds(reply, [FOUND_INTERNATIONAL]) == []


# tutoring verdicts ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "evidence", "expected"),
    [
        ("Correct! 2 + 2 = 4.", [RIGHT], []),
        ("Correct! 2 + 2 = 4.", [WRONG], ["verdict"]),
        ("Well done!", [WRONG], ["verdict"]),
        ("Yes, that's right.", [WRONG], ["verdict"]),
        ("Not quite: the answer is 4.", [WRONG], []),
        ("Not quite: the answer is 4.", [RIGHT], ["verdict"]),
        ("Sorry, that's incorrect.", [RIGHT], ["verdict"]),
        ("Correct!", [FAILED_CHECK], ["verdict"]),  # the reported reply
        ("Correct!", [UNREADABLE], ["verdict"]),
        ("Not quite.", [FAILED_CHECK], ["verdict"]),
        ("Correct!", [], ["verdict"]),  # no check at all on the tutor channel
        ("Let's work through it: 2 + 2 = 4.", [FAILED_CHECK], []),
        ("Hi! Send me your answer and I'll check it.", [], []),
    ],
)
def test_a_verdict_must_agree_with_the_checker(
    text: str, evidence: list[ToolEvidence], expected: list[str]
) -> None:
    assert kinds(text, evidence, channel="tutor") == expected


def test_the_checkers_own_words_are_not_read_as_a_verdict() -> None:
    """A hint such as "Close, but ..." quoted in a right-answer reply is not a verdict."""
    result = {**RIGHT.result, "explanation": "Close, but not 5: 2 + 2 = 4."}
    evidence = [ToolEvidence("check_answer", "ok", result)]
    assert kinds("Correct! Close, but not 5: 2 + 2 = 4.", evidence, channel="tutor") == []


def test_the_latest_check_of_the_turn_decides() -> None:
    """An earlier wrong answer does not make this turn's "Correct!" a claim."""
    evidence = [earlier(WRONG), RIGHT]
    assert kinds("Correct! 2 + 2 = 4.", evidence, channel="tutor") == []
    assert kinds("Correct! 2 + 2 = 4.", [earlier(RIGHT)], channel="tutor") == []


def test_verdict_words_outside_tutoring_are_not_checked() -> None:
    assert kinds("Right! Anything else I can help with?", []) == []


# evidence and honest replies -------------------------------------------------------------------


def test_history_evidence_reads_what_the_model_was_shown() -> None:
    history = [
        HistoryItem("user", "where is it?"),
        HistoryItem("tool_call", tool="lookup_order", payload={}),
        HistoryItem("tool_result", tool="lookup_order", payload=dict(FOUND.result)),
        HistoryItem("tool_call", tool="create_ticket", payload={}),
        HistoryItem("tool_result", tool="create_ticket", payload={"error": "timeout"}),
        HistoryItem("tool_call", tool="search_kb", payload={}),
        HistoryItem("tool_result", tool="search_kb", payload={"error": "tool_error"}),
    ]
    evidence = evidence_from_history(history)
    assert [(e.name, e.status, e.this_turn) for e in evidence] == [
        ("lookup_order", "ok", False),
        ("create_ticket", "timeout", False),
        ("search_kb", "error", False),
    ]


def test_tutoring_evidence_is_the_current_exercise_only() -> None:
    history = [
        HistoryItem("system", "Exercise: 2 + 2"),
        HistoryItem("tool_call", tool="check_answer", payload={}),
        HistoryItem("tool_result", tool="check_answer", payload=dict(RIGHT.result)),
        HistoryItem("system", "Exercise: 3 + 3"),
        HistoryItem("user", "7"),
    ]
    assert conversation_evidence("tutor", history, []) == []
    assert len(conversation_evidence("widget", history, [])) == 1


@pytest.mark.parametrize(
    ("claim", "evidence", "expected"),
    [
        ("ticket", [REJECTED_KB], TICKET_FALLBACK),
        ("handoff", [], HANDOFF_FALLBACK),
        ("order", [], ORDER_FALLBACK),
        ("order", [ToolEvidence("lookup_order", "error")], ORDER_FALLBACK),
        ("order", [NOT_FOUND_], ORDER_NOT_FOUND_FALLBACK),
        ("verdict", [FAILED_CHECK], VERDICT_FALLBACK),
        ("verdict", [], VERDICT_FALLBACK),
    ],
)
def test_honest_replies(claim: str, evidence: list[ToolEvidence], expected: str) -> None:
    reply = honest_reply(Claim(claim, "", ""), evidence)
    assert reply == expected
    assert unsupported_claims(reply, "tutor" if claim == "verdict" else "widget", evidence) == []


def test_honest_tutoring_replies_state_the_checkers_verdict() -> None:
    right = honest_reply(Claim("verdict", "", ""), [RIGHT])
    wrong = honest_reply(Claim("verdict", "", ""), [WRONG])
    unreadable = honest_reply(Claim("verdict", "", ""), [UNREADABLE])
    assert right.startswith("That's correct!") and str(RIGHT.result["explanation"]) in right
    assert wrong.startswith("Not quite: the answer is 4.")
    assert unreadable == f"I couldn't check that answer. {UNREADABLE.result['hint']}"
    for reply, evidence in ((right, RIGHT), (wrong, WRONG), (unreadable, UNREADABLE)):
        assert unsupported_claims(reply, "tutor", [evidence]) == []


# the corpus's replies ------------------------------------------------------------------------


def corpus_replies(dialogue: Dialogue) -> list[tuple[str, list[ToolEvidence]]]:
    """Each assistant reply with the evidence the loop would hold it to."""
    out: list[tuple[str, list[ToolEvidence]]] = []
    user = 0
    for index, item in enumerate(dialogue.items):
        if item.role == "user":
            user = index
        if item.role != "assistant":
            continue
        this_turn = [
            ToolEvidence(e.name, e.status, e.result)
            for e in evidence_from_history(dialogue.items[user:index])
        ]
        evidence = conversation_evidence(dialogue.channel, dialogue.items[: user + 1], this_turn)
        out.append((item.text, evidence))
    return out


def flagged_replies(
    walked: Iterable[Dialogue],
) -> tuple[int, list[tuple[str, str, list[Any]]]]:
    """How many replies the dialogues hold, and those the check flags with their evidence."""
    flagged: list[tuple[str, str, list[Any]]] = []
    count = 0
    for dialogue in walked:
        for text, evidence in corpus_replies(dialogue):
            count += 1
            claims = unsupported_claims(text, dialogue.channel, evidence)
            if claims:
                flagged.append((dialogue.intent, text, claims))
    return count, flagged


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_every_corpus_reply_passes_with_its_dialogues_tool_results(split: str) -> None:
    """Zero false positives: the corpus's replies (every template, real values) are honest."""
    count, flagged = flagged_replies(dialogues(1500, split, 11, SHOP))
    assert count > 2000
    assert flagged == []


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_every_simulated_conversation_reply_passes_with_its_tool_results(split: str) -> None:
    """The simulator's replies too: its small talk offers a person ("I can ... or connect you
    with a person"), which once read as a hand-off announced without the tool, so served
    replies that said what the assistant can do were swapped for HANDOFF_FALLBACK."""
    count, flagged = flagged_replies(conversations(600, split, 11, SHOP))
    assert count > 2000
    assert flagged == []


def test_corpus_replies_without_their_tools_are_caught() -> None:
    """The same replies with the tool calls taken away: every announcement is flagged."""
    caught: dict[str, list[bool]] = {}
    for dialogue in dialogues(600, "heldout", 12, SHOP):
        if not dialogue.intent.startswith(("ticket_", "handoff_", "order_status")):
            continue
        for text, evidence in corpus_replies(dialogue):
            if not any(e.this_turn for e in evidence):
                continue  # a follow-up, a closing or a question for the email
            kind = dialogue.intent.split("_")[0]
            caught.setdefault(kind, []).append(bool(unsupported_claims(text, "widget", [])))
    assert set(caught) == {"ticket", "handoff", "order"}
    assert all(all(flags) for flags in caught.values()), {k: sum(v) for k, v in caught.items()}


def test_a_second_check_of_the_shown_solution_does_not_make_the_student_right() -> None:
    """Seen served: the student's answer was unreadable, the model then checked the expected
    answer it had just read and said "Exactly right". The verdict follows the first check."""
    unreadable = ToolEvidence(
        "check_answer",
        "ok",
        {"correct": False, "error": "bad_answer", "expected": "55/42", "hint": "Write a number."},
    )
    recheck = ToolEvidence("check_answer", "ok", {"correct": True, "expected": "55/42"})
    (claim,) = unsupported_claims("Exactly right.", "tutor", [unreadable, recheck])
    assert claim.kind == "verdict"
    assert (
        honest_reply(claim, [unreadable, recheck])
        == "I couldn't check that answer. Write a number."
    )


GAVE_UP = ToolEvidence("check_answer", "ok", check_answer("9 kg to g", "no idea, show me"))


@pytest.mark.parametrize(
    ("text", "evidence"),
    [
        ("Let's work through it: 1 kg = 1000 g, so 9 kg = 9000 g. So the answer is 42.", GAVE_UP),
        ("Not quite: the answer is 5. 2 + 2 = 4.", WRONG),
        ("The correct answer is 22, since 2 + 2 = 4.", WRONG),
    ],
)
def test_an_answer_other_than_the_checkers_is_a_claim(text: str, evidence: ToolEvidence) -> None:
    """Seen served with run 11: "no idea, show me" got "So the answer is 42" (the student's
    earlier guess). The honest reply gives the checker's answer and explanation."""
    claims = unsupported_claims(text, "tutor", [evidence])
    assert [c.kind for c in claims] == ["answer"]
    reply = honest_reply(claims[0], [evidence])
    assert reply.startswith(f"The answer is {evidence.result['expected']}.")
    assert kinds(reply, [evidence], channel="tutor") == []


@pytest.mark.parametrize(
    "text",
    [
        "No problem! The answer is 9000 g. 1 kg = 1000 g, so 9 kg = 9000 g.",
        "The answer is 9,000 g.",
        "Let's see: the answer is in the explanation. 1 kg = 1000 g.",
    ],
)
def test_the_checkers_answer_is_no_claim(text: str) -> None:
    assert kinds(text, [GAVE_UP], channel="tutor") == []
