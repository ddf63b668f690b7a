"""Attachments: uploads to an object store through signed URLs, verified before use, carried by
``kind: "file"`` messages.

::

    client ── POST /v1/uploads {channel, filename, content_type, size} ──► API: member? limits? ─► pending
       │          ◄── upload_id + signed PUT (method, url, headers)
       ├── PUT bytes ──► object store (local: API /v1/objects/..., HMAC-signed; s3: presigned)
       ├── POST /v1/uploads/{id}/complete ──► API: real size + magic bytes ─► ready ─► thumbnail job (Redis)
       │                                                                 workers: Pillow thumbnail next to it
       └── send {kind: "file", upload, caption} ──► bridge: check_file_send + attach ─► stream/history carry
                                                    an Attachment (signed, expiring download URLs)

Modules: :mod:`~mqchat.objects.base` (the :class:`ObjectStore` protocol), :mod:`~mqchat.objects.local`
and :mod:`~mqchat.objects.s3` (backends), :mod:`~mqchat.objects.signing` (HMAC URLs),
:mod:`~mqchat.objects.uploads` (records), :mod:`~mqchat.objects.sniff` and
:mod:`~mqchat.objects.thumbnails` (bytes), :mod:`~mqchat.objects.service` (I/O around the rules).

The functions that define policy are in :mod:`mqchat.objects.policy`: ``check_upload_request``,
``check_stored``, ``check_file_send`` and ``attachment``.
"""
