"""``python -m workers.push``: only the push fan-out and sender (no MQTT), to scale push apart from presence.

Settings from the environment / ``MQCHAT_CONFIG`` as for every process; needs ``redis.url``.
"""

from __future__ import annotations

import asyncio
import sys
from contextlib import AsyncExitStack

from mqchat import lifecycle
from mqchat.config import Settings, load_settings
from mqchat.errors import ConfigError
from mqchat.log import setup_logging
from mqchat.storage.factory import open_directory, open_message_store
from mqchat.storage.push_state import PushState
from mqchat.storage.redis_client import RedisClient
from workers.push.service import PUSH_DRAIN_S, open_push, push_tasks


async def main(settings: Settings, stop: asyncio.Event) -> None:
    """Run the fan-out worker and the sender until ``stop``, then let the batch in hand settle."""
    if not settings.redis.url:
        raise ConfigError("push workers need redis.url (MQCHAT_REDIS__URL)")
    async with AsyncExitStack() as stack:
        redis = RedisClient.from_settings(settings.redis)
        stack.push_async_callback(redis.close)
        directory = await open_directory(settings)
        stack.push_async_callback(directory.close)
        store = await open_message_store(settings)
        stack.push_async_callback(store.close)
        push = await open_push(settings, stack, PushState(redis), directory, store)
        lifecycle.mark_ready(settings, "push")
        stack.callback(lifecycle.clear_ready, settings, "push")
        async with asyncio.TaskGroup() as tg:
            tasks = push_tasks(tg, *push, stop)
            await stop.wait()
            _done, late = await asyncio.wait(tasks, timeout=PUSH_DRAIN_S)
            for t in late:
                t.cancel()


def cli() -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"workers.push: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, json_lines=settings.log_json, process="push")

    async def root(stop: asyncio.Event) -> None:
        await main(settings, stop)

    try:
        lifecycle.run(root)
    except ConfigError as exc:
        print(f"workers.push: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
