"""The outbound queue: drafts coalesce for a slow reader, every other frame is kept."""

from __future__ import annotations

import asyncio
from typing import Any

from web.protocol import CloseCode
from web.relay import Close, OutboundQueue


def draft(seq: int, turn: str = "t1") -> dict[str, Any]:
    return {"type": "draft", "conversation_id": "c", "turn_id": turn, "seq": seq, "text": "x"}


def event(kind: str, seq: int, turn: str = "t1") -> dict[str, Any]:
    return {"type": kind, "conversation_id": "c", "turn_id": turn, "seq": seq}


async def drain(queue: OutboundQueue) -> list[Any]:
    out = []
    while len(queue):
        out.append(await queue.get())
    return out


async def test_slow_reader_gets_the_newest_draft_only() -> None:
    """Unsent drafts of a turn are replaced by the newest one; seqs stay increasing."""
    counted: list[int] = []
    queue = OutboundQueue(on_coalesced=counted.append)
    for seq in range(1, 6):
        queue.put(draft(seq))
    assert [f["seq"] for f in await drain(queue)] == [5]
    assert queue.coalesced == 4 and sum(counted) == 4


async def test_other_frames_are_never_dropped() -> None:
    """tool_call, tool_result, errors and other turns' drafts all stay, in order."""
    queue = OutboundQueue()
    frames = [
        draft(1),
        event("tool_call", 2),
        draft(3, turn="t2"),
        event("tool_result", 4),
        {"type": "error", "code": "busy"},
        draft(5),
    ]
    for frame in frames:
        queue.put(frame)
    sent = await drain(queue)
    assert [f.get("seq") for f in sent] == [2, 3, 4, None, 5]


async def test_final_supersedes_unsent_drafts() -> None:
    """The final is the whole reply: its turn's unsent drafts go."""
    queue = OutboundQueue()
    queue.put(draft(1))
    queue.put(draft(2, turn="t0"))
    queue.put(event("final", 3))
    assert [f["seq"] for f in await drain(queue)] == [2, 3]


async def test_a_reader_keeping_up_sees_every_draft() -> None:
    """Drafts taken as they come are all delivered."""
    queue = OutboundQueue()
    got = []
    for seq in range(1, 4):
        queue.put(draft(seq))
        got.append(await queue.get())
    assert [f["seq"] for f in got] == [1, 2, 3] and queue.coalesced == 0


async def test_overflow_closes_instead_of_dropping() -> None:
    """Too many unsent frames: the queue closes (the client resumes), it drops nothing silently."""
    queue = OutboundQueue(max_frames=3)
    for seq in range(1, 4):
        assert queue.put(event("tool_call", seq))
    assert not queue.put(event("tool_call", 4))
    assert queue.closing
    closing = await queue.get()
    assert isinstance(closing, Close) and closing.code == CloseCode.TOO_SLOW
    assert not queue.put(event("tool_call", 5))


async def test_get_waits_for_a_frame() -> None:
    """get blocks until something is put."""
    queue = OutboundQueue()
    waiter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert not waiter.done()
    queue.put(event("final", 1))
    assert (await waiter)["seq"] == 1
