"""`assistant corpus distill`: text replies replaced by the bundled model's causal ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from assistant.lab.corpus.distill import is_text_example, kept_reply
from tests.cli import run_cli as run

SUPPORT = "You are the support assistant of Northwind Outfitters."
TOOL_CALL = {
    "messages": [
        {"role": "system", "content": SUPPORT},
        {"role": "user", "content": "where is [ORDER_ID_1]? [EMAIL_1]"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "name": "lookup_order",
                    "arguments": {"order_id": "[ORDER_ID_1]", "email": "[EMAIL_1]"},
                }
            ],
        },
    ],
    "domain": "support",
    "intent": "order_status",
}
ORDER_REPLY = {
    "messages": [
        *TOOL_CALL["messages"],
        {
            "role": "tool",
            "content": '{"order_id":"[ORDER_ID_1]","status":"delivered",'
            '"carrier":"[CARRIER_1]","tracking_number":"[TRACKING_1]"}',
        },
        {
            "role": "assistant",
            "content": "Order [ORDER_ID_1] was delivered by [CARRIER_1]. "
            "Tracking number: [TRACKING_1].",
        },
    ],
    "domain": "support",
    "intent": "order_status",
}
THANKS = {
    "messages": [
        {"role": "system", "content": SUPPORT},
        {"role": "user", "content": "thanks, that's all"},
        {"role": "assistant", "content": "Anytime! Let me know if you need anything else."},
    ],
    "domain": "support",
    "intent": "thanks",
}
TOO_LONG = {
    "messages": [
        {"role": "system", "content": SUPPORT},
        {"role": "user", "content": "my order " * 300 + "where is it?"},
        {"role": "assistant", "content": "Could you give me the order number and email?"},
    ],
    "domain": "support",
    "intent": "order_missing_id",
}


def test_a_reply_is_kept_when_its_facts_and_verdict_are() -> None:
    written = "Order [ORDER_ID_1] was delivered by [CARRIER_1]."
    context = '{"order_id":"[ORDER_ID_1]","carrier":"[CARRIER_1]"}'

    def kept(model: str, *, finished: bool = True, tutoring: bool = False) -> bool:
        return kept_reply(
            written if not tutoring else "Yes, that's right. [HINT_1]",
            model,
            finished=finished,
            context=context + " [HINT_1]",
            tutoring=tutoring,
        )

    assert kept("[CARRIER_1] delivered order [ORDER_ID_1].")  # another wording: the point
    assert not kept("[CARRIER_1] delivered order [ORDER_ID_1].", finished=False)
    assert not kept("Order [ORDER_ID_1] was delivered.")  # a fact dropped
    assert not kept("Order [ORDER_ID_1] was delivered by [CARRIER_1] on [DATE_1].")  # invented
    assert not kept("   ")
    assert not kept("Order [ORDER_ID_1] was was delivered by [CARRIER_1].")  # a doubled word
    assert kept("Well done! [HINT_1]", tutoring=True)
    assert not kept("Not quite. [HINT_1]", tutoring=True)  # the verdict turned


def test_only_text_replies_are_text_examples() -> None:
    assert not is_text_example(TOOL_CALL)
    assert is_text_example(ORDER_REPLY) and is_text_example(THANKS)


def test_distill_writes_tool_calls_as_written_and_the_model_s_checked_replies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, out = tmp_path / "train.jsonl", tmp_path / "distilled" / "train.jsonl"
    records = [TOOL_CALL, ORDER_REPLY, THANKS, TOO_LONG]
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    argv = ["corpus", "distill", "--source", str(source), "--out", str(out), "--text", "3"]
    assert run([*argv, "--threads", "1"]) == 0
    assert "1 tool-call examples as written, 3 text examples" in capsys.readouterr().out
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert written[0] == TOOL_CALL
    assert written[3] == TOO_LONG  # no room for a reply: the written one stays
    changed = 0
    for before, after in zip(records[1:3], written[1:3], strict=True):
        assert after["messages"][:-1] == before["messages"][:-1]
        reply, original = after["messages"][-1]["content"], before["messages"][-1]["content"]
        if reply != original:
            changed += 1
            context = json.dumps(before["messages"][:-1])
            assert kept_reply(original, reply, finished=True, context=context, tutoring=False)
    # The bundled model words at least one of these its own way (the reason to distill).
    assert changed >= 1
    # --tool samples the tool calls: none here, and the same text examples.
    assert run([*argv, "--tool", "0", "--threads", "1"]) == 0
    assert "0 tool-call examples as written, 3 text examples" in capsys.readouterr().out
    assert [json.loads(line) for line in out.read_text().splitlines()] == written[1:]


def test_distill_refuses_a_missing_source_and_overwriting_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "train.jsonl"
    argv = ["corpus", "distill", "--source", str(source), "--text", "1"]
    assert run([*argv, "--out", str(tmp_path / "out.jsonl")]) != 0
    assert "assistant corpus build" in capsys.readouterr().err
    source.write_text(json.dumps(THANKS) + "\n")
    assert run([*argv, "--out", str(source)]) != 0
    assert "must not be the source" in capsys.readouterr().err
    assert run([*argv[:-1], "5", "--out", str(tmp_path / "out.jsonl")]) != 0
    assert "fewer than 5" in capsys.readouterr().err
