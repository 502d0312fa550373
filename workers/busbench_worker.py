"""The worker side of ``python -m workers.busbench``: the real worker with a null engine."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator

from assistant.bus.connection import connect
from assistant.bus.keys import Keys
from assistant.bus.schema import DraftEvent, FinalEvent
from dlm_runtime.engine import Draft, Final, GenerationRequest
from workers.publisher import TurnPublisher
from workers.turns import TurnResult, TurnState
from workers.worker import Worker, WorkerOptions

REPLY = "Your order has shipped and arrives tomorrow."
USAGE = {"steps": 1, "forward_passes": 1, "tokens": 8, "milliseconds": 0.0}


class NullEngine:
    """Stands in for the engine where the worker needs one (cancellation); never generates."""

    async def submit(self, request: GenerationRequest) -> AsyncIterator[Draft | Final]:
        raise NotImplementedError("the null handler never calls the engine")
        yield  # pragma: no cover

    def cancel(self, request_id: str) -> bool:
        return False


class NullHandler:
    """A turn's bus work when the engine answers in one step: a draft, the final, the ack.

    The same calls as ``TurnHandler`` makes on the bus: events through ``TurnPublisher``
    (the draft throttle included), then ``TurnConsumer.ack`` (XACK+XDEL, lock release).
    """

    def __init__(self, worker: Worker) -> None:
        self.events = worker.events
        self.consumer = worker.consumer
        self.metrics = worker.metrics
        self.draft_interval_s = worker.options.draft_interval_s

    async def handle(self, state: TurnState) -> TurnResult:
        turn = state.turn
        publisher = TurnPublisher(self.events, turn, self.draft_interval_s)
        ids = {"conversation_id": turn.conversation_id, "turn_id": turn.turn_id}
        await publisher.draft(DraftEvent(**ids, text=REPLY, step=1))
        final = FinalEvent(**ids, message_id=turn.turn_id, text=REPLY, usage=USAGE)
        await publisher.publish(final, drop_draft=True)
        await publisher.close()
        await self.consumer.ack(state.delivery)
        self.metrics.turn_done("complete")
        return TurnResult("complete", turn.turn_id)


async def serve_worker(url: str, prefix: str, name: str, batch: int) -> None:
    client = connect(url)
    options = WorkerOptions(max_batch=batch, consumer_name=name, claim_block_ms=1000)
    worker = Worker(
        client, None, NullEngine(), None, options=options, keys=Keys(prefix), handler=NullHandler
    )
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, worker.stop)
    try:
        await worker.run()
    finally:
        await client.aclose()
