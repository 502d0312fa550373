"""Errors the agent loop raises out of a turn, for the worker to classify (workers/failures.py).

A failure the loop can answer itself (an unusable model output, a prompt that cannot fit)
ends the turn with a fallback reply (``TurnFinished.problem``) instead of raising.
"""

from __future__ import annotations


class GenerationFailed(RuntimeError):
    """The engine ended a request with an error (``Final.finish_reason == "error"``).

    ``error`` is the engine's description: a failed forward (out of memory, a bug in a
    decoding state), or the engine itself gone ("engine failed: ...").
    """

    def __init__(self, request_id: str, error: str) -> None:
        super().__init__(f"generation of {request_id} failed: {error}")
        self.request_id = request_id
        self.error = error


class PromptTooLong(ValueError):
    """Even trimmed, the prompt and the room for the reply exceed the model's context."""

    def __init__(self, prompt_tokens: int, limit: int, reply_room: int) -> None:
        super().__init__(
            f"prompt too long even trimmed: {prompt_tokens} prompt tokens, at most {limit} "
            f"fit beside the {reply_room} positions kept for the reply"
        )
        self.prompt_tokens = prompt_tokens
        self.limit = limit
        self.reply_room = reply_room
