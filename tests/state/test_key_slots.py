"""Every multi-key script and transaction touches keys of one Redis Cluster hash slot.

Pure: the slots are computed the way Redis Cluster computes them (``redis.crc.key_slot``, hash tags
included) for the keys the stores build from sample arguments. The cluster runs of the store tests
(``redis_url``'s ``cluster`` parameter) show the same thing on a real cluster, one operation at a time.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from importlib import resources
from typing import TypeVar

import pytest
from redis.crc import key_slot

from mqchat.storage.keys import PRESENCE_SHARDS, Keys, presence_shard
from mqchat.storage.redis_client import RedisClient
from mqchat.storage.redis_state import RedisState

Item = TypeVar("Item")

USERS = ["alice", "bob", "u", "x" * 64, "A-b_9", *(f"user{i}" for i in range(200))]
CHANNELS = ["c1", "general", "c-" + "z" * 60]


def slots(keys: list[str]) -> set[int]:
    return {key_slot(k.encode()) for k in keys}


def cluster_groups(items: list[Item], key: Callable[[Item], str]) -> list[list[Item]]:
    """:meth:`RedisClient.slot_groups` of a cluster client (never connects)."""
    cluster = RedisClient.from_url("redis+cluster://127.0.0.1:1")
    assert cluster.cluster
    return cluster.slot_groups(items, key)


def sample_calls(k: Keys) -> dict[str, list[list[str]]]:
    """For each script: the KEYS of sample calls, built by the stores' own code where they expose it."""
    state = RedisState(RedisClient.from_url("redis://127.0.0.1:1/0", k.prefix))  # never connects
    return {
        "presence_update.lua": [state._update_args(u, "phone|c1", "connect", "online", 0, 1)[0] for u in USERS],
        "presence_expire.lua": [[k.leases(s), k.changes(s)] for s in range(PRESENCE_SHARDS)],
        "read_marker.lua": [[k.read(u), k.mentions(u, c)] for u in USERS for c in CHANNELS],
        # the bridge's batched marker moves, grouped the way a cluster client groups them (per slot)
        "read_markers.lua": [state._read_markers_args(group)[0] for group in cluster_groups(
            [(u, c, 1, seq) for seq in (1, 2) for u in USERS for c in CHANNELS], lambda item: k.read(item[0]))],
        "stream_append.lua": [[k.push_jobs], [k.message_log]],
        "lease_claim.lua": [[k.lease(p)] for p in range(64)],
        "lease_release.lua": [[k.lease(p)] for p in range(64)],
        "rate_limit.lua": [[k.rate("login", u)] for u in USERS],
        "refresh_rotate.lua": [[k.refresh_family("fam-" + u)] for u in USERS],
        "slow_mode.lua": [[k.slow_mode(c, u)] for u in USERS for c in CHANNELS],
        "push_register.lua": [[k.push_devices(u)] for u in USERS],
        "leader_claim.lua": [[k.leader(n)] for n in ("presence", "x" * 40)],
        "leader_release.lua": [[k.leader(n)] for n in ("presence", "x" * 40)],
    }


@pytest.mark.parametrize("prefix", ["mqchat:", "t:", ""])
def test_every_script_call_touches_one_slot(prefix: str) -> None:
    calls = sample_calls(Keys(prefix))
    scripts = {p.name for p in resources.files("mqchat.storage").joinpath("lua").iterdir() if p.name.endswith(".lua")}
    assert scripts == set(calls), "a new script needs sample calls here"
    for name, keys_of_calls in calls.items():
        for keys in keys_of_calls:
            assert len(slots(keys)) == 1, f"{name} called with keys in different slots: {keys}"


def test_the_expiry_script_derives_user_keys_in_its_shards_slot() -> None:
    """presence_expire.lua builds each user's keys from the shard prefix: they must share the shard's slot."""
    k = Keys()
    for user in USERS:
        shard = presence_shard(user)
        derived = [k.presence_shard_prefix(shard) + "conns:" + user, k.presence_shard_prefix(shard) + "user:" + user]
        assert derived == [k.conns(user), k.user_presence(user)]
        assert slots([k.leases(shard), k.changes(shard), *derived]) == slots([k.leases(shard)])


def test_presence_shards_spread_users_and_slots() -> None:
    rng = random.Random(1)
    counts = [0] * PRESENCE_SHARDS
    for _ in range(10_000):
        counts[presence_shard("".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=12)))] += 1
    assert min(counts) > 10_000 / PRESENCE_SHARDS / 2  # roughly even
    assert len(slots([Keys().leases(s) for s in range(PRESENCE_SHARDS)])) == PRESENCE_SHARDS


TRANSACTIONS: dict[str, Callable[[Keys], list[str]]] = {
    # push_state: MULTI of commit_fanout_batch, complete_fanout, settle_send; WATCH of move_due_retries
    "push queues": lambda k: [k.push_jobs, k.push_sends, k.push_retry, k.push_dlq, k.push_fanout_progress("1-0"),
                              k.push_fanout_progress("1796303657000-12")],
}


@pytest.mark.parametrize("name", TRANSACTIONS)
def test_every_transaction_touches_one_slot(name: str) -> None:
    assert len(slots(TRANSACTIONS[name](Keys()))) == 1


@pytest.mark.parametrize("prefix", ["a{b", "x}:", "{tag}:"])
def test_a_prefix_with_braces_is_refused(prefix: str) -> None:
    from mqchat.errors import ConfigError

    with pytest.raises(ValueError, match="braces"):
        Keys(prefix)
    with pytest.raises(ConfigError, match="braces"):
        RedisClient.from_url("redis://127.0.0.1:1/0", prefix)
