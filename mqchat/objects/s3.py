"""The ``s3`` object backend: the S3 API through boto3 (AWS, MinIO, Ceph, R2, ...).

boto3 is synchronous; each call runs in a worker thread (``asyncio.to_thread``). One client is
shared: boto3 clients are thread-safe. Presigning is local computation (SigV4), no round trip.
The bucket must exist; mqchat never creates or configures buckets.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from mqchat.config import ObjectsSettings
from mqchat.errors import StorageError, StorageUnavailable
from mqchat.objects.base import ObjectInfo, ObjectNotFound, PresignedRequest, check_key, content_disposition

T = TypeVar("T")
#: Error codes S3 answers for a missing object (HEAD has no body, so only its status: "404").
_MISSING = {"NoSuchKey", "404", "NotFound"}


class S3ObjectStore:
    """Objects in one bucket of an S3-compatible service.

    Args:
        client: a boto3 S3 client (see :meth:`from_settings`); closed by :meth:`close`.
        bucket: the bucket name.
    """

    def __init__(self, client: Any, bucket: str) -> None:
        self._client = client
        self.bucket = bucket

    @classmethod
    def from_settings(cls, settings: ObjectsSettings) -> S3ObjectStore:
        secret = settings.s3_secret_access_key
        client = boto3.session.Session().client(
            "s3", endpoint_url=settings.s3_endpoint_url, region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key_id,
            aws_secret_access_key=secret.get_secret_value() if secret else None,
            config=Config(signature_version="s3v4", retries={"max_attempts": 3, "mode": "standard"},
                          connect_timeout=5, read_timeout=30,
                          s3={"addressing_style": "path" if settings.s3_path_style else "auto"}),
        )
        assert settings.s3_bucket is not None  # checked by ObjectsSettings
        return cls(client, settings.s3_bucket)

    async def _call(self, fn: Callable[[], T], key: str) -> T:
        try:
            return await asyncio.to_thread(fn)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _MISSING:
                raise ObjectNotFound(key) from None
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            if status >= 500 or code in {"SlowDown", "RequestTimeout"}:
                raise StorageUnavailable(f"s3: {code or status}") from exc
            raise StorageError(f"s3: {code or status}: {exc}") from exc
        except BotoCoreError as exc:  # connection refused, timeouts, no credentials
            raise StorageUnavailable(f"s3: {exc}") from exc

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        check_key(key)
        await self._call(lambda: self._client.put_object(Bucket=self.bucket, Key=key, Body=data,
                                                         ContentType=content_type), key)

    async def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        check_key(key)
        if max_bytes is not None and max_bytes <= 0:
            return b""
        extra = {} if max_bytes is None else {"Range": f"bytes=0-{max_bytes - 1}"}

        def read() -> bytes:
            reply = self._client.get_object(Bucket=self.bucket, Key=key, **extra)
            with reply["Body"] as body:
                data: bytes = body.read()
            return data

        return await self._call(read, key)

    async def head(self, key: str) -> ObjectInfo | None:
        check_key(key)
        try:
            reply = await self._call(lambda: self._client.head_object(Bucket=self.bucket, Key=key), key)
        except ObjectNotFound:
            return None
        return ObjectInfo(key, int(reply["ContentLength"]), reply.get("ContentType"))

    async def delete(self, key: str) -> None:
        check_key(key)
        await self._call(lambda: self._client.delete_object(Bucket=self.bucket, Key=key), key)

    async def move(self, src: str, dst: str) -> None:
        check_key(src)
        check_key(dst)
        await self._call(lambda: self._client.copy_object(Bucket=self.bucket, Key=dst,
                                                          CopySource={"Bucket": self.bucket, "Key": src}), src)
        await self.delete(src)

    def presign_upload(self, key: str, *, content_type: str, size: int, expires_at: int) -> PresignedRequest:
        # A presigned PUT cannot cap the body size; the server checks the stored size (HEAD) before
        # the upload can be used, and deletes an object that is too large.
        check_key(key)
        url: str = self._client.generate_presigned_url(
            "put_object", Params={"Bucket": self.bucket, "Key": key, "ContentType": content_type},
            ExpiresIn=_seconds_until(expires_at), HttpMethod="PUT")
        return PresignedRequest("PUT", url, expires_at, {"Content-Type": content_type})

    def presign_download(self, key: str, *, expires_at: int, filename: str | None = None) -> str:
        check_key(key)
        params = {"Bucket": self.bucket, "Key": key}
        if filename:
            params["ResponseContentDisposition"] = content_disposition(filename)
        url: str = self._client.generate_presigned_url("get_object", Params=params,
                                                       ExpiresIn=_seconds_until(expires_at))
        return url

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)


def _seconds_until(expires_at: int) -> int:
    return max(1, expires_at - int(time.time()))

