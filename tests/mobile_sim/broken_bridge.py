"""``python -m tests.mobile_sim.broken_bridge --fault drop:4``: the real bridge with one planted fault.

The checker's acceptance test (tests/mobile_sim/test_planted_fault.py) runs this instead of
``python -m bridge`` and expects :func:`mobile_sim.checker.check` to name exactly what was done:

``drop:N``
    The Nth new message this bridge persists (counting from 1 over every channel) is acked as
    usual, deleted from the store right after its write (the channel's position stays, so later
    messages still follow it) and never published on ``ch/{channel}``: an acked message lost for
    good, which no sync can repair.
``reorder:N``
    The Nth new message is held back and published right after the next message of its channel:
    every device subscribed then gets the two swapped. Both are stored, so history is right.

The fault is planted from outside the bridge's code: ``bridge.app.main``, the composition root,
builds its publisher with ``MqttPublisher()`` and its store with ``open_message_store(settings)``,
looked up in its module when it runs; those two names are replaced by a subclass and a wrapper
here before ``main`` starts. Everything else is the bridge as shipped. SQLite store only.

What was done is appended as one JSON line per fault to the file named by ``--report`` (or
``BROKEN_BRIDGE_REPORT``): ``{"fault": "drop", "id", "channel", "seq"}`` or ``{"fault": "reorder",
"id", "after", "channel", "seq"}`` (``id`` was published after ``after``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import sys
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import bridge.app
from mqchat import schema, topics
from mqchat.config import Settings
from mqchat.lifecycle import serve_process
from mqchat.storage.base import CmidKey, HistoryPage, MessageStore, Position, StoredMessage
from mqchat.storage.factory import open_message_store

FAULT_ENV = "BROKEN_BRIDGE_FAULT"
REPORT_ENV = "BROKEN_BRIDGE_REPORT"


@dataclass
class Fault:
    """One planted fault and its progress (shared by the store wrapper and the publisher)."""

    kind: Literal["drop", "reorder"]
    nth: int
    report: Path | None = None
    persisted: int = 0
    """New messages persisted so far."""
    target: StoredMessage | None = None
    """The Nth message, once persisted."""
    held: tuple[str, bytes] | None = None
    """reorder: the target's publish, waiting for the next message of its channel."""
    done: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str, report: Path | None = None) -> Fault:
        kind, _, nth = text.partition(":")
        if kind not in ("drop", "reorder") or not nth.isdigit() or int(nth) < 1:
            raise ValueError(f"fault {text!r}: expected drop:N or reorder:N (N >= 1)")
        return cls("drop" if kind == "drop" else "reorder", int(nth), report)

    def record(self, **what: Any) -> None:
        entry = {"fault": self.kind, **what}
        self.done.append(entry)
        if self.report is not None:
            with self.report.open("a") as fh:
                fh.write(json.dumps(entry) + "\n")


def _delete_row(db: Path, m: StoredMessage) -> None:
    with sqlite3.connect(db, timeout=10) as conn:
        conn.execute("DELETE FROM messages WHERE channel_id=? AND epoch=? AND seq=?", (m.channel, m.epoch, m.seq))
    conn.close()


class FaultyStore:
    """The bridge's :class:`MessageStore`, counting what it persists; ``drop`` deletes the target
    right after its batch is durable (so the bridge acks it as usual)."""

    def __init__(self, inner: MessageStore, fault: Fault, db: Path) -> None:
        self._inner, self._fault, self._db = inner, fault, db

    async def positions(self, channels: Collection[str]) -> dict[str, Position]:
        return await self._inner.positions(channels)

    async def find_cmids(self, keys: Collection[CmidKey]) -> dict[CmidKey, StoredMessage]:
        return await self._inner.find_cmids(keys)

    async def append(self, messages: Sequence[StoredMessage]) -> None:
        await self._inner.append(messages)
        fault = self._fault
        for m in messages:
            fault.persisted += 1
            if fault.persisted != fault.nth:
                continue
            fault.target = m
            if fault.kind == "drop":
                await asyncio.to_thread(_delete_row, self._db, m)
                fault.record(id=str(m.id), channel=m.channel, seq=m.seq)

    async def history(self, channel: str, *, before: int | None = None, after: int | None = None,
                      limit: int = 50) -> HistoryPage:
        return await self._inner.history(channel, before=before, after=after, limit=limit)

    async def related(self, wanted: Mapping[str, Collection[int]]) -> dict[str, list[StoredMessage]]:
        return await self._inner.related(wanted)

    async def thread(self, channel: str, root: int, *, after: int = 0, limit: int = 50,
                     ) -> tuple[list[StoredMessage], bool]:
        return await self._inner.thread(channel, root, after=after, limit=limit)

    async def pin_events(self, channel: str) -> list[StoredMessage]:
        return await self._inner.pin_events(channel)

    async def counts_at(self, points: Collection[tuple[str, int]]) -> dict[tuple[str, int], int]:
        return await self._inner.counts_at(points)

    async def close(self) -> None:
        await self._inner.close()


def publisher_class(fault: Fault) -> type[bridge.app.MqttPublisher]:
    """The bridge's publisher with the fault applied to the ``ch/`` publishes it is given."""

    class FaultyPublisher(bridge.app.MqttPublisher):
        async def publish(self, items: Sequence[tuple[str, bytes]]) -> None:
            await super().publish(_apply(fault, items))

    return FaultyPublisher


def _apply(fault: Fault, items: Sequence[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    target = fault.target
    out: list[tuple[str, bytes]] = []
    for topic, payload in items:
        if not topic.startswith(topics.STREAM + "/"):
            out.append((topic, payload))
            continue
        m = schema.decode_channel_message(payload)
        if target is not None and m.id == str(target.id):
            if fault.kind == "drop":
                continue  # acked, gone from the store, never published (republished duplicates neither)
            if fault.held is None and not fault.done:
                fault.held = (topic, payload)
                continue
        out.append((topic, payload))
        if fault.held is not None and fault.held[0] == topic:
            out.append(fault.held)
            assert target is not None
            fault.record(id=str(target.id), after=m.id, channel=m.channel, seq=target.seq)
            fault.held = None
    return out


def plant(fault: Fault) -> None:
    """Replace the two names ``bridge.app.main`` builds its publisher and store from."""

    async def open_faulty_store(settings: Settings) -> MessageStore:
        if settings.store.backend != "sqlite":
            raise SystemExit("broken_bridge: only the SQLite store is supported")
        return FaultyStore(await open_message_store(settings), fault, settings.messages_db)

    bridge.app.open_message_store = open_faulty_store  # type: ignore[attr-defined]
    bridge.app.MqttPublisher = publisher_class(fault)  # type: ignore[misc]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.mobile_sim.broken_bridge", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fault", default=os.environ.get(FAULT_ENV), help=f"drop:N or reorder:N (default ${FAULT_ENV})")
    p.add_argument("--report", type=Path, default=os.environ.get(REPORT_ENV) or None,
                   help=f"append what was done here, as JSON lines (default ${REPORT_ENV})")
    args = p.parse_args(argv)
    if not args.fault:
        p.error(f"no fault: pass --fault or set {FAULT_ENV}")
    try:
        fault = Fault.parse(args.fault, args.report)
    except ValueError as exc:
        p.error(str(exc))
    plant(fault)
    return serve_process("bridge", bridge.app.main)


if __name__ == "__main__":
    sys.exit(main())
