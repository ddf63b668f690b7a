"""Fixtures: the FCM and APNs stand-ins on free loopback ports, and the real pushers pointed at them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from harness.push_standins.apns import ApnsStandIn
from harness.push_standins.fcm import FcmStandIn
from workers.push.apns import ApnsPusher
from workers.push.fcm import FcmPusher

TIMEOUT_S = 2.0


@pytest.fixture
async def fcm_pusher(fcm_standin: FcmStandIn) -> AsyncIterator[FcmPusher]:
    pusher = FcmPusher(fcm_standin.service_account, project_id=None, endpoint=fcm_standin.endpoint, concurrency=8,
                       timeout_s=TIMEOUT_S)
    yield pusher
    await pusher.aclose()


@pytest.fixture
async def apns_pusher(apns_standin: ApnsStandIn) -> AsyncIterator[ApnsPusher]:
    pusher = ApnsPusher(apns_standin.key_file, key_id=apns_standin.key_id, team_id=apns_standin.team_id,
                        topic="com.example.chat", sandbox=False, host=apns_standin.host, ca_file=apns_standin.ca_file,
                        concurrency=8, timeout_s=TIMEOUT_S)
    yield pusher
    await pusher.aclose()
