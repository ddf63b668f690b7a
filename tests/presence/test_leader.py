"""The fenced leader lease (real redis-server) and the leadership loop of the workers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from mqchat.storage.leases import LeaderLease
from mqchat.storage.redis_client import RedisClient
from tests.conftest import RedisServer
from tests.waiting import wait_for
from workers.leader import Leadership, LostLeadership


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[RedisClient]:
    client = RedisClient.from_url(redis_server.url, prefix="t:")
    yield client
    await client.close()


async def test_one_holder_at_a_time_and_every_new_holder_gets_a_higher_token(redis: RedisClient) -> None:
    lease = LeaderLease(redis, "job")
    a, _ = await lease.claim("a", lease_ms=300)
    assert a == 1
    assert (await lease.claim("b", lease_ms=300))[0] == 0  # held by a
    assert (await lease.claim("a", lease_ms=300))[0] == a  # a renews: the same token
    await asyncio.sleep(0.35)  # a stops renewing; its lease ends on Redis's clock
    b, _ = await lease.claim("b", lease_ms=300)
    assert b == a + 1
    assert (await lease.claim("a", lease_ms=300))[0] == 0  # a is not the holder any more
    assert not await lease.release("a", a)  # nor may it release b's lease
    assert await lease.release("b", b)
    c, _ = await lease.claim("a", lease_ms=300)  # released: free at once, and the token still grows
    assert c == b + 1


async def test_an_owner_that_lost_its_lease_and_takes_it_again_gets_a_new_token(redis: RedisClient) -> None:
    lease = LeaderLease(redis, "job")
    first, _ = await lease.claim("a", lease_ms=100)
    await asyncio.sleep(0.15)
    again, _ = await lease.claim("a", lease_ms=100)
    assert again == first + 1  # work started under the first token must not go on under the second


async def test_check_fails_once_another_instance_holds_the_lease(redis: RedisClient) -> None:
    mine = Leadership(LeaderLease(redis, "job"), "a", lease_ms=200)
    with pytest.raises(LostLeadership):
        await mine.check()  # never claimed
    other = LeaderLease(redis, "job")
    mine.token = (await LeaderLease(redis, "job").claim("a", lease_ms=200))[0]
    await mine.check()  # still ours
    await asyncio.sleep(0.25)  # "a" paused past its lease
    assert (await other.claim("b", lease_ms=5000))[0] > 0
    with pytest.raises(LostLeadership):
        await mine.check()


async def test_the_job_runs_on_one_instance_and_moves_when_its_leader_stops(redis: RedisClient) -> None:
    running: list[str] = []

    def job_of(name: str):  # type: ignore[no-untyped-def]
        async def job(lease: Leadership) -> None:
            running.append(name)
            try:
                await asyncio.Event().wait()
            finally:
                running.remove(name)
        return job

    a = Leadership(LeaderLease(redis, "job"), "a", lease_ms=1000)
    b = Leadership(LeaderLease(redis, "job"), "b", lease_ms=1000)
    ta = asyncio.create_task(a.run(job_of("a")))
    await wait_for(lambda: running == ["a"], 5, what="a leads")
    tb = asyncio.create_task(b.run(job_of("b")))
    await asyncio.sleep(1.5)  # more than a lease: b must still wait, a renews
    assert running == ["a"]
    token_a = a.token
    ta.cancel()  # a clean stop releases the lease: b takes over without waiting for it to expire
    await asyncio.gather(ta, return_exceptions=True)
    await wait_for(lambda: running == ["b"], 2, what="b leads")
    assert b.token == token_a + 1
    tb.cancel()
    await asyncio.gather(tb, return_exceptions=True)
    assert running == []


async def test_a_failing_job_raises_out_of_the_loop_and_releases_the_lease(redis: RedisClient) -> None:
    async def job(lease: Leadership) -> None:
        raise RuntimeError("broken")

    a = Leadership(LeaderLease(redis, "job"), "a", lease_ms=5000)
    with pytest.raises(RuntimeError, match="broken"):
        await a.run(job)
    assert (await LeaderLease(redis, "job").claim("b", lease_ms=5000))[0] > 0  # released, not left to expire


async def test_a_job_cancelled_from_outside_ends_its_term_and_the_loop_goes_on(redis: RedisClient) -> None:
    """A job task cancelled by something other than the loop (its own code, a library) is not a
    failure of the loop: the term ends, the lease is claimed again and the job started anew."""
    mine = Leadership(LeaderLease(redis, "job"), "a", lease_ms=300)
    starts = 0

    async def job(_lease: Leadership) -> None:
        nonlocal starts
        starts += 1
        if starts == 1:
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
        await asyncio.Event().wait()

    runner = asyncio.create_task(mine.run(job))
    try:
        await wait_for(lambda: starts >= 2, 5, what="the job started again after its cancellation")
        assert not runner.done()
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
