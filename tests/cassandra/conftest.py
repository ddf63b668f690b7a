"""Fixtures: a migrated keyspace on the CQL stand-in, and a Cassandra message store on it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mqchat.storage.cassandra import CassandraMessageStore
from tests.cassandra_standin import StandIn
from tests.cassandra_standin.harness import Target, cassandra_target

#: Tiny partitions, so a few messages cross bucket boundaries.
BUCKET = 4


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    async with cassandra_target("standin") as t:
        yield t


@pytest.fixture
def standin(target: Target) -> StandIn:
    assert target.standin is not None
    return target.standin


@pytest.fixture
async def store(target: Target) -> AsyncIterator[CassandraMessageStore]:
    s = await CassandraMessageStore(target.settings, tuning=target.tuning, bucket_size=BUCKET).open()
    yield s
    await s.close()
