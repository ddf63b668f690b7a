"""Wiring of the push workers from settings: pushers, fan-out and sender, as named tasks.

Shared by the workers process (:mod:`workers.app`) and ``python -m workers.push`` (push only, to
scale push apart from presence).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from contextlib import AsyncExitStack

from mqchat import lifecycle
from mqchat.config import PushSettings, Settings
from mqchat.storage.base import Directory, MessageStore
from mqchat.storage.push_state import Platform, PushState
from workers.fanout import Fanout, FanoutConfig
from workers.push.base import Pusher
from workers.push.policy import RetryPolicy
from workers.push.recording import RecordingPusher
from workers.push.sender import Sender, SenderConfig

logger = logging.getLogger(__name__)

#: On shutdown, how long the push loops may take to settle the batch in hand.
PUSH_DRAIN_S = 10.0


def consumer_name(role: str) -> str:
    """A consumer name unique per process: a restarted worker is a new consumer, and the entries its
    predecessor left pending are claimed after ``push.claim_idle_s``."""
    return f"{role}-{socket.gethostname()}-{os.getpid()}"


def make_pushers(settings: Settings) -> dict[Platform, Pusher]:
    """A real pusher per platform with credentials, the recording pusher for the others."""
    push = settings.push
    record = settings.data_dir / push.record_file
    pushers: dict[Platform, Pusher] = {}
    if push.fcm_service_account_file is not None:
        from workers.push.fcm import FcmPusher  # imported only when configured: pulls in google-auth

        pushers["fcm"] = FcmPusher(push.fcm_service_account_file, project_id=push.fcm_project_id,
                                   endpoint=push.fcm_endpoint, concurrency=push.fcm_concurrency,
                                   timeout_s=push.request_timeout_s)
    else:
        pushers["fcm"] = RecordingPusher("fcm", record)
    if push.apns_key_file is not None:
        from workers.push.apns import ApnsPusher

        assert push.apns_key_id is not None  # checked by PushSettings
        assert push.apns_team_id is not None
        pushers["apns"] = ApnsPusher(push.apns_key_file, key_id=push.apns_key_id, team_id=push.apns_team_id,
                                     topic=push.apns_topic, sandbox=push.apns_sandbox, host=push.apns_host,
                                     ca_file=push.apns_ca_file, concurrency=push.apns_concurrency,
                                     timeout_s=push.request_timeout_s)
    else:
        pushers["apns"] = RecordingPusher("apns", record)
    for platform, pusher in pushers.items():
        kind = "recording to " + str(record) if isinstance(pusher, RecordingPusher) else "live"
        logger.info("push %s: %s", platform, kind)
    return pushers


def retry_policy(push: PushSettings) -> RetryPolicy:
    return RetryPolicy(base_s=push.backoff_base_s, cap_s=push.backoff_cap_s, give_up_after_s=push.give_up_after_s)


async def open_push(settings: Settings, stack: AsyncExitStack, state: PushState, directory: Directory,
                    store: MessageStore) -> tuple[Fanout, Sender]:
    """The fan-out worker and the sender, their pushers closed by ``stack``."""
    push = settings.push
    pushers = make_pushers(settings)
    for pusher in pushers.values():
        stack.push_async_callback(pusher.aclose)
    claim_ms = int(push.claim_idle_s * 1000)
    fanout = Fanout(state, directory, store, consumer_name("fanout"),
                    FanoutConfig(batch=push.fanout_batch, claim_idle_ms=claim_ms, privacy=push.privacy))
    sender = Sender(state, pushers, consumer_name("sender"),
                    SenderConfig(batch=push.send_batch, claim_idle_ms=claim_ms, privacy=push.privacy,
                                 policy=retry_policy(push)))
    await state.ensure_groups()
    return fanout, sender


def push_tasks(tg: asyncio.TaskGroup, fanout: Fanout, sender: Sender,
               stop: asyncio.Event) -> list[asyncio.Task[None]]:
    """Start the two loops as named tasks in ``tg``, each restarted with backoff when it fails."""
    return [
        tg.create_task(lifecycle.supervised("push fan-out", lambda: fanout.run(stop), stop),
                       name="workers.push.fanout"),
        tg.create_task(lifecycle.supervised("push sender", lambda: sender.run(stop), stop),
                       name="workers.push.send"),
    ]
