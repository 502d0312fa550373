"""The OpenAI-compatible API's shapes: requests read and checked, completions, stream chunks,
errors, and the committed prefix of a reply that is still being generated.

Pure: no I/O and nothing of ``assistant/`` (``web/openai_http.py`` does the I/O), so every
rule here is tested without a socket. docs/openai.md is the contract.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from web.protocol import ProtocolError, UserMessage, parse_frame

# The one model: the tenant's support assistant (the widget's agent loop and tools).
MODEL: Final = "diffusion-assistant"
MODEL_CREATED: Final = 1767225600  # 2026-01-01, a fixed date: the listing never changes
OWNED_BY: Final = "diffusion-assistant"
# Where a client names the conversation a request continues (either; both must agree).
CONVERSATION_FIELD: Final = "conversation_id"
CONVERSATION_HEADER: Final = "X-Conversation-Id"
MASK: Final = "\u2591"  # a masked position in a draft snapshot
API_PREFIX: Final = "/v1/"

_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
# Fields of the OpenAI request that would change what the model does but that this
# assistant cannot honour: refused rather than silently ignored.
_CLIENT_TOOLS = ("tools", "tool_choice", "functions", "function_call")


class ApiError(Exception):
    """An error response in OpenAI's shape: ``{"error": {message, type, param, code}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        # Whole seconds for HTTP, milliseconds as the OpenAI SDKs read them first.
        seconds = max(1, math.ceil(self.retry_after))
        return {
            "Retry-After": str(seconds),
            "retry-after-ms": str(math.ceil(self.retry_after * 1000)),
        }


def unauthorized(
    message: str = "invalid API key: send a tenant's secret key as a Bearer token",
) -> ApiError:
    return ApiError(401, message, code="invalid_api_key")


def not_found(message: str, code: str = "not_found", param: str | None = None) -> ApiError:
    return ApiError(404, message, code=code, param=param)


def invalid(message: str, param: str | None = None, code: str = "invalid_value") -> ApiError:
    return ApiError(422, message, code=code, param=param)


def rate_limited(retry_after: float, message: str = "too many requests: slow down") -> ApiError:
    return ApiError(
        429, message, type_="requests", code="rate_limit_exceeded", retry_after=retry_after
    )


def unavailable(message: str, retry_after: float = 5.0, code: str = "unavailable") -> ApiError:
    return ApiError(503, message, type_="server_error", code=code, retry_after=retry_after)


def bearer_key(authorization: str | None) -> str:
    """The key of an ``Authorization: Bearer <key>`` header; 401 without one."""
    if not authorization:
        raise unauthorized("no API key: send Authorization: Bearer <the tenant's secret key>")
    scheme, _, key = authorization.strip().partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise unauthorized("send the key as Authorization: Bearer <the tenant's secret key>")
    return key


@dataclass(frozen=True)
class ChatRequest:
    """What a ``POST /v1/chat/completions`` asks for."""

    model: str
    text: str  # the last user message: the turn's message
    stream: bool = False
    include_usage: bool = False
    drafts: bool = False  # extension: whole-draft snapshots in the stream
    conversation_id: str | None = None  # extension: continue this stored conversation


def _content_text(content: Any, index: int) -> str:
    """A message's text: a string, or the text parts of a content array."""
    param = f"messages[{index}].content"
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, Mapping) or part.get("type") != "text":
                raise invalid("only text content parts are supported", param)
            text = part.get("text")
            if not isinstance(text, str):
                raise invalid("a text content part needs a string 'text'", param)
            texts.append(text)
        return "".join(texts)
    raise invalid("content must be a string or an array of text parts", param)


def _conversation_id(body: Mapping[str, Any], header: str | None) -> str | None:
    field = body.get(CONVERSATION_FIELD)
    if field is not None and not isinstance(field, str):
        raise invalid("conversation_id must be a string", CONVERSATION_FIELD)
    header = header.strip() if header is not None else None
    if field and header and field != header:
        raise invalid(
            f"the body's conversation_id and the {CONVERSATION_HEADER} header differ",
            CONVERSATION_FIELD,
        )
    chosen = field or header or None
    if chosen is not None and not _ID_RE.fullmatch(chosen):
        # Not an id this server ever made, so no such conversation.
        raise not_found("no such conversation", "conversation_not_found", CONVERSATION_FIELD)
    return chosen


def _flag(body: Mapping[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise invalid(f"{name} must be true or false", name)
    return value


def parse_chat_request(raw: bytes, conversation_header: str | None = None) -> ChatRequest:
    """Read and check a request body; every refusal is a 422 (404 for a malformed id)."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise invalid("the body is not JSON", code="invalid_json") from None
    if not isinstance(body, dict):
        raise invalid("the body must be a JSON object", code="invalid_json")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("model is required (GET /v1/models lists it)", "model", "missing_field")
    for name in _CLIENT_TOOLS:
        if body.get(name) not in (None, [], "none"):
            raise invalid(
                f"{name} is not supported: the assistant runs its tenant's tools itself",
                name,
                "unsupported_parameter",
            )
    n = body.get("n", 1)
    if n not in (None, 1) or isinstance(n, bool):
        raise invalid("n must be 1", "n", "unsupported_parameter")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("messages must be a non-empty array", "messages", "missing_field")
    texts: list[tuple[str, str]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise invalid("each message must be an object", f"messages[{index}]")
        role = message.get("role")
        if role not in _ROLES:
            raise invalid(f"unknown role {str(role)[:32]!r}", f"messages[{index}].role")
        texts.append((str(role), _content_text(message.get("content"), index)))
    role, text = texts[-1]
    if role != "user":
        raise invalid("the last message must be the user's", f"messages[{len(texts) - 1}].role")
    text = check_text(text, f"messages[{len(texts) - 1}].content")
    stream = _flag(body, "stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, Mapping):
        raise invalid("stream_options must be an object", "stream_options")
    include_usage = bool(options and options.get("include_usage") is True)
    return ChatRequest(
        model=model,
        text=text,
        stream=stream,
        include_usage=include_usage,
        drafts=_flag(body, "drafts"),
        conversation_id=_conversation_id(body, conversation_header),
    )


def check_text(text: str, param: str) -> str:
    """The protocol's own check of a user message (length, valid Unicode), as a 422."""
    frame = json.dumps({"type": "user_message", "id": "api", "text": text})
    try:
        parsed = parse_frame(frame)
    except ProtocolError as exc:
        raise invalid(exc.message.removeprefix("user_message: "), param) from None
    assert isinstance(parsed, UserMessage)
    return parsed.text


# responses ---------------------------------------------------------------------------------


def model_view() -> dict[str, Any]:
    return {"id": MODEL, "object": "model", "created": MODEL_CREATED, "owned_by": OWNED_BY}


def models_list() -> dict[str, Any]:
    return {"object": "list", "data": [model_view()]}


def usage_view(usage: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI's usage from a final's: generated tokens, and the diffusion costs besides.

    ``prompt_tokens`` is 0: the worker builds (and trims) the prompt, and reports only what
    it generated."""
    tokens = int(usage.get("tokens") or 0)
    view: dict[str, Any] = {
        "prompt_tokens": 0,
        "completion_tokens": tokens,
        "total_tokens": tokens,
    }
    for name in ("steps", "forward_passes", "milliseconds", "rounds", "mode", "problem"):
        if name in usage:
            view[name] = usage[name]
    return view


def finish_reason(status: str) -> str:
    """Every end is a ``stop`` for OpenAI clients; ``status`` (extension) says which."""
    return "stop"


def completion(
    *,
    completion_id: str,
    created: int,
    text: str,
    status: str,
    usage: Mapping[str, Any],
    conversation_id: str,
    message_id: str,
    tool_calls: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "finish_reason": finish_reason(status),
                "logprobs": None,
            }
        ],
        "usage": usage_view(usage),
        # extensions
        "conversation_id": conversation_id,
        "message_id": message_id,
        "status": status,
        "server_tool_calls": list(tool_calls),
    }


def chunk(
    completion_id: str,
    created: int,
    conversation_id: str,
    delta: Mapping[str, Any] | None = None,
    *,
    finish: str | None = None,
    **extensions: Any,
) -> dict[str, Any]:
    """One ``chat.completion.chunk``; extensions (``draft``, ``tool_call``, ``final`` ...)
    are top-level fields, which OpenAI clients keep and ignore."""
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": MODEL,
        "choices": [
            {"index": 0, "delta": dict(delta or {}), "finish_reason": finish, "logprobs": None}
        ],
        "conversation_id": conversation_id,
        **extensions,
    }


def usage_chunk(
    completion_id: str, created: int, conversation_id: str, usage: Mapping[str, Any]
) -> dict[str, Any]:
    """The last chunk with ``stream_options.include_usage``: no choices, the usage."""
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": MODEL,
        "choices": [],
        "usage": usage_view(usage),
        "conversation_id": conversation_id,
    }


def sse(data: Mapping[str, Any] | str) -> bytes:
    """One server-sent event: ``data: <json>`` and a blank line."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {text}\n\n".encode()


SSE_DONE: Final = sse("[DONE]")


# the committed prefix ----------------------------------------------------------------------


def _visible_words(text: str) -> str:
    """The draft's text before its first masked position (all of it when none is masked)."""
    return text.split(MASK, 1)[0]


def _last_space(text: str) -> int:
    for index in range(len(text) - 1, -1, -1):
        if text[index].isspace():
            return index
    return -1


class CommittedText:
    """Turns whole-reply drafts into appended deltas of text that will not change.

    A diffusion reply is a sequence of snapshots, and a snapshot's words may still change:
    positions are re-masked, placeholders resolve, a later round replaces a tool call. Text
    counts as committed here when two consecutive drafts of one round agree on it, it has no
    masked position before it, and a whitespace follows it in both (a word still being
    written is held back). The final reply is the truth: its text beyond what was sent is the
    last delta. If the final does not extend what was sent (the reply was replaced, e.g. by
    an honest one after a claim no tool supports), ``replaced`` is set and nothing more is
    appended: the last chunk's ``final.text`` is the reply.
    """

    def __init__(self) -> None:
        self.sent = ""
        self.replaced = False
        self._previous: str | None = None
        self._round: int | None = None
        self._diverged = False

    def draft(self, text: str, round_: int) -> str:
        """The delta this draft commits ('' when none)."""
        visible = _visible_words(text)
        if round_ != self._round:
            self._round, self._previous = round_, visible
            return ""
        previous, self._previous = self._previous or "", visible
        if self._diverged:
            return ""
        common = 0
        limit = min(len(previous), len(visible))
        while common < limit and previous[common] == visible[common]:
            common += 1
        # Only up to a whitespace both drafts have, so no word is cut.
        end = _last_space(visible[:common])
        if end < 0:
            return ""
        agreed = visible[:end].rstrip()
        if agreed.startswith(self.sent):
            delta = agreed[len(self.sent) :]
            self.sent = agreed if delta else self.sent
            return delta
        if not self.sent.startswith(agreed):
            # Drafts changed what was sent: nothing more from drafts, the final decides.
            self._diverged = True
        return ""

    def final(self, text: str, status: str = "complete") -> str:
        """The last delta: the final reply beyond what was sent, or '' if it was replaced.

        A cancelled reply ends where it was stopped: nothing is appended."""
        if status == "cancelled":
            return ""
        if text.startswith(self.sent):
            delta = text[len(self.sent) :]
            self.sent = text
            return delta
        self.replaced = True
        return ""
