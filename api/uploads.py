"""Attachment routes: start an upload, complete it, get download URLs, and the ``local`` object
backend's signed-URL endpoints. The rules live in :mod:`mqchat.objects`; see docs/attachments.md.

=============================================  ==============================================================
route                                          what
=============================================  ==============================================================
``POST /v1/uploads``                           members of the channel: an upload id and a signed upload request
``POST /v1/uploads/{id}/complete``             the uploader: verify the stored bytes (size, magic bytes)
``GET /v1/uploads/{id}/download``              members of its channel: the attachment with fresh signed URLs
``PUT /v1/objects/{key}?op=put&...&sig=``      ``local`` backend: store the bytes a signed URL allows
``GET /v1/objects/{key}?op=get&...&sig=``      ``local`` backend: read an object through a signed URL
=============================================  ==============================================================
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request, status
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from api.deps import Me, Svc, member_channel
from api.errors import ApiError, error_body
from api.limits import client_address
from mqchat import auth
from mqchat.config import Settings
from mqchat.objects.base import InvalidKey, content_disposition
from mqchat.objects.factory import open_attachments
from mqchat.objects.local import LocalObjectStore, TooLarge
from mqchat.objects.policy import Attachment, AttachmentError, UploadRequest
from mqchat.objects.service import Attachments
from mqchat.objects.signing import OBJECTS_PATH, Grant, Op, UrlRefused
from mqchat.objects.sniff import sniff
from mqchat.objects.uploads import Upload
from mqchat.storage.redis_client import RedisClient
from mqchat.storage.thumbnail_jobs import ThumbnailJobs

#: Requests under this prefix are not capped by ``http.max_body_bytes``: the signed URL caps them.
OBJECTS_PREFIX = OBJECTS_PATH + "/"

router = APIRouter(prefix="/v1", tags=["uploads"])


def opener(settings: Settings, keys: auth.KeySet, redis: RedisClient) -> Callable[[], Attachments]:
    """This deployment's attachment service, opened on the first call and the same one afterwards
    (building the app needs no object store; nothing held must be closed: the records open SQLite
    per call)."""
    opened: list[Attachments] = []

    def get() -> Attachments:
        if not opened:
            opened.append(open_attachments(settings, keys.signing_key, ThumbnailJobs(redis)))
        return opened[0]

    return get


def install(app: FastAPI, open_service: Callable[[], Attachments]) -> None:
    """Add the attachment routes to ``app``, over the service ``open_service`` gives (see :func:`opener`)."""
    app.state.open_attachments = open_service
    app.include_router(router)


def attachments_of(app: FastAPI) -> Attachments:
    """The app's attachment service (opened now if this is the first use).

    Raises:
        ConfigError: the object store cannot be opened with these settings.
    """
    found: Attachments | None = getattr(app.state, "attachments", None)
    if found is None:
        found = app.state.attachments = app.state.open_attachments()
    return found


def attachments(request: Request) -> Attachments:
    return attachments_of(request.app)


Att = Annotated[Attachments, Depends(attachments)]


class CreateUpload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: str = Field(min_length=1, max_length=64)
    filename: str = Field(min_length=1, max_length=1024)
    content_type: str = Field(min_length=3, max_length=255)
    size: int = Field(description="Bytes the file has; the stored object must have exactly as many.")


class SignedRequest(BaseModel):
    method: str
    url: str
    headers: dict[str, str]
    expires_at: int = Field(description="Seconds since the epoch.")


class UploadOut(BaseModel):
    upload_id: str
    channel: str
    filename: str
    content_type: str
    size: int
    state: str
    expires_ms: int = Field(description="Unless sent in a message by then, the upload is deleted.")
    width: int | None = None
    height: int | None = None


class UploadStarted(UploadOut):
    upload: SignedRequest = Field(description="The request that uploads the bytes, to be made as it is.")


class AttachmentOut(BaseModel):
    id: str
    filename: str
    content_type: str
    size: int
    url: str
    url_expires: int
    width: int | None = None
    height: int | None = None
    thumbnail_url: str | None = None
    thumbnail_type: str | None = None


def _upload_out(upload: Upload) -> dict[str, Any]:
    return {"upload_id": upload.upload_id, "channel": upload.channel, "filename": upload.filename,
            "content_type": upload.content_type, "size": upload.size, "state": upload.state,
            "expires_ms": upload.expires_ms, "width": upload.width, "height": upload.height}


def _refused(exc: AttachmentError) -> ApiError:
    return ApiError(exc.status, exc.code, exc.message)


def _attachment_out(att: Attachment) -> AttachmentOut:
    return AttachmentOut(id=att.id, filename=att.filename, content_type=att.content_type, size=att.size, url=att.url,
                         url_expires=att.url_expires, width=att.width, height=att.height,
                         thumbnail_url=att.thumbnail_url, thumbnail_type=att.thumbnail_type)


@router.post("/uploads", status_code=status.HTTP_201_CREATED, response_model=UploadStarted,
             responses={413: {"description": "upload_too_large"}, 415: {"description": "forbidden_type"},
                        404: {"description": "channel_not_found"}})
async def create_upload(body: CreateUpload, me: Me, svc: Svc, att: Att) -> UploadStarted:
    """Start an upload to a channel you are a member of: make the returned request, then complete it."""
    await svc.limits.charge("uploads-user", me.user_id)
    await member_channel(svc, me, body.channel)
    try:
        upload, signed = await att.start_upload(me.user_id, UploadRequest(body.channel, body.filename,
                                                                          body.content_type, body.size))
    except AttachmentError as exc:
        raise _refused(exc) from None
    return UploadStarted(**_upload_out(upload), upload=SignedRequest(method=signed.method, url=signed.url,
                                                                     headers=signed.headers,
                                                                     expires_at=signed.expires_at))


@router.post("/uploads/{upload_id}/complete", response_model=UploadOut,
             responses={409: {"description": "upload_incomplete"}, 410: {"description": "upload_expired"},
                        422: {"description": "size_mismatch, type_mismatch"}})
async def complete_upload(upload_id: str, me: Me, att: Att) -> UploadOut:
    """Verify your uploaded bytes (real size, type by magic bytes); a mismatch deletes them."""
    try:
        upload = await att.complete(me.user_id, upload_id)
    except AttachmentError as exc:
        raise _refused(exc) from None
    return UploadOut(**_upload_out(upload))


@router.get("/uploads/{upload_id}/download", response_model=AttachmentOut,
            responses={404: {"description": "upload_not_found"}})
async def download(upload_id: str, me: Me, svc: Svc, att: Att) -> AttachmentOut:
    """Fresh signed URLs of an attachment: for members of its channel once it is in a message, and
    for its uploader once it is complete. Anyone else gets 404 ``upload_not_found``."""
    upload = await att.uploads.get(upload_id)
    visible = upload is not None and (
        (upload.state == "attached" and await svc.directory.memberships([(upload.channel, me.user_id)]))
        or (upload.state == "ready" and upload.owner == me.user_id))
    if upload is None or not visible:
        raise ApiError(404, "upload_not_found", "no such upload, or it is not in a channel you are a member of")
    return _attachment_out(att.attachment(upload))


# --- the local backend's signed URLs --------------------------------------------------------------


def _local(att: Attachments) -> LocalObjectStore:
    if not isinstance(att.objects, LocalObjectStore):
        raise ApiError(404, "not_found", "objects are served by the object store, not by the API")
    return att.objects


def _verified(store: LocalObjectStore, op: Op, key: str, request: Request) -> Grant:
    """The grant of the request's signed URL.

    Raises:
        ApiError: 403 ``url_invalid`` or ``url_expired``.
    """
    try:
        grant = store.signer.verify(op, key, dict(request.query_params), now=int(time.time()))
        store.path(key)
    except UrlRefused as exc:
        raise ApiError(403, exc.code, exc.message) from None
    except InvalidKey:
        raise ApiError(403, "url_invalid", "the URL names no object of this store") from None
    return grant


@router.put("/objects/{key:path}", include_in_schema=False)
async def put_object(key: str, request: Request, svc: Svc, att: Att) -> JSONResponse:
    await svc.limits.charge("uploads-ip", client_address(request))
    store = _local(att)
    grant = _verified(store, "put", key, request)
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype != grant.content_type:
        raise ApiError(403, "url_invalid", f"send Content-Type: {grant.content_type} (it is part of the signature)")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > grant.max_bytes:
        raise ApiError(413, "upload_too_large", f"this upload URL takes at most {grant.max_bytes} bytes")
    try:
        size = await store.write_stream(key, request.stream(), limit=grant.max_bytes)
    except TooLarge:
        raise ApiError(413, "upload_too_large", f"this upload URL takes at most {grant.max_bytes} bytes") from None
    return JSONResponse({"size": size})


@router.get("/objects/{key:path}", include_in_schema=False)
async def get_object(key: str, request: Request, att: Att) -> Response:
    store = _local(att)
    grant = _verified(store, "get", key, request)
    path = store.path(key)  # the key passed the grammar in verify; this also checks it stays under the root
    head = await store.get(key, max_bytes=4096) if path.is_file() else None
    if head is None:
        return JSONResponse(error_body("object_not_found", "the object no longer exists"), status_code=404)
    headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=3600"}
    if grant.filename:
        headers["Content-Disposition"] = content_disposition(grant.filename)
    # The bytes were checked against their type when the upload completed; say what they are.
    return FileResponse(path, media_type=sniff(head) or "application/octet-stream", headers=headers)
