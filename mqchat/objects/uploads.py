"""Upload records: what was asked for, what was verified, and which message uses it.

::

    POST /v1/uploads ──► pending ──(client PUTs the bytes, then POST .../complete:
                           │        real size and magic bytes checked)──► ready ──(kind "file" send)──► attached
                           │                                               │                             │
                           └── unused past objects.unused_ttl_s ───────────┴──► removed (cleanup)       │
                                                                     message deleted ──► removed ◄──────┘

:class:`UploadStore` is the protocol; :class:`SqliteUploadStore` the embedded implementation (its
own small database, ``<data_dir>/uploads.db``). A PostgreSQL version implements the same protocol.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from mqchat.errors import StorageError, StorageUnavailable

T = TypeVar("T")
UploadState = Literal["pending", "ready", "attached"]


@dataclass(frozen=True, slots=True)
class Upload:
    """One upload. ``size`` and ``content_type`` are the declared ones until ``state`` is ``ready``,
    then the verified ones (they must match)."""

    upload_id: str
    channel: str
    owner: str
    filename: str
    content_type: str
    size: int
    created_ms: int
    expires_ms: int
    """Removed by the cleanup after this, unless attached to a message."""
    state: UploadState = "pending"
    width: int | None = None
    height: int | None = None
    thumbnail_type: str | None = None
    """Content type of the thumbnail once the worker made one (images only)."""
    cmid: str | None = None
    """The ``cmid`` of the owner's ``file`` message that attached it (retries of it attach again)."""

    @property
    def incoming_key(self) -> str:
        return incoming_key(self.upload_id)

    @property
    def object_key(self) -> str:
        return object_key(self.upload_id)

    @property
    def thumbnail_key(self) -> str:
        return thumbnail_key(self.upload_id)


def incoming_key(upload_id: str) -> str:
    """Where the client's signed upload writes. Completing moves it to :func:`object_key` and checks it
    there, so a second PUT with a still-valid upload URL cannot replace bytes already verified."""
    return f"uploads/{upload_id}/incoming"


def object_key(upload_id: str) -> str:
    return f"uploads/{upload_id}/original"


def thumbnail_key(upload_id: str) -> str:
    """Next to the original."""
    return f"uploads/{upload_id}/thumbnail"


class UploadStore(Protocol):
    """Upload records. Writes that change state are compare-and-set, so two requests racing on one
    upload cannot both win."""

    async def create(self, upload: Upload) -> None: ...

    async def get(self, upload_id: str) -> Upload | None: ...

    async def mark_ready(self, upload_id: str, *, width: int | None, height: int | None) -> bool:
        """pending → ready; False when it was not pending."""
        ...

    async def set_image(self, upload_id: str, *, width: int, height: int, thumbnail_type: str | None) -> None:
        """Record an image's dimensions and its thumbnail's type (thumbnail worker)."""
        ...

    async def attach(self, upload_id: str, *, owner: str, channel: str, cmid: str) -> bool:
        """ready → attached by ``owner``'s message ``cmid`` in ``channel``; True also when that same
        message attached it before (a retried send). False otherwise."""
        ...

    async def by_messages(self, keys: Sequence[tuple[str, str, str]]) -> dict[tuple[str, str, str], Upload]:
        """Attached uploads by ``(channel, sender, cmid)`` of the messages that carry them."""
        ...

    async def unused_before(self, now_ms: int, limit: int) -> list[Upload]:
        """Uploads not attached whose ``expires_ms`` is at or before ``now_ms``, oldest first."""
        ...

    async def remove(self, upload_id: str) -> bool:
        """Delete the record; False when there was none."""
        ...

    async def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (
    upload_id      TEXT PRIMARY KEY,
    channel_id     TEXT NOT NULL,
    owner          TEXT NOT NULL,
    filename       TEXT NOT NULL,
    content_type   TEXT NOT NULL,
    size           INTEGER NOT NULL,
    created_ms     INTEGER NOT NULL,
    expires_ms     INTEGER NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('pending', 'ready', 'attached')),
    width          INTEGER,
    height         INTEGER,
    thumbnail_type TEXT,
    cmid           TEXT
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS uploads_message ON uploads (channel_id, owner, cmid);
CREATE INDEX IF NOT EXISTS uploads_unused ON uploads (state, expires_ms);
"""
_COLUMNS = ("upload_id, channel_id, owner, filename, content_type, size, created_ms, expires_ms, state, width, "
            "height, thumbnail_type, cmid")


def _row(row: Sequence[Any]) -> Upload:
    return Upload(*row)


class SqliteUploadStore:
    """Upload records in SQLite. A short-lived connection per call, in a worker thread: uploads are
    rare next to messages, and nothing stays open that a composition root would have to close."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._ready = False

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=5, isolation_level=None)
        if not self._ready:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            self._ready = True
        return conn

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def work() -> T:
            conn = self._connect()
            try:
                return fn(conn)
            finally:
                conn.close()

        try:
            return await asyncio.to_thread(work)
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise StorageUnavailable(f"uploads db: {exc}") from exc
            raise StorageError(f"uploads db: {exc}") from exc
        except sqlite3.Error as exc:
            raise StorageError(f"uploads db: {exc}") from exc

    async def create(self, upload: Upload) -> None:
        values = (upload.upload_id, upload.channel, upload.owner, upload.filename, upload.content_type, upload.size,
                  upload.created_ms, upload.expires_ms, upload.state, upload.width, upload.height,
                  upload.thumbnail_type, upload.cmid)
        await self._run(lambda c: c.execute(f"INSERT INTO uploads ({_COLUMNS}) VALUES ({','.join('?' * 13)})",
                                            values))

    async def get(self, upload_id: str) -> Upload | None:
        row = await self._run(lambda c: c.execute(f"SELECT {_COLUMNS} FROM uploads WHERE upload_id=?",
                                                  (upload_id,)).fetchone())
        return _row(row) if row else None

    async def mark_ready(self, upload_id: str, *, width: int | None, height: int | None) -> bool:
        n = await self._run(lambda c: c.execute(
            "UPDATE uploads SET state='ready', width=?, height=? WHERE upload_id=? AND state='pending'",
            (width, height, upload_id)).rowcount)
        return bool(n)

    async def set_image(self, upload_id: str, *, width: int, height: int, thumbnail_type: str | None) -> None:
        await self._run(lambda c: c.execute(
            "UPDATE uploads SET width=?, height=?, thumbnail_type=? WHERE upload_id=?",
            (width, height, thumbnail_type, upload_id)))

    async def attach(self, upload_id: str, *, owner: str, channel: str, cmid: str) -> bool:
        def cas(c: sqlite3.Connection) -> bool:
            try:
                n = c.execute("UPDATE uploads SET state='attached', cmid=? WHERE upload_id=? AND state='ready' "
                              "AND owner=? AND channel_id=?", (cmid, upload_id, owner, channel)).rowcount
            except sqlite3.IntegrityError:  # this message already carries another upload
                return False
            if n:
                return True
            again = c.execute("SELECT 1 FROM uploads WHERE upload_id=? AND state='attached' AND owner=? "
                              "AND channel_id=? AND cmid=?", (upload_id, owner, channel, cmid)).fetchone()
            return again is not None

        return await self._run(cas)

    async def by_messages(self, keys: Sequence[tuple[str, str, str]]) -> dict[tuple[str, str, str], Upload]:
        wanted = list(dict.fromkeys(keys))

        def query(c: sqlite3.Connection) -> dict[tuple[str, str, str], Upload]:
            found: dict[tuple[str, str, str], Upload] = {}
            for i in range(0, len(wanted), 300):  # 3 parameters each; SQLite allows 999 by default
                chunk = wanted[i:i + 300]
                where = " OR ".join(["(channel_id=? AND owner=? AND cmid=?)"] * len(chunk))
                params = [p for key in chunk for p in key]
                for row in c.execute(f"SELECT {_COLUMNS} FROM uploads WHERE state='attached' AND ({where})", params):
                    up = _row(row)
                    assert up.cmid is not None
                    found[(up.channel, up.owner, up.cmid)] = up
            return found

        return await self._run(query) if wanted else {}

    async def unused_before(self, now_ms: int, limit: int) -> list[Upload]:
        rows = await self._run(lambda c: c.execute(
            f"SELECT {_COLUMNS} FROM uploads WHERE state IN ('pending', 'ready') AND expires_ms <= ? "
            "ORDER BY expires_ms LIMIT ?", (now_ms, limit)).fetchall())
        return [_row(r) for r in rows]

    async def remove(self, upload_id: str) -> bool:
        n = await self._run(lambda c: c.execute("DELETE FROM uploads WHERE upload_id=?", (upload_id,)).rowcount)
        return bool(n)

    async def close(self) -> None:
        return None


class MemoryUploadStore:
    """Upload records in a dict (unit tests, and the contract suite's reference)."""

    def __init__(self) -> None:
        self._rows: dict[str, Upload] = {}

    async def create(self, upload: Upload) -> None:
        if upload.upload_id in self._rows:
            raise StorageError(f"upload {upload.upload_id} exists")
        self._rows[upload.upload_id] = upload

    async def get(self, upload_id: str) -> Upload | None:
        return self._rows.get(upload_id)

    async def mark_ready(self, upload_id: str, *, width: int | None, height: int | None) -> bool:
        up = self._rows.get(upload_id)
        if up is None or up.state != "pending":
            return False
        self._rows[upload_id] = replace(up, state="ready", width=width, height=height)
        return True

    async def set_image(self, upload_id: str, *, width: int, height: int, thumbnail_type: str | None) -> None:
        up = self._rows.get(upload_id)
        if up is not None:
            self._rows[upload_id] = replace(up, width=width, height=height, thumbnail_type=thumbnail_type)

    async def attach(self, upload_id: str, *, owner: str, channel: str, cmid: str) -> bool:
        up = self._rows.get(upload_id)
        if up is None or up.owner != owner or up.channel != channel:
            return False
        if up.state == "attached":
            return up.cmid == cmid
        if up.state != "ready" or any(u.state == "attached" and (u.channel, u.owner, u.cmid) == (channel, owner, cmid)
                                      for u in self._rows.values()):
            return False
        self._rows[upload_id] = replace(up, state="attached", cmid=cmid)
        return True

    async def by_messages(self, keys: Sequence[tuple[str, str, str]]) -> dict[tuple[str, str, str], Upload]:
        wanted = set(keys)
        return {(u.channel, u.owner, u.cmid): u for u in self._rows.values()
                if u.state == "attached" and u.cmid is not None and (u.channel, u.owner, u.cmid) in wanted}

    async def unused_before(self, now_ms: int, limit: int) -> list[Upload]:
        rows = sorted((u for u in self._rows.values() if u.state != "attached" and u.expires_ms <= now_ms),
                      key=lambda u: u.expires_ms)
        return rows[:limit]

    async def remove(self, upload_id: str) -> bool:
        return self._rows.pop(upload_id, None) is not None

    async def close(self) -> None:
        return None


_check_sqlite: type[UploadStore] = SqliteUploadStore
_check_memory: type[UploadStore] = MemoryUploadStore
