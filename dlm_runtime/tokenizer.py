"""Byte-level BPE tokenizer, chat template and draft decoding for the diffusion chat model.

The special tokens live here and only here; they get the fixed ids ``0..n-1`` in the order of
:data:`SPECIAL_TOKENS` when a tokenizer is trained. Integer ids are deliberately *not* exported:
read them from a loaded tokenizer (:func:`special_token_ids`) or, in the sampler, from the model
config (``mask_token_id`` / ``eos_token_id``).

Chat format (one string, no whitespace added between turns)::

    <|bos|><|system|>...<|end|><|user|>...<|end|><|assistant|>...<|tool_call|>{json}<|/tool_call|><|end|>
    <|tool|>...<|end|><|assistant|>            <- generation prompt

Use :func:`encode_chat` to turn messages into ids: it always returns ``list[int]`` and encodes
message text as plain text, so a message containing e.g. the literal ``<|end|>`` cannot inject a
control token (``apply_chat_template(tokenize=True)`` would turn it into the real token).
"""

from __future__ import annotations

import codecs
import json
import os
import re
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

__all__ = [
    "ASSISTANT_TOKEN",
    "BOS_TOKEN",
    "CHAT_TEMPLATE",
    "END_TOKEN",
    "MASK_TOKEN",
    "PAD_TOKEN",
    "ROLES",
    "ROLE_TOKENS",
    "SPECIAL_TOKENS",
    "SYSTEM_TOKEN",
    "TOOL_CALL_CLOSE_TOKEN",
    "TOOL_CALL_OPEN_TOKEN",
    "TOOL_TOKEN",
    "USER_TOKEN",
    "DraftText",
    "SpecialTokens",
    "TokenSpan",
    "decode_draft",
    "encode_chat",
    "encode_text",
    "load_tokenizer",
    "save_tokenizer",
    "special_token_ids",
    "tool_call_json",
    "train_tokenizer",
    "wrap_tokenizer",
]

PAD_TOKEN = "<|pad|>"
MASK_TOKEN = "<|mask|>"
BOS_TOKEN = "<|bos|>"
SYSTEM_TOKEN = "<|system|>"
USER_TOKEN = "<|user|>"
ASSISTANT_TOKEN = "<|assistant|>"
TOOL_TOKEN = "<|tool|>"  # opens a tool-result turn
END_TOKEN = "<|end|>"  # ends a turn; for the assistant it is the end-of-reply token
TOOL_CALL_OPEN_TOKEN = "<|tool_call|>"
TOOL_CALL_CLOSE_TOKEN = "<|/tool_call|>"

# Order fixes the ids (pad = 0). No <|unk|>: byte-level BPE can encode every string.
SPECIAL_TOKENS: tuple[str, ...] = (
    PAD_TOKEN,
    MASK_TOKEN,
    BOS_TOKEN,
    SYSTEM_TOKEN,
    USER_TOKEN,
    ASSISTANT_TOKEN,
    TOOL_TOKEN,
    END_TOKEN,
    TOOL_CALL_OPEN_TOKEN,
    TOOL_CALL_CLOSE_TOKEN,
)

ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")
ROLE_TOKENS: dict[str, str] = {
    "system": SYSTEM_TOKEN,
    "user": USER_TOKEN,
    "assistant": ASSISTANT_TOKEN,
    "tool": TOOL_TOKEN,
}

# The template writes the token strings literally (not ``'<|' ~ role ~ '|>'``) so that
# transformers' ``sanitize_control_tokens`` can recognise them; a test checks they match the
# constants above. Tool-call JSON uses json.dumps' default separators, exactly like
# :func:`tool_call_json`.
CHAT_TEMPLATE = (
    "{{- '<|bos|>' -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{{- '<|system|>' -}}"
    "{%- elif message['role'] == 'user' -%}{{- '<|user|>' -}}"
    "{%- elif message['role'] == 'assistant' -%}{{- '<|assistant|>' -}}"
    "{%- elif message['role'] == 'tool' -%}{{- '<|tool|>' -}}"
    "{%- else -%}{{- raise_exception('unknown chat role: ' ~ message['role']) -}}"
    "{%- endif -%}"
    "{%- if message['content'] is defined and message['content'] is not none -%}"
    "{%- if message['content'] is not string -%}"
    "{{- raise_exception('message content must be a string') -}}"
    "{%- endif -%}"
    "{{- message['content'] -}}"
    "{%- endif -%}"
    "{%- if message['role'] == 'assistant' and message['tool_calls'] is defined"
    " and message['tool_calls'] -%}"
    "{%- for call in message['tool_calls'] -%}"
    "{%- set fn = call['function'] if call['function'] is defined else call -%}"
    "{%- set args = fn['arguments'] if fn['arguments'] is defined else {} -%}"
    "{{- '<|tool_call|>' -}}"
    "{%- if args is string -%}"
    "{{- '{\"name\": ' ~ (fn['name'] | tojson) ~ ', \"arguments\": ' ~ args ~ '}' -}}"
    "{%- else -%}"
    "{{- {'name': fn['name'], 'arguments': args} | tojson -}}"
    "{%- endif -%}"
    "{{- '<|/tool_call|>' -}}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|end|>' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|assistant|>' -}}{%- endif -%}"
)


# --------------------------------------------------------------------------------------------
# Training, wrapping, saving, loading
# --------------------------------------------------------------------------------------------


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 8192,
    show_progress: bool = False,
    added_words: Sequence[str] = (),
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts``; specials get ids ``0..n-1`` in order.

    ``added_words`` become single tokens after the BPE vocabulary (for example the
    placeholders of an entity-slot scheme, which a small model should write as one token).
    Unlike specials they are ordinary text: :func:`encode_text` produces them, and they may
    contain no whitespace.
    """
    min_size = len(SPECIAL_TOKENS) + 256  # specials + the 256 byte symbols
    if vocab_size < min_size:
        raise ValueError(f"vocab_size must be >= {min_size}, got {vocab_size}")
    backend = Tokenizer(models.BPE())
    # add_prefix_space=False keeps decode(encode(s)) == s (no invented leading space).
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        # All 256 bytes up front, so text unseen in training still encodes without <unk>.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    for expected_id, token in enumerate(SPECIAL_TOKENS):
        if backend.token_to_id(token) != expected_id:  # pragma: no cover - tokenizers invariant
            raise RuntimeError(f"special token {token!r} did not get id {expected_id}")
    _add_words(backend, added_words)
    return wrap_tokenizer(backend)


def _add_words(backend: Tokenizer, words: Sequence[str]) -> None:
    if any(not word or any(ch.isspace() for ch in word) for word in words):
        raise ValueError("added words must be non-empty and contain no whitespace")
    backend.add_tokens([AddedToken(word, special=False, normalized=False) for word in words])


def extend_tokenizer(
    tok: PreTrainedTokenizerFast, added_words: Sequence[str]
) -> PreTrainedTokenizerFast:
    """A copy of ``tok`` with the ``added_words`` it lacks appended as single tokens.

    Existing ids keep their meaning, so a trained model continues with the new words as
    new embedding rows (fine-tuning a checkpoint onto a wider slot scheme).
    """
    backend = Tokenizer.from_str(tok.backend_tokenizer.to_str())
    vocab = backend.get_vocab(with_added_tokens=True)
    _add_words(backend, [word for word in added_words if word not in vocab])
    return wrap_tokenizer(backend)


def wrap_tokenizer(backend: Tokenizer) -> PreTrainedTokenizerFast:
    """Wrap a ``tokenizers.Tokenizer`` holding our specials as a transformers tokenizer."""
    # Typed as Any: transformers 5 leaves the constructor unannotated (mypy no-untyped-call).
    factory: Any = PreTrainedTokenizerFast
    tok: PreTrainedTokenizerFast = factory(
        tokenizer_object=backend,
        pad_token=PAD_TOKEN,
        mask_token=MASK_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=END_TOKEN,
        # transformers 5 name; the 4.x name is additional_special_tokens.
        extra_special_tokens=[t for t in SPECIAL_TOKENS if t not in _NAMED_SPECIALS],
        additional_special_tokens=[t for t in SPECIAL_TOKENS if t not in _NAMED_SPECIALS],
        # Cleanup would rewrite " ." as "." and break the decode(encode(s)) == s round trip.
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = CHAT_TEMPLATE
    _check_specials(tok)
    return tok


_NAMED_SPECIALS = frozenset({PAD_TOKEN, MASK_TOKEN, BOS_TOKEN, END_TOKEN})


def save_tokenizer(tok: PreTrainedTokenizerFast, directory: str | os.PathLike[str]) -> None:
    """Save ``tok`` (tokenizer.json, tokenizer_config.json, chat template) to ``directory``."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(directory))


def load_tokenizer(directory: str | os.PathLike[str]) -> PreTrainedTokenizerFast:
    """Load a checkpoint's tokenizer from a local directory (offline).

    A native tokenizer (saved by :func:`save_tokenizer`) must hold every special token at its
    fixed id. A foreign one (no ``<|pad|>`` token: LLaDA's, for example) is loaded as it is,
    with its own chat template (``chat_template.jinja`` or ``chat_template`` in
    ``tokenizer_config.json``), which it must have; see :mod:`dlm_runtime.chat_format`.
    """
    path = Path(directory)
    if not (path / "tokenizer.json").is_file():
        raise FileNotFoundError(f"no tokenizer.json in {path}")
    tok: PreTrainedTokenizerFast = PreTrainedTokenizerFast.from_pretrained(
        str(path), local_files_only=True
    )
    if PAD_TOKEN not in tok.get_vocab():
        if not tok.chat_template:
            raise ValueError(
                f"{path}: the tokenizer has no chat template (add chat_template.jinja, or "
                "chat_template in tokenizer_config.json)"
            )
        return tok
    if not tok.chat_template:
        tok.chat_template = CHAT_TEMPLATE
    tok.clean_up_tokenization_spaces = False
    _check_specials(tok)
    return tok


def _check_specials(tok: PreTrainedTokenizerFast) -> None:
    """Raise ValueError unless every special token is a single token with its fixed id."""
    for expected_id, token in enumerate(SPECIAL_TOKENS):
        got = tok.convert_tokens_to_ids(token)
        if got != expected_id:
            raise ValueError(f"tokenizer maps {token!r} to {got!r}, expected id {expected_id}")


# --------------------------------------------------------------------------------------------
# Special token ids
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpecialTokens:
    """Ids of the special tokens of one loaded tokenizer."""

    pad: int
    mask: int
    bos: int
    system: int
    user: int
    assistant: int
    tool: int
    end: int
    tool_call_open: int
    tool_call_close: int

    @property
    def role_ids(self) -> dict[str, int]:
        """Role name -> id of the token that opens a turn of that role."""
        return {
            "system": self.system,
            "user": self.user,
            "assistant": self.assistant,
            "tool": self.tool,
        }

    @property
    def all_ids(self) -> frozenset[int]:
        """Every special id (handy for suppressing them in logits)."""
        return frozenset(
            (
                self.pad,
                self.mask,
                self.bos,
                self.system,
                self.user,
                self.assistant,
                self.tool,
                self.end,
                self.tool_call_open,
                self.tool_call_close,
            )
        )


def special_token_ids(tok: PreTrainedTokenizerFast) -> SpecialTokens:
    """Look up the special token ids in ``tok`` (raises ValueError if one is missing)."""

    def one(token: str) -> int:
        got = tok.convert_tokens_to_ids(token)
        if not isinstance(got, int) or got == tok.unk_token_id:
            raise ValueError(f"tokenizer has no single token for {token!r}")
        return got

    return SpecialTokens(
        pad=one(PAD_TOKEN),
        mask=one(MASK_TOKEN),
        bos=one(BOS_TOKEN),
        system=one(SYSTEM_TOKEN),
        user=one(USER_TOKEN),
        assistant=one(ASSISTANT_TOKEN),
        tool=one(TOOL_TOKEN),
        end=one(END_TOKEN),
        tool_call_open=one(TOOL_CALL_OPEN_TOKEN),
        tool_call_close=one(TOOL_CALL_CLOSE_TOKEN),
    )


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------


def encode_text(tok: PreTrainedTokenizerFast, text: str) -> list[int]:
    """Encode ``text`` as plain text: special-token literals in it become ordinary bytes.

    Runs the backend's normalizer, pre-tokenizer and model directly instead of toggling the
    shared ``encode_special_tokens`` flag, so it is safe to call from several threads.
    """
    text = _valid_unicode(text)
    backend: Tokenizer = tok.backend_tokenizer
    words, pattern = _added_words(tok)
    ids: list[int] = []
    for index, chunk in enumerate(pattern.split(text) if pattern else [text]):
        if index % 2:  # the splitting pattern's capture: one added word
            ids.append(words[chunk])
        elif chunk:
            ids.extend(_encode_plain(backend, chunk))
    return ids


_ADDED_CACHE: weakref.WeakKeyDictionary[Any, tuple[dict[str, int], re.Pattern[str] | None]] = (
    weakref.WeakKeyDictionary()
)


def _added_words(tok: PreTrainedTokenizerFast) -> tuple[dict[str, int], re.Pattern[str] | None]:
    """The tokenizer's non-special added tokens and a pattern that splits text on them."""
    cached = _ADDED_CACHE.get(tok)
    if cached is None:
        added = tok.backend_tokenizer.get_added_tokens_decoder()
        words = {t.content: i for i, t in added.items() if not t.special}
        pattern = None
        if words:
            alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
            pattern = re.compile(f"({alternatives})")
        cached = (words, pattern)
        _ADDED_CACHE[tok] = cached
    return cached


def _encode_plain(backend: Tokenizer, text: str) -> list[int]:
    if backend.normalizer is not None:
        text = backend.normalizer.normalize_str(text)
    pieces: list[tuple[str, Any]]
    if backend.pre_tokenizer is not None:
        pieces = backend.pre_tokenizer.pre_tokenize_str(text)
    else:
        pieces = [(text, None)]
    ids: list[int] = []
    for piece, _ in pieces:
        ids.extend(token.id for token in backend.model.tokenize(piece))
    return ids


def _valid_unicode(text: str) -> str:
    """Join surrogate pairs and replace lone surrogates (legal in JSON, not in UTF-8) by U+FFFD."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def tool_call_json(call: Mapping[str, Any]) -> str:
    """Render one tool call as the chat template does: ``{"name": ..., "arguments": ...}``.

    Accepts ``{"name", "arguments"}`` or the OpenAI shape ``{"function": {"name", "arguments"}}``;
    string arguments are taken to be JSON already and inserted verbatim.
    """
    fn = call.get("function", call)
    name = fn["name"]
    args = fn.get("arguments", {})
    if isinstance(args, str):
        return '{"name": ' + json.dumps(name, ensure_ascii=False) + ', "arguments": ' + args + "}"
    return json.dumps({"name": name, "arguments": args}, ensure_ascii=False)


def encode_chat(
    tok: PreTrainedTokenizerFast,
    messages: Sequence[Mapping[str, Any]],
    add_generation_prompt: bool = True,
    text_ids: Callable[[str], list[int]] | None = None,
) -> list[int]:
    """Token ids of ``messages`` in the chat format; identical to the template for benign text.

    Unlike ``apply_chat_template(tokenize=True)`` (whose return type changed between
    transformers 4 and 5) this always returns ``list[int]`` and never lets message text
    produce control tokens. ``text_ids`` replaces ``encode_text(tok, ...)`` for the texts (a
    memo of it, when many chats share their messages).
    """
    encode = text_ids if text_ids is not None else partial(encode_text, tok)
    sp = special_token_ids(tok)
    ids = [sp.bos]
    for i, message in enumerate(messages):
        role = message.get("role")
        if role not in ROLES:
            raise ValueError(f"message {i}: unknown chat role {role!r}")
        ids.append(sp.role_ids[str(role)])
        content = message.get("content")
        if content is not None:
            if not isinstance(content, str):
                raise ValueError(f"message {i}: content must be a string")
            ids.extend(encode(content))
        if role == "assistant":
            for call in message.get("tool_calls") or ():
                ids.append(sp.tool_call_open)
                ids.extend(encode(tool_call_json(call)))
                ids.append(sp.tool_call_close)
        ids.append(sp.end)
    if add_generation_prompt:
        ids.append(sp.assistant)
    return ids


# --------------------------------------------------------------------------------------------
# Draft decoding
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenSpan:
    """Characters ``[start, end)`` of the draft text produced by one token position."""

    start: int
    end: int
    masked: bool


@dataclass(frozen=True)
class DraftText:
    """A partially masked reply as text, with one span per token position."""

    text: str
    spans: list[TokenSpan]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table used by the ByteLevel pre-tokenizer."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs, strict=True)}


_UNICODE_TO_BYTE = {c: b for b, c in _bytes_to_unicode().items()}
_REPLACEMENT = "\ufffd".encode()
_TABLE_CACHE: weakref.WeakKeyDictionary[Any, tuple[list[bytes], frozenset[int]]] = (
    weakref.WeakKeyDictionary()
)


def _token_table(tok: PreTrainedTokenizerFast) -> tuple[list[bytes], frozenset[int]]:
    """Raw UTF-8 bytes of every token id, and the set of special ids (cached per tokenizer)."""
    cached = _TABLE_CACHE.get(tok)
    if cached is not None:
        return cached
    backend: Tokenizer = tok.backend_tokenizer
    size = backend.get_vocab_size(with_added_tokens=True)
    added = backend.get_added_tokens_decoder()
    special = frozenset(i for i, t in added.items() if t.special)
    table: list[bytes] = []
    for i in range(size):
        piece = backend.id_to_token(i)
        if piece is None:
            table.append(_REPLACEMENT)
        elif i in added:
            table.append(piece.encode())
        elif all(ch in _UNICODE_TO_BYTE for ch in piece):
            table.append(bytes(_UNICODE_TO_BYTE[ch] for ch in piece))
        else:  # not a byte-level token (foreign tokenizer): let the decoder handle it
            table.append(backend.decode([i], skip_special_tokens=False).encode())
    result = (table, special)
    _TABLE_CACHE[tok] = result
    return result


def decode_draft(
    tok: PreTrainedTokenizerFast,
    ids: Sequence[int] | torch.Tensor,
    mask_id: int,
    mask_placeholder: str = "░",
    skip_special_tokens: bool = True,
) -> DraftText:
    """Decode a partially masked reply; masked positions show as ``mask_placeholder``.

    Runs of unmasked tokens are decoded together because a byte-level token may hold part of
    a UTF-8 character: the character is attributed to the token that completes it (earlier
    tokens of it get an empty span); bytes left incomplete at a mask or at the end become
    U+FFFD. Unknown ids also decode as U+FFFD. Never raises on token content.
    """
    id_list = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
    table, special = _token_table(tok)
    parts: list[str] = []
    spans: list[TokenSpan] = []
    pos = 0
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def flush() -> None:
        # Dangling bytes of an unfinished character go to the previous token's span.
        nonlocal pos
        tail = decoder.decode(b"", final=True)
        decoder.reset()
        if tail and spans:
            parts.append(tail)
            last = spans[-1]
            spans[-1] = TokenSpan(last.start, last.end + len(tail), last.masked)
            pos += len(tail)

    for raw in id_list:
        token_id = int(raw)
        if token_id == mask_id:
            flush()
            parts.append(mask_placeholder)
            spans.append(TokenSpan(pos, pos + len(mask_placeholder), True))
            pos += len(mask_placeholder)
            continue
        if token_id in special:
            flush()
            piece = "" if skip_special_tokens else table[token_id].decode()
        else:
            data = table[token_id] if 0 <= token_id < len(table) else _REPLACEMENT
            piece = decoder.decode(data)
        parts.append(piece)
        spans.append(TokenSpan(pos, pos + len(piece), False))
        pos += len(piece)
    flush()
    return DraftText("".join(parts), spans)
