import asyncio
import pytest
from mobile_sim.client import Api, Device

pytestmark = pytest.mark.e2e

async def test_smoke(system):
    api = Api(system.api)
    a = await api.create_user("alice", "password1")
    b = await api.create_user("bob", "password1")
    sa = await api.login("alice", "password1", "p1")
    sb = await api.login("bob", "password1", "p1")
    ch = await api.create_channel(sa.token, "group", [b], "g")
    async with Device(sa) as da, Device(sb) as db:
        await da.join(ch); await db.join(ch)
        ack = await da.send(ch, "hello")
        assert ack.ok, ack
        await asyncio.sleep(0.5)
        assert [m.body for m in db.received[ch]] == ["hello"]
    h = await api.history(sa.token, ch)
    assert h["messages"][0]["body"] == "hello"
    await api.aclose()
