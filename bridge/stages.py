"""The bridge's sequencing loop as three pipelined stages, one task each::

    queue ──▶ prepare (decode, permissions)  ──hand-over──▶  commit (order, persist: fsync)
                                                                 ──hand-over──▶  deliver (publish stream, acks)

Batch N+1 is decoded and authorized while batch N is being written, and batch N+1 is written
while batch N's publishes wait for the broker's PUBACKs. Each stage takes one batch at a time, in
order, so the order state, the store writes and the publishes keep the order of a single loop: a
channel's stream leaves in seq order, an ack only after its batch is durable (a stage never sees a
batch before the previous stage finished with it).

The hand-overs hold one batch: a stage gives its batch to the next and waits until the next stage
has *taken* it before it starts another one. So at most one batch waits between two stages, a
batch forms while the write before it runs (group commit as before: a batch is what arrived
meanwhile, up to ``bridge.batch_max``), and a slow broker or disk holds the intake back.

A ``None`` in the queue is the end (shutdown): every batch taken before it goes through all three
stages, then :func:`run_stages` returns. An error in any stage (a lost broker connection) ends all
three: batches not yet delivered are durable or not, but unacknowledged; their senders retry with
the same cmid and get the original message (idempotency).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from bridge.pipeline import BatchStats, Inbound, Outgoing, Pipeline, Prepared

T = TypeVar("T")


class Handover(Generic[T]):
    """A one-batch hand-over between two stages: :meth:`put` returns once the next stage took it."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[T] = asyncio.Queue(maxsize=1)

    async def put(self, item: T) -> None:
        await self._queue.put(item)
        await self._queue.join()

    async def get(self) -> T:
        item = await self._queue.get()
        self._queue.task_done()
        return item


async def take_batch(queue: asyncio.Queue[Inbound | None], batch_max: int) -> list[Inbound] | None:
    """The next batch: wait for one send, then take what else is queued, up to ``batch_max``.
    ``None`` at the end (the sentinel stays queued for whoever looks next)."""
    first = await queue.get()
    if first is None:
        queue.put_nowait(None)
        return None
    batch = [first]
    while len(batch) < batch_max and not queue.empty():
        item = queue.get_nowait()
        if item is None:
            queue.put_nowait(None)  # seen after this batch
            break
        batch.append(item)
    return batch


async def run_stages(pipeline: Pipeline, queue: asyncio.Queue[Inbound | None], batch_max: int,
                     done: Callable[[BatchStats, Sequence[Inbound]], None],
                     taken: Callable[[], None] = lambda: None) -> None:
    """Run ``pipeline``'s stages over the sends of ``queue`` until its ``None``; ``done(stats, batch)``
    after each batch is delivered, ``taken()`` each time a batch leaves the queue (for the depth
    metric). Cancelling it cancels every stage."""
    prepared: Handover[tuple[list[Inbound], Prepared] | None] = Handover()
    committed: Handover[tuple[list[Inbound], Outgoing] | None] = Handover()

    async def prepare() -> None:
        while (batch := await take_batch(queue, batch_max)) is not None:
            taken()
            await prepared.put((batch, await pipeline.prepare(batch)))
        await prepared.put(None)

    async def commit() -> None:
        while (item := await prepared.get()) is not None:
            batch, ready = item
            await committed.put((batch, await pipeline.commit(ready)))
        await committed.put(None)

    async def deliver() -> None:
        while (item := await committed.get()) is not None:
            batch, outgoing = item
            done(await pipeline.deliver(outgoing), batch)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(prepare(), name="bridge.prepare")
        tg.create_task(commit(), name="bridge.commit")
        tg.create_task(deliver(), name="bridge.deliver")
