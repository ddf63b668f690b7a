"""Attachment upkeep in the workers process: thumbnails for image uploads, and removal of unused uploads.

::

    API (upload completed) ──XADD──► objects:thumbnails ──XREADGROUP──► thumbnailer ──► Pillow ──► object store
    cleanup loop, every objects.cleanup_interval_s ──► uploads unused past objects.unused_ttl_s ──► deleted

A job is acknowledged after its outcome is stored (or after it is known that there is nothing to
do: the upload is gone, or is not a readable image); a worker that dies mid-job leaves it pending,
and the next thumbnailer takes it over after :data:`CLAIM_IDLE_MS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from mqchat.objects.service import Attachments
from mqchat.storage.thumbnail_jobs import ThumbnailJobs

logger = logging.getLogger(__name__)

#: A thumbnail job read but not acknowledged for this long is taken over (its worker died).
CLAIM_IDLE_MS = 60_000
#: Jobs taken at once, and how long one read waits for new ones.
BATCH = 16
BLOCK_MS = 1_000


async def run_thumbnailer(jobs: ThumbnailJobs, attachments: Attachments, consumer: str, stop: asyncio.Event) -> None:
    """Make thumbnails until ``stop``. Storage errors propagate (the supervisor restarts the loop)."""
    await jobs.ensure_group()
    while not stop.is_set():
        for entry_id, upload_id in await jobs.take(consumer, count=BATCH, block_ms=BLOCK_MS,
                                                   claim_idle_ms=CLAIM_IDLE_MS):
            outcome = await attachments.make_thumbnail(upload_id)
            logger.info("thumbnail job %s for upload %s: %s", entry_id, upload_id, outcome)
            await jobs.ack(entry_id)


async def run_cleanup(attachments: Attachments, interval_s: float, stop: asyncio.Event) -> None:
    """Delete unused uploads past their lifetime, every ``interval_s``, until ``stop``."""
    while not stop.is_set():
        removed = await attachments.cleanup_unused()
        if removed:
            logger.info("removed %d unused uploads", removed)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
