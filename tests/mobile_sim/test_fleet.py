"""Simulated devices against a real system: the reconnect table in the real loop (an expired token
re-logs in, a forged one stops), and a device that resumes after missing messages."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import pytest

from mobile_sim import system
from mobile_sim.fleet import Fleet, FleetConfig
from mobile_sim.observe import Observations
from mobile_sim.provision import Token, mint
from mobile_sim.reconnect import Backoff, Failure
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def target() -> Iterator[system.Target]:
    with system.start() as t:
        yield t


@pytest.fixture
async def fleet(target: system.Target) -> AsyncIterator[Fleet]:
    cfg = FleetConfig(keepalive_s=30, ack_timeout_s=1.0, backoff=Backoff(0.05, 0.5))
    async with Fleet(target, Observations(), cfg, seed=1) as f:
        yield f


async def test_expired_token_relogs_in_and_connects(fleet: Fleet, target: system.Target) -> None:
    assert target.jwt_secret is not None
    [user] = await fleet.prov.users(1)
    user.devices = ["phone"]
    device = fleet.add(user, "phone", [])
    expired = mint(target.jwt_secret, user.user_id, "phone", ttl_s=-3600)
    device.token = Token(expired.value, expired.expires_at)
    device.start()
    assert await fleet.wait_ready([device], 20)
    assert device.ready
    assert fleet.relogins == 1
    assert device.failures[Failure.NOT_AUTHORIZED] == 1
    assert device.token.expires_at > time.time()


async def test_token_with_a_bad_signature_stops_without_retrying(fleet: Fleet) -> None:
    [user] = await fleet.prov.users(1)
    user.devices = ["phone"]
    device = fleet.add(user, "phone", [])
    forged = mint("not-the-server-secret-" * 3, user.user_id, "phone")
    device.token = forged
    device.start()
    assert await fleet.wait_ready([device], 20)
    assert device.stopped is not None
    assert device.stopped.failure == Failure.NOT_AUTHORIZED
    assert device.connects == 0
    assert fleet.relogins == 0


async def test_device_back_from_a_network_loss_resumes_every_missed_message(fleet: Fleet) -> None:
    users = await fleet.prov.users(2)
    for u in users:
        u.devices = ["phone"]
    channel = await fleet.prov.channel(users[0], users[1:], "resume")
    sender = fleet.add(users[0], "phone", [channel])
    away = fleet.add(users[1], "phone", [channel])
    token = (await fleet.prov.token(users[0], "phone")).value
    await fleet.init_cursors({channel: await fleet.prov.position(channel, token)})
    assert await fleet.connect([sender, away], rate=0, timeout_s=20) >= 0
    away.lose_network(outage_s=1.0)
    for i in range(30):
        sender.send(channel, f"while you were away {i}")
    assert await fleet.drain_outboxes(20)
    assert await fleet.wait_ready([away], 20, since=time.monotonic() - 0.5)
    await wait_for(lambda: away.channels[channel].last_seq == 30, 5, what="the away device caught up to seq 30")
    got = {d.seq for d in fleet.obs.deliveries if d.device == away.name}
    assert got == set(range(1, 31))
    assert any(d.via == "sync" for d in fleet.obs.deliveries if d.device == away.name)
    online = [o for o in fleet.obs.online if o.device == away.name]
    assert [o.how for o in online] == ["network_loss", "open"]
