"""Transactions follow a slot that moved to another primary (the client's slot map is stale)."""

from __future__ import annotations

from redis.asyncio.client import Pipeline
from redis.crc import key_slot

from mqchat.storage.push_state import PushState, SendJob
from mqchat.storage.redis_client import RedisClient
from tests.conftest import RedisClusterServers


def owner_of(cluster: RedisClusterServers, slot: int) -> tuple[str, int]:
    """``(node id, port)`` of the primary serving ``slot``, from ``CLUSTER NODES``."""
    for line in cluster.cli(cluster.ports[0], "cluster", "nodes").splitlines():
        node_id, address, *_rest = line.split()
        for part in line.split()[8:]:
            low, _, high = part.partition("-")
            if low.isdigit() and int(low) <= slot <= int(high or low):
                return node_id, int(address.split("@")[0].rsplit(":", 1)[1])
    raise AssertionError(f"no node serves slot {slot}")


def move_empty_slot(cluster: RedisClusterServers, slot: int) -> int:
    """Give the (keyless) ``slot`` to another primary; returns that primary's port."""
    _source_id, source_port = owner_of(cluster, slot)
    target_port = next(p for p in cluster.ports if p != source_port)
    target_id = cluster.cli(target_port, "cluster", "myid").strip()
    for port in [target_port, source_port, *(p for p in cluster.ports if p not in (source_port, target_port))]:
        cluster.cli(port, "cluster", "setslot", str(slot), "node", target_id)
    return target_port


def job(n: int) -> SendJob:
    return SendJob(key=f"m{n}:bob:phone", message_id=f"m{n}", user="bob", device="phone", channel="c1", epoch=1,
                   seq=n, sender="alice", kind="text", body="hi", badge=1, ts=0, first_ms=0)


async def test_transactions_and_watch_follow_a_moved_slot(redis_cluster: RedisClusterServers) -> None:
    for port in redis_cluster.ports:
        redis_cluster.cli(port, "flushall")
    redis = RedisClient.from_url(redis_cluster.url, "mv:")
    push = PushState(redis)
    marker = "mv:push:{queues}:probe"
    slot = key_slot(marker.encode())
    try:
        def probe(pipe: Pipeline) -> None:
            pipe.set(marker, "1")
            pipe.delete(marker)

        assert await redis.pipelined(probe, transaction=True) == [True, 1]  # the client knows the slot's node now
        move_empty_slot(redis_cluster, slot)
        assert await push.move_due_retries(now_ms=1) == 0  # WATCH sent to the old node first: MOVED, followed
        target = move_empty_slot(redis_cluster, slot)  # and once more
        await push.enqueue_sends([job(1), job(2)])  # a MULTI on {queues}, sent to the old node first
        assert redis_cluster.cli(target, "xlen", "mv:push:{queues}:sends").strip() == "2"
        await push.settle_send("0-1", retry=(0, job(3)))
        assert await push.move_due_retries(now_ms=1) == 1
        assert redis_cluster.cli(target, "xlen", "mv:push:{queues}:sends").strip() == "3"
    finally:
        await redis.close()
