"""Draft text of a reply being decoded, re-decoding only the tokens that may still change."""

from __future__ import annotations

import codecs
import weakref
from collections.abc import Sequence
from typing import Any

from transformers import PreTrainedTokenizerFast

from dlm_runtime.tokenizer import DraftText, TokenSpan, _token_table, decode_draft

_REPLACEMENT = "\ufffd".encode()
# Per tokenizer: token id -> its text when it decodes on its own with no UTF-8 bytes left
# pending (most tokens), or None. Filled lazily; shared by every request.
_PIECES: weakref.WeakKeyDictionary[Any, dict[int, str | None]] = weakref.WeakKeyDictionary()


class DraftDecoder:
    """Draft text of one reply that re-decodes only the part that may still change.

    The caller says how many leading ids are final (``stable``); the text of the longest final
    prefix that ends on a whole UTF-8 character is kept, the rest is decoded per call (by a
    lookup per token when no character spans two tokens, else by ``decode_draft``). The
    result always equals ``decode_draft(tok, ids, mask_id, placeholder)``.
    """

    def __init__(self, tok: PreTrainedTokenizerFast, mask_id: int, placeholder: str) -> None:
        self._tok = tok
        self._mask_id = mask_id
        self._placeholder = placeholder
        self._table, self._special = _token_table(tok)
        self._pieces = _PIECES.setdefault(tok, {})
        self._cut = 0
        self._text = ""
        self._spans: list[TokenSpan] = []

    def _bytes(self, token: int) -> bytes:
        return self._table[token] if 0 <= token < len(self._table) else _REPLACEMENT

    def _clean(self, ids: Sequence[int], cut: int) -> bool:
        """True when decoding ``ids[:cut]`` leaves no bytes of an unfinished character."""
        data = b""
        i = cut - 1
        # A pending sequence is at most 3 bytes after its lead byte: 4 bytes back suffice.
        while i >= 0 and len(data) < 4:
            token = ids[i]
            if token == self._mask_id or token in self._special:
                break  # decode_draft restarts its UTF-8 decoder there
            data = self._bytes(token) + data
            i -= 1
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        decoder.decode(data)
        return decoder.getstate()[0] == b""

    def _piece(self, token: int) -> str | None:
        if token in self._special:
            return ""  # decode_draft skips special tokens
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text = decoder.decode(self._bytes(token))
        piece = text if decoder.getstate()[0] == b"" else None
        self._pieces[token] = piece
        return piece

    def _decode_from(self, ids: Sequence[int], offset: int) -> DraftText:
        """``decode_draft(ids)`` with every span shifted by ``offset``."""
        pieces, mask_id, placeholder = self._pieces, self._mask_id, self._placeholder
        parts: list[str] = []
        spans: list[TokenSpan] = []
        pos = offset
        for token in ids:
            if token == mask_id:
                piece, masked = placeholder, True
            else:
                piece_or_none = pieces[token] if token in pieces else self._piece(token)
                if piece_or_none is None:  # a character spans tokens: the general decoder
                    part = decode_draft(self._tok, ids, mask_id, placeholder)
                    shifted = [
                        TokenSpan(s.start + offset, s.end + offset, s.masked) for s in part.spans
                    ]
                    return DraftText(part.text, shifted)
                piece, masked = piece_or_none, False
            end = pos + len(piece)
            parts.append(piece)
            spans.append(TokenSpan(pos, end, masked))
            pos = end
        return DraftText("".join(parts), spans)

    def _advance(self, ids: Sequence[int], stable: int) -> None:
        for cut in range(stable, max(self._cut, stable - 8), -1):
            if self._clean(ids, cut):
                part = self._decode_from(ids[self._cut : cut], len(self._text))
                self._spans.extend(part.spans)
                self._text += part.text
                self._cut = cut
                return

    def decode(self, ids: Sequence[int], stable: int) -> DraftText:
        """Text and spans of ``ids``, of which the first ``stable`` never change again."""
        if stable > self._cut:
            self._advance(ids, stable)
        tail = self._decode_from(ids[self._cut :], len(self._text))
        return DraftText(self._text + tail.text, self._spans + tail.spans)
