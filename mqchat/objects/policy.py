"""The rules of attachments, as pure functions (``now`` and limits passed in).

- :func:`check_upload_request`: may this upload be started (size, type, file name)?
- :func:`check_stored`: do the stored bytes match what was declared (real size, magic bytes)?
- :func:`check_file_send`: may this ``kind: "file"`` send use this upload?
- :func:`attachment`: the attachment object (:class:`mqchat.schema.Attachment`) a ``file`` message
  carries on the stream and in history.

Each refusal is an :class:`AttachmentError` with a stable ``code`` (docs/attachments.md).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import msgspec

from mqchat.config import ObjectsSettings
from mqchat.errors import MqchatError
from mqchat.objects.base import ObjectStore
from mqchat.objects.sniff import IMAGE_TYPES
from mqchat.objects.uploads import Upload
from mqchat.schema import Attachment as Attachment  # the wire struct, re-exported

#: Longest file name kept, in characters.
MAX_FILENAME_CHARS = 255
#: Longest caption of a ``file`` message, in characters (as a text message's body).
MAX_CAPTION_CHARS = 4000
UPLOAD_ID_RE = re.compile(r"u[0-9a-f]{32}")


class AttachmentError(MqchatError):
    """A refused upload or ``file`` send.

    Attributes:
        code: stable code for the client (``upload_too_large``, ``upload_not_yours``, ...).
        status: the HTTP status the API answers with.
        message: for people.
    """

    def __init__(self, code: str, message: str, status: int = 422) -> None:
        self.code = code
        self.message = message
        self.status = status
        super().__init__(f"{code}: {message}")


@dataclass(frozen=True, slots=True)
class UploadRequest:
    channel: str
    filename: str
    content_type: str
    size: int


def clean_filename(name: str) -> str:
    """The file name to keep: the last path segment, NFC, without control characters.

    Raises:
        AttachmentError: ``invalid_filename`` when nothing usable is left, or it is too long.
    """
    base = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if unicodedata.category(ch)[0] != "C").strip()
    if not base or base in (".", ".."):
        raise AttachmentError("invalid_filename", "the file name is empty")
    if len(base) > MAX_FILENAME_CHARS:
        raise AttachmentError("invalid_filename", f"the file name is longer than {MAX_FILENAME_CHARS} characters")
    return base


def check_upload_request(req: UploadRequest, limits: ObjectsSettings) -> UploadRequest:
    """The request with its file name and content type normalised, if the server takes it.

    Raises:
        AttachmentError: ``upload_too_large`` (413), ``forbidden_type`` (415), ``invalid_size`` or
            ``invalid_filename`` (422).
    """
    if req.size <= 0:
        raise AttachmentError("invalid_size", "size must be a positive number of bytes")
    if req.size > limits.max_upload_bytes:
        raise AttachmentError("upload_too_large", f"{req.size} bytes is over the limit of "
                              f"{limits.max_upload_bytes} bytes", 413)
    ctype = req.content_type.split(";", 1)[0].strip().lower()
    if ctype not in limits.allowed_types:
        raise AttachmentError("forbidden_type", f"content type {ctype!r} is not allowed; allowed: "
                              f"{', '.join(limits.allowed_types)}", 415)
    return UploadRequest(req.channel, clean_filename(req.filename), ctype, req.size)


def check_stored(upload: Upload, real_size: int, sniffed: str | None, limits: ObjectsSettings) -> None:
    """Whether the stored object is what was declared: the same size (never over the limit) and the
    same type by its magic bytes.

    Raises:
        AttachmentError: ``upload_too_large`` (413), ``size_mismatch`` or ``type_mismatch`` (422).
    """
    if real_size > limits.max_upload_bytes:
        raise AttachmentError("upload_too_large", f"the stored file has {real_size} bytes, over the limit of "
                              f"{limits.max_upload_bytes}", 413)
    if real_size != upload.size:
        raise AttachmentError("size_mismatch", f"the stored file has {real_size} bytes; {upload.size} were declared")
    if sniffed != upload.content_type:
        raise AttachmentError("type_mismatch", f"the stored bytes are {sniffed or 'of an unknown type'}, not "
                              f"{upload.content_type}")


class FileSend(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The attachment part of a ``kind: "file"`` send: the upload and an optional caption (the
    message's ``body``)."""

    upload: str
    caption: str = ""


def check_file_send(send: FileSend, upload: Upload | None, *, user: str, channel: str, now_ms: int) -> None:
    """Whether ``user`` may send ``upload`` in ``channel`` now. Pure; the caller then attaches it
    (:meth:`~mqchat.objects.uploads.UploadStore.attach`, compare-and-set).

    Raises:
        AttachmentError: ``upload_not_found`` (unknown id), ``upload_not_yours`` (another user's upload,
            or one made for another channel), ``upload_incomplete`` (not uploaded and verified yet),
            ``upload_expired`` (unused past its lifetime), ``upload_used`` (already in another message),
            ``caption_too_long``.
    """
    if len(send.caption) > MAX_CAPTION_CHARS:
        raise AttachmentError("caption_too_long", f"the caption is longer than {MAX_CAPTION_CHARS} characters")
    if upload is None:
        raise AttachmentError("upload_not_found", f"no upload {send.upload!r}", 404)
    if upload.owner != user or upload.channel != channel:
        raise AttachmentError("upload_not_yours", "the upload belongs to another user or another channel", 403)
    if upload.state == "attached":
        raise AttachmentError("upload_used", "the upload is already in a message", 409)
    if upload.state == "pending":
        raise AttachmentError("upload_incomplete", "the upload was not completed (PUT the bytes, then "
                              "POST /v1/uploads/{id}/complete)", 409)
    if now_ms >= upload.expires_ms:
        raise AttachmentError("upload_expired", "the upload was not used in time; upload again", 410)


def attachment(upload: Upload, objects: ObjectStore, *, now_s: int, ttl_s: int) -> Attachment:
    """The attachment object of ``upload`` with download URLs valid from ``now_s`` for ``ttl_s``
    seconds. Signing is local computation on both backends (no I/O)."""
    expires = now_s + ttl_s
    thumb = None
    if upload.thumbnail_type is not None:
        thumb = objects.presign_download(upload.thumbnail_key, expires_at=expires)
    return Attachment(
        id=upload.upload_id, filename=upload.filename, content_type=upload.content_type, size=upload.size,
        url=objects.presign_download(upload.object_key, expires_at=expires, filename=upload.filename),
        url_expires=expires, width=upload.width if upload.content_type in IMAGE_TYPES else None,
        height=upload.height if upload.content_type in IMAGE_TYPES else None, thumbnail_url=thumb,
        thumbnail_type=upload.thumbnail_type,
    )
