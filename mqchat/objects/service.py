"""Attachments as one service over an object store, the upload records and the thumbnail queue.

The API, the workers and (for ``kind: "file"`` sends) the bridge each build one :class:`Attachments`
with :func:`mqchat.objects.factory.open_attachments` and call it; the rules are the pure functions of
:mod:`mqchat.objects.policy`, the I/O is here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from mqchat.config import ObjectsSettings
from mqchat.objects import policy
from mqchat.objects.base import ObjectNotFound, ObjectStore, PresignedRequest
from mqchat.objects.policy import Attachment, AttachmentError, FileSend, UploadRequest
from mqchat.objects.sniff import SNIFF_BYTES, image_size, sniff
from mqchat.objects.thumbnails import BadImage, is_image, make_thumbnail
from mqchat.objects.uploads import Upload, UploadStore

logger = logging.getLogger(__name__)

MessageKey = tuple[str, str, str]
"""``(channel, sender, cmid)``: how a ``file`` message names the upload it carries."""


class ThumbnailQueue(Protocol):
    async def enqueue(self, upload_id: str) -> None: ...


def new_upload_id() -> str:
    """128 random bits: upload ids are not guessable (they are not secrets either: every use is checked)."""
    return "u" + secrets.token_hex(16)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Attachments:
    """Uploads, verification, download URLs, attachment objects, thumbnails and deletion.

    Args:
        settings: the ``objects`` settings (limits, lifetimes).
        objects: where the bytes are.
        uploads: the upload records.
        thumbnails: where thumbnail jobs go; None: no thumbnails are requested (tests, tools).
        clock_ms: wall clock in milliseconds.
    """

    def __init__(self, settings: ObjectsSettings, objects: ObjectStore, uploads: UploadStore,
                 thumbnails: ThumbnailQueue | None = None, *, clock_ms: Callable[[], int] = _now_ms) -> None:
        self.settings = settings
        self.objects = objects
        self.uploads = uploads
        self.thumbnails = thumbnails
        self.clock_ms = clock_ms

    async def close(self) -> None:
        await self.uploads.close()
        await self.objects.close()

    # --- uploading ---------------------------------------------------------------------------------

    async def start_upload(self, user: str, request: UploadRequest) -> tuple[Upload, PresignedRequest]:
        """Record a pending upload and sign its upload request. The caller checked membership.

        Raises:
            AttachmentError: see :func:`~mqchat.objects.policy.check_upload_request`.
        """
        req = policy.check_upload_request(request, self.settings)
        now = self.clock_ms()
        upload = Upload(new_upload_id(), req.channel, user, req.filename, req.content_type, req.size,
                        created_ms=now, expires_ms=now + self.settings.unused_ttl_s * 1000)
        await self.uploads.create(upload)
        signed = self.objects.presign_upload(upload.incoming_key, content_type=upload.content_type, size=upload.size,
                                             expires_at=now // 1000 + self.settings.upload_url_ttl_s)
        return upload, signed

    async def own_upload(self, user: str, upload_id: str) -> Upload:
        """The caller's upload.

        Raises:
            AttachmentError: 404 ``upload_not_found``, also for someone else's (they learn nothing).
        """
        upload = await self.uploads.get(upload_id) if policy.UPLOAD_ID_RE.fullmatch(upload_id) else None
        if upload is None or upload.owner != user:
            raise AttachmentError("upload_not_found", f"no upload {upload_id!r}", 404)
        return upload

    async def complete(self, user: str, upload_id: str) -> Upload:
        """Verify the stored bytes of a pending upload and make it ready (idempotent once ready).

        A stored object that does not match (too large, other size, other type) is deleted along
        with its record: nothing of a refused upload stays.

        Raises:
            AttachmentError: ``upload_not_found`` (404), ``upload_expired`` (410), ``upload_incomplete``
                (409: nothing stored yet), or a code of :func:`~mqchat.objects.policy.check_stored`.
        """
        upload = await self.own_upload(user, upload_id)
        if upload.state != "pending":
            return upload
        if self.clock_ms() >= upload.expires_ms:
            raise AttachmentError("upload_expired", "the upload was not completed in time; upload again", 410)
        # Missing: nothing uploaded, or a completion that failed after the move is being retried.
        with contextlib.suppress(ObjectNotFound):
            await self.objects.move(upload.incoming_key, upload.object_key)
        info = await self.objects.head(upload.object_key)
        if info is None:
            raise AttachmentError("upload_incomplete", "nothing was uploaded yet: PUT the bytes to the upload URL "
                                  "first", 409)
        head = await self.objects.get(upload.object_key, max_bytes=SNIFF_BYTES)
        try:
            policy.check_stored(upload, info.size, sniff(head), self.settings)
        except AttachmentError:
            await self.delete_attachment(upload.upload_id)
            raise
        size = image_size(head) if is_image(upload.content_type) else None
        width, height = size if size else (None, None)
        if self.thumbnails is not None and is_image(upload.content_type):
            # Before the upload turns ready: when this fails, the client's retry enqueues again (a
            # repeated job only remakes the same thumbnail); after, a failure would lose the job.
            await self.thumbnails.enqueue(upload.upload_id)
        await self.uploads.mark_ready(upload.upload_id, width=width, height=height)
        ready = await self.uploads.get(upload.upload_id)
        assert ready is not None
        return ready

    # --- reading -----------------------------------------------------------------------------------

    def attachment(self, upload: Upload) -> Attachment:
        """The attachment object of ``upload``, with fresh signed URLs."""
        return policy.attachment(upload, self.objects, now_s=self.clock_ms() // 1000,
                                 ttl_s=self.settings.download_url_ttl_s)

    async def attachments_for(self, messages: Sequence[MessageKey]) -> dict[MessageKey, Attachment]:
        """Attachment objects of ``file`` messages by ``(channel, sender, cmid)`` (history, the stream)."""
        found = await self.uploads.by_messages(messages)
        return {key: self.attachment(upload) for key, upload in found.items()}

    # --- sending (the bridge) ----------------------------------------------------------------------

    async def attach_to_message(self, send: FileSend, *, user: str, channel: str, cmid: str) -> Attachment:
        """Check a ``kind: "file"`` send and attach its upload to the message ``(channel, user, cmid)``.

        Idempotent for a retried send (same user, channel and cmid). Call it after the membership
        check and before the message is persisted; a send refused here must not be persisted.

        Raises:
            AttachmentError: see :func:`~mqchat.objects.policy.check_file_send`.
        """
        upload = await self.uploads.get(send.upload) if policy.UPLOAD_ID_RE.fullmatch(send.upload) else None
        if upload is not None and upload.state == "attached" and upload.cmid == cmid \
                and (upload.owner, upload.channel) == (user, channel):
            return self.attachment(upload)  # the same send again (a retry after a lost ack)
        policy.check_file_send(send, upload, user=user, channel=channel, now_ms=self.clock_ms())
        assert upload is not None
        if not await self.uploads.attach(upload.upload_id, owner=user, channel=channel, cmid=cmid):
            raise AttachmentError("upload_used", "the upload is already in a message", 409)
        attached = await self.uploads.get(upload.upload_id)
        assert attached is not None
        return self.attachment(attached)

    # --- removal -----------------------------------------------------------------------------------

    async def delete_attachment(self, upload_id: str) -> bool:
        """Delete an upload's object, its thumbnail and its record (a deleted message, a refused or
        unused upload). Idempotent; returns whether there was a record."""
        upload = await self.uploads.get(upload_id)
        if upload is None:
            return False
        for key in (upload.thumbnail_key, upload.object_key, upload.incoming_key):
            await self.objects.delete(key)
        return await self.uploads.remove(upload_id)

    async def delete_for_messages(self, messages: Sequence[MessageKey]) -> int:
        """Delete the attachments of deleted messages; returns how many were removed."""
        found = await self.uploads.by_messages(messages)
        return sum([await self.delete_attachment(u.upload_id) for u in found.values()])

    async def cleanup_unused(self, *, limit: int = 500) -> int:
        """Delete uploads never sent within ``objects.unused_ttl_s``; returns how many."""
        removed = 0
        for upload in await self.uploads.unused_before(self.clock_ms(), limit):
            removed += await self.delete_attachment(upload.upload_id)
        return removed

    # --- thumbnails (the workers) ------------------------------------------------------------------

    async def make_thumbnail(self, upload_id: str) -> str:
        """Make and store the thumbnail of an image upload; returns what happened (for logs and tests):
        ``made``, ``gone`` (no such upload any more), ``not_image`` or ``bad_image``."""
        upload = await self.uploads.get(upload_id)
        if upload is None:
            return "gone"
        if not is_image(upload.content_type):
            return "not_image"
        data = await self.objects.get(upload.object_key, max_bytes=self.settings.max_upload_bytes + 1)
        try:
            thumb = await asyncio.to_thread(make_thumbnail, data, max_px=self.settings.thumbnail_px,
                                            max_pixels=self.settings.max_image_pixels)
        except BadImage as exc:
            logger.info("no thumbnail for upload %s: %s", upload_id, exc.reason)
            return "bad_image"
        await self.objects.put(upload.thumbnail_key, thumb.data, thumb.content_type)
        await self.uploads.set_image(upload_id, width=thumb.source_width, height=thumb.source_height,
                                     thumbnail_type=thumb.content_type)
        if await self.uploads.get(upload_id) is None:  # deleted meanwhile: leave nothing behind
            await self.objects.delete(upload.thumbnail_key)
            return "gone"
        return "made"
