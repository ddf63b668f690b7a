"""Leader election for singleton jobs of the workers process, on a fenced Redis lease.

::

    every lease_ms / 3:  claim or renew leader:{name} (Redis time)
        token > 0, same as held ─▶ still leader: extend the local deadline
        token > 0, new           ─▶ became leader: start the job
        0, or Redis unreachable past the local deadline ─▶ not leader: cancel the job

Several workers instances run :meth:`Leadership.run`; one at a time runs the job. The job calls
:meth:`Leadership.check` before each step it must not share with a stale leader. The local
deadline is measured from *before* the last renewal was sent and ends a safety margin before the
lease, so a leader that was paused past its lease, or cannot reach Redis, finds it passed and stops
before another one can start; when the renewal loop itself is late (more than a third of a lease
since the last renewal), ``check`` renews and compares the fencing token itself. So a step costs no
Redis round trip while the renewals keep time, and a stale leader never starts one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from prometheus_client import Gauge

from mqchat.storage.leases import LeaderLease

logger = logging.getLogger(__name__)

LEADER = Gauge("mqchat_workers_leader", "1 while this workers instance runs the named singleton job.", ["job"])

#: The local deadline ends this fraction of the lease before the lease does (clock rate drift, slow replies).
SAFETY = 0.2


class LostLeadership(Exception):
    """The lease is held by another instance now (or could not be renewed in time)."""


class Leadership:
    """This instance's claim on one singleton job.

    Args:
        lease: the job's lease in Redis.
        owner: this instance's id (unique per running process).
        lease_ms: lease lifetime; renewed every third of it.
    """

    def __init__(self, lease: LeaderLease, owner: str, *, lease_ms: int) -> None:
        self._lease = lease
        self.owner = owner
        self.lease_ms = lease_ms
        self.token = 0
        self._deadline = 0.0
        self._renewed = 0.0
        self._job = lease.key.rsplit(":", 1)[-1]

    def held(self) -> bool:
        """Whether this instance may still act as leader (token held, local deadline not passed)."""
        return self.token > 0 and time.monotonic() < self._deadline

    async def _claim(self) -> int:
        sent = time.monotonic()
        token, _expires = await self._lease.claim(self.owner, lease_ms=self.lease_ms)
        if token:
            self._renewed = sent
            self._deadline = sent + self.lease_ms * (1 - SAFETY) / 1000
        return token

    async def check(self) -> None:
        """Make sure this instance may still act as leader: the local deadline has not passed and,
        if the last renewal is more than a third of a lease old, a renewal now returns our token.

        Raises:
            LostLeadership: another instance holds the lease, ours was taken over and re-taken (a
                new token: work under the old one must stop), or it could not be renewed in time.
        """
        held = self.token
        if held and time.monotonic() - self._renewed > self.lease_ms / 3000:
            token = await self._claim()
            if token != held:
                raise LostLeadership(f"{self._job}: token {held} is no longer current (now {token or 'another owner'})")
        if not held or not self.held():
            raise LostLeadership(f"{self._job}: token {held} not renewed in time")

    async def run(self, job: Callable[[Leadership], Coroutine[Any, Any, None]]) -> None:
        """Forever: hold the lease when free and run ``job`` while it is held.

        ``job`` is cancelled when leadership is lost, and started again (with the new token) when it
        comes back. A job that fails raises out of here (the caller's supervisor restarts it); a job
        that raises :class:`LostLeadership` just ends this term. The lease is released on the way out.
        """
        task: asyncio.Task[None] | None = None
        try:
            while True:
                was = self.token
                try:
                    token = await self._claim()
                except Exception:
                    logger.warning("%s: lease renewal failed", self._job, exc_info=True)
                    token = was if self.held() else 0
                if token != was or not token:
                    if task is not None:
                        task.cancel()
                        await asyncio.gather(task, return_exceptions=True)
                        task = None
                        logger.warning("%s: leadership lost (token %d)", self._job, was)
                    self.token = token
                if token and task is None:
                    logger.info("%s: leader now (token %d)", self._job, token)
                    task = asyncio.create_task(job(self), name=f"workers.leader.{self._job}")
                LEADER.labels(self._job).set(1 if task is not None else 0)
                if task is not None:
                    await asyncio.wait([task], timeout=self.lease_ms / 3000)
                    if task.done():
                        exc = None if task.cancelled() else task.exception()
                        task = None
                        if exc is not None and not isinstance(exc, LostLeadership):
                            raise exc
                        self.token = 0
                else:
                    await asyncio.sleep(self.lease_ms / 3000)
        finally:
            LEADER.labels(self._job).set(0)
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            if self.token:
                with contextlib.suppress(Exception):
                    await self._lease.release(self.owner, self.token)
                self.token = 0
