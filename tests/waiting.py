"""Wait on a condition instead of sleeping and hoping: the one polling helper the tests share."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable


async def wait_for(predicate: Callable[[], bool | Awaitable[bool]], within: float = 15.0, *,
                   what: str = "condition", interval: float = 0.02) -> None:
    """Poll ``predicate`` (sync, or async and awaited) until it is true.

    Raises:
        AssertionError: still false after ``within`` seconds; the message names ``what``.
    """
    deadline = time.monotonic() + within
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {within}s")
        await asyncio.sleep(interval)


def wait_for_blocking(predicate: Callable[[], bool], within: float = 15.0, *, what: str = "condition",
                      interval: float = 0.02) -> None:
    """:func:`wait_for` for tests without an event loop (blocking sockets, subprocesses).

    Raises:
        AssertionError: still false after ``within`` seconds; the message names ``what``.
    """
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {within}s")
        time.sleep(interval)
