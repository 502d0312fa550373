"""A checkpoint's chat format: the native one, or a foreign checkpoint's own chat template.

:func:`chat_format` looks at a loaded tokenizer and returns what a caller needs to prompt the
model and read its reply, the same way for both:

* the native tokenizer (our special tokens at their fixed ids): :func:`encode_chat`, the tool
  call between ``<|tool_call|>`` and ``<|/tool_call|>``, the reply ending at ``<|end|>``;
* any other tokenizer (LLaDA's, for example): its own chat template through
  ``apply_chat_template``, its end tokens (``eos_token`` and the usual end-of-turn tokens it
  has), and tools offered through the template's own ``tools`` argument where the template
  reads it. A template without a tool format gets tool calls written into the assistant
  message as JSON text and tool results as ``tool`` messages (a ``user`` message where the
  template refuses the role).

Message text is rendered as text: a literal special token in it (``<|eot_id|>``) is broken
with a zero-width space before encoding, so it cannot inject a control token.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerFast

from dlm_runtime.tokenizer import (
    SPECIAL_TOKENS,
    encode_chat,
    special_token_ids,
    tool_call_json,
)

__all__ = ["END_OF_TURN_TOKENS", "ChatFormat", "chat_format", "is_native_tokenizer"]

# End-of-turn tokens of the common chat families; those a tokenizer has end a reply.
END_OF_TURN_TOKENS = (
    "<|eot_id|>",  # LLaDA, Llama 3
    "<|endoftext|>",  # LLaDA's end of text, Qwen/Dream
    "<|im_end|>",  # ChatML (Qwen, Dream)
    "<end_of_turn>",  # Gemma
    "<turn|>",  # Gemma 4, DiffusionGemma
    "</s>",
    "<|end|>",
)

_ZERO_WIDTH = "\u200b"


def is_native_tokenizer(tok: PreTrainedTokenizerFast) -> bool:
    """Whether ``tok`` holds the native special tokens at their fixed ids."""
    return all(
        tok.convert_tokens_to_ids(token) == index for index, token in enumerate(SPECIAL_TOKENS)
    )


@dataclass(frozen=True)
class ChatFormat:
    """How to prompt one tokenizer's model and where its reply ends."""

    tokenizer: PreTrainedTokenizerFast
    native: bool
    end_ids: frozenset[int]  # a reply ends at the first of these
    tool_format: bool  # the template renders ``tools`` itself (foreign) / always (native)
    tool_call_open: int | None  # native: the id that opens a tool call

    def encode(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = True,
    ) -> list[int]:
        """Prompt ids for ``messages``; ``tools`` (OpenAI function specs) go to the template.

        The native format ignores ``tools`` (the bundled model was trained without them in
        its prompt) and is byte-identical to :func:`encode_chat`.
        """
        if self.native:
            return encode_chat(self.tokenizer, messages, add_generation_prompt)
        text = self.render(messages, tools, add_generation_prompt)
        ids: list[int] = self.tokenizer.encode(text, add_special_tokens=False)
        return ids

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = True,
    ) -> str:
        """The foreign template's text for ``messages`` (message text sanitised)."""
        from jinja2 import TemplateError

        prepared = [self._message(m) for m in messages]
        kwargs: dict[str, Any] = {}
        if tools and self.tool_format:
            kwargs["tools"] = [dict(t) for t in tools]
        try:
            return self._apply(prepared, add_generation_prompt, kwargs)
        except TemplateError:
            if not any(m["role"] == "tool" for m in prepared):
                raise
        # The template refuses a "tool" role: tool results become user messages.
        fallback = [
            {"role": "user", "content": "Tool result: " + str(m.get("content", ""))}
            if m["role"] == "tool"
            else m
            for m in prepared
        ]
        return self._apply(_merge_same_role(fallback), add_generation_prompt, kwargs)

    def _apply(
        self, messages: list[dict[str, Any]], add_generation_prompt: bool, kwargs: dict[str, Any]
    ) -> str:
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt, **kwargs
        )
        return str(text)

    def _message(self, message: Mapping[str, Any]) -> dict[str, Any]:
        role = str(message.get("role"))
        content = message.get("content")
        out: dict[str, Any] = {"role": role, "content": self._sanitise(content or "")}
        calls = list(message.get("tool_calls") or ())
        if calls:
            if self.tool_format:
                # Round-tripped through sanitised JSON: argument strings are message text too.
                out["tool_calls"] = [
                    json.loads(self._sanitise(json.dumps(_openai_call(call)))) for call in calls
                ]
            else:
                text = "\n".join(self._sanitise(tool_call_json(call)) for call in calls)
                out["content"] = (out["content"] + "\n" + text).strip()
        return out

    def _sanitise(self, text: str) -> str:
        for token in _special_strings(self.tokenizer):
            if token in text:
                text = text.replace(token, token[0] + _ZERO_WIDTH + token[1:])
        return text

    def reply_ids(self, token_ids: Sequence[int]) -> list[int]:
        """The reply's ids up to (not including) its first end token."""
        ids = list(token_ids)
        for index, token in enumerate(ids):
            if token in self.end_ids:
                return ids[:index]
        return ids

    def reply_text(self, token_ids: Sequence[int]) -> str:
        """Foreign replies: the text up to the first end token, special tokens dropped."""
        text = self.tokenizer.decode(self.reply_ids(token_ids), skip_special_tokens=True)
        return str(text).strip()


def _openai_call(call: Mapping[str, Any]) -> dict[str, Any]:
    fn = call.get("function", call)
    arguments = fn.get("arguments", {})
    if isinstance(arguments, str):
        with contextlib.suppress(ValueError):
            arguments = json.loads(arguments)
    return {"type": "function", "function": {"name": fn["name"], "arguments": arguments}}


def _merge_same_role(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Adjacent user messages joined (templates that require alternating roles)."""
    merged: list[dict[str, Any]] = []
    for message in messages:
        if merged and message["role"] == "user" and merged[-1]["role"] == "user":
            merged[-1] = {
                **merged[-1],
                "content": merged[-1]["content"] + "\n" + message["content"],
            }
        else:
            merged.append(message)
    return merged


def _special_strings(tok: PreTrainedTokenizerFast) -> list[str]:
    added = tok.backend_tokenizer.get_added_tokens_decoder()
    return sorted({t.content for t in added.values() if t.special and t.content}, key=len)[::-1]


def _end_ids(tok: PreTrainedTokenizerFast, extra: Sequence[int]) -> frozenset[int]:
    ids = {int(i) for i in extra}
    if tok.eos_token_id is not None:
        ids.add(int(tok.eos_token_id))
    vocab = tok.get_vocab()
    ids.update(vocab[token] for token in END_OF_TURN_TOKENS if token in vocab)
    return frozenset(ids)


def _reads_tools(template: Any) -> bool:
    source = template if isinstance(template, str) else json.dumps(template)
    return "tools" in source


def chat_format(tok: PreTrainedTokenizerFast, end_ids: Sequence[int] = ()) -> ChatFormat:
    """The chat format of ``tok``; ``end_ids`` adds the model config's end ids (foreign)."""
    if is_native_tokenizer(tok):
        sp = special_token_ids(tok)
        return ChatFormat(tok, True, frozenset({sp.end}), True, sp.tool_call_open)
    if not tok.chat_template:
        raise ValueError(
            "the tokenizer has no chat template (chat_template.jinja or chat_template in "
            "tokenizer_config.json)"
        )
    return ChatFormat(tok, False, _end_ids(tok, end_ids), _reads_tools(tok.chat_template), None)
