"""amqtt-API plugins loaded into a broker under test: they record what the broker calls on them.

Records are JSON lines appended to the file named in the plugin's ``Config`` (the broker runs in
another process); :func:`read_records` reads them back.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amqtt.plugins.base import BaseTopicPlugin

RECORDING = "tests.broker.recording.RecordingPlugin"
ALLOW_ALL = "tests.broker.recording.AllowAllTopicPlugin"


class RecordingPlugin(BaseTopicPlugin):  # type: ignore[misc]
    """Records will publications and ``close()``; as a topic plugin it abstains (returns ``None``)
    on topics under ``abstain_prefix``, denies those under ``deny_prefix`` and allows the rest."""

    @dataclass
    class Config:
        path: str
        """The JSON-lines file records are appended to."""
        abstain_prefix: str = "abstain/"
        deny_prefix: str = "deny/"

    def _record(self, event: str, **fields: Any) -> None:
        with Path(self.config.path).open("a", encoding="utf-8") as out:
            out.write(json.dumps({"event": event, "at": time.time(), **fields}) + "\n")

    async def topic_filtering(self, *, session: Any = None, topic: str | None = None,
                              action: Any = None) -> bool | None:
        if topic is None:
            return False
        if topic.startswith(self.config.abstain_prefix):
            return None
        return not topic.startswith(self.config.deny_prefix)

    async def on_broker_will_published(self, *, client_id: str, message: Any) -> None:
        data = message.data
        self._record("will", client_id=client_id, topic=message.topic,
                     data=bytes(data).decode(errors="replace") if data is not None else None,
                     qos=message.qos, retain=bool(message.retain))

    async def close(self) -> None:
        self._record("close")


class AllowAllTopicPlugin(BaseTopicPlugin):  # type: ignore[misc]
    """A second topic plugin that allows everything."""

    @dataclass
    class Config:
        pass

    async def topic_filtering(self, *, session: Any = None, topic: str | None = None,
                              action: Any = None) -> bool:
        return True


def recording_plugins(path: Path, *, allow_all: bool = False) -> dict[str, Any]:
    """The ``plugins`` entries that load :class:`RecordingPlugin` (and :class:`AllowAllTopicPlugin`)."""
    plugins: dict[str, Any] = {RECORDING: {"path": str(path)}}
    if allow_all:
        plugins[ALLOW_ALL] = {}
    return plugins


def read_records(path: Path, event: str | None = None) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in records if event is None or r["event"] == event]
