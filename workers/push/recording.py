"""The embedded default pusher: without provider credentials, pushes are recorded, not sent.

Each push becomes one JSON line in ``<data_dir>/<push.record_file>`` (token shortened) and one log
line, so ``mqchat up`` shows offline push working end to end without an FCM or APNs account.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

from mqchat.storage.push_state import Platform, redact
from workers.push.base import DELIVERED, Notification, Pusher, PushResult

logger = logging.getLogger(__name__)


class RecordingPusher(Pusher):
    """Appends each notification to ``path`` (JSON lines) and logs it.

    Args:
        platform: which platform it stands in for.
        path: the record file (created with its directory).
    """

    def __init__(self, platform: Platform, path: Path) -> None:
        self.platform = platform
        self._path = path
        self._lock = asyncio.Lock()

    async def send(self, notification: Notification) -> PushResult:
        job = notification.job
        record = {"platform": self.platform, "user": job.user, "device": job.device,
                  "token": redact(notification.device.token), "channel": job.channel, "seq": job.seq,
                  "message_id": job.message_id, "badge": job.badge, "collapse_key": notification.collapse_key,
                  "title": notification.title, "text": notification.text}
        line = json.dumps(record, ensure_ascii=False) + "\n"
        async with self._lock:
            await asyncio.to_thread(self._append, line)
        logger.info("push recorded (%s, no credentials): user=%s device=%s channel=%s seq=%d badge=%d",
                    self.platform, job.user, job.device, job.channel, job.seq, job.badge)
        return DELIVERED

    def _append(self, line: str) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with self._path.open("a", encoding="utf-8") as fh:
            fh.write(line)
