"""Both stand-ins at once, and the ``mqchat up`` settings that point its push workers at them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.push_standins.apns import ApnsStandIn
from harness.push_standins.fcm import FcmStandIn


@dataclass
class PushStandins:
    fcm: FcmStandIn
    apns: ApnsStandIn

    def env(self, *, apns_topic: str = "com.example.mobile-sim") -> dict[str, str]:
        """``mqchat up`` settings that point its push workers at the stand-ins (see docs/push.md)."""
        f, a = self.fcm, self.apns
        return {
            "MQCHAT_PUSH__FCM_SERVICE_ACCOUNT_FILE": str(f.service_account), "MQCHAT_PUSH__FCM_ENDPOINT": f.endpoint,
            "MQCHAT_PUSH__APNS_KEY_FILE": str(a.key_file), "MQCHAT_PUSH__APNS_KEY_ID": a.key_id,
            "MQCHAT_PUSH__APNS_TEAM_ID": a.team_id, "MQCHAT_PUSH__APNS_TOPIC": apns_topic,
            "MQCHAT_PUSH__APNS_HOST": a.host, "MQCHAT_PUSH__APNS_CA_FILE": str(a.ca_file),
            "MQCHAT_PUSH__REQUEST_TIMEOUT_S": "5",
        }

    def received(self) -> list[tuple[str, str, dict[str, Any]]]:
        """``(platform, device token, payload)`` of every push answered with success so far."""
        out: list[tuple[str, str, dict[str, Any]]] = []
        out += [("fcm", r.token, r.payload) for r in self.fcm.recorder.delivered()]
        out += [("apns", r.token, r.payload) for r in self.apns.recorder.delivered()]
        return out


@contextlib.contextmanager
def push_standins(workdir: Path) -> Iterator[PushStandins]:
    """The FCM and APNs stand-ins in this process (so the caller sees every push they receive),
    their keys and certificates in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    fcm = FcmStandIn(workdir).start()
    apns = ApnsStandIn(workdir).start()
    try:
        yield PushStandins(fcm, apns)
    finally:
        apns.stop()
        fcm.stop()
