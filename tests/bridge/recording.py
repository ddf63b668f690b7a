"""The MQTT side of the bridge, recorded instead of sent (the e2e tests use a real broker)."""

from __future__ import annotations

from collections.abc import Sequence

from mqchat import schema


class RecordingPublisher:
    """A :class:`bridge.pipeline.Publisher` that keeps what it was given, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    async def publish(self, items: Sequence[tuple[str, bytes]]) -> None:
        self.sent.extend(items)

    def acks(self) -> list[schema.Ack]:
        return [schema.decode_ack(p) for t, p in self.sent if t.startswith("dev/")]

    def stream(self) -> list[schema.ChannelMessage]:
        return [schema.decode_channel_message(p) for t, p in self.sent if t.startswith("ch/")]
