"""The tool-call parser: replies, calls and malformed output (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from assistant.agent.toolcall import ParseError, Reply, ToolRequest, parse_output
from dlm_runtime.tokenizer import END_TOKEN, TOOL_CALL_CLOSE_TOKEN, TOOL_CALL_OPEN_TOKEN

OPEN, CLOSE = TOOL_CALL_OPEN_TOKEN, TOOL_CALL_CLOSE_TOKEN
TOOLS = {"lookup_order", "search_kb"}


def test_plain_reply() -> None:
    """Text without delimiters is a reply, cut at the end token."""
    assert parse_output(f" Hello there! {END_TOKEN}junk") == Reply("Hello there!")


def test_tool_call() -> None:
    """A well-formed call gives name and arguments."""
    text = f'{OPEN}{{"name": "lookup_order", "arguments": {{"order_id": "[ORDER_ID_1]"}}}}{CLOSE}'
    assert parse_output(text + END_TOKEN, TOOLS) == ToolRequest(
        "lookup_order", {"order_id": "[ORDER_ID_1]"}
    )


@pytest.mark.parametrize(
    ("text", "code"),
    [
        (f'{OPEN}{{"name": "search_kb", "arguments": {{}}}}', "unbalanced"),
        (f'{{"name": "search_kb"}}{CLOSE}', "unbalanced"),
        (f"{CLOSE}{OPEN}", "unbalanced"),
        (
            f'{OPEN}{{"name": "search_kb"}}{CLOSE}{OPEN}{{"name": "search_kb"}}{CLOSE}',
            "multiple_calls",
        ),
        (f'{OPEN}{{"name": "search_kb", "arguments": {{"q": }}{CLOSE}', "bad_json"),
        (f'{OPEN}["search_kb"]{CLOSE}', "bad_shape"),
        (f'{OPEN}{{"name": "search_kb", "arguments": "q"}}{CLOSE}', "bad_shape"),
        (f'{OPEN}{{"name": "delete_all", "arguments": {{}}}}{CLOSE}', "unknown_tool"),
    ],
)
def test_malformed_output_is_a_parse_error(text: str, code: str) -> None:
    """Malformed calls give a ParseError with a stable code."""
    result = parse_output(text, TOOLS)
    assert isinstance(result, ParseError) and result.code == code and result.message


@given(st.text())
def test_never_raises(text: str) -> None:
    """No input makes the parser raise."""
    parse_output(text, TOOLS)


@given(st.lists(st.sampled_from([OPEN, CLOSE, "{", "}", '"name"', ":", '"x"', " ", END_TOKEN])))
def test_never_raises_on_delimiter_soup(parts: list[str]) -> None:
    """Random arrangements of delimiters and JSON fragments never raise."""
    parse_output("".join(parts), TOOLS)
