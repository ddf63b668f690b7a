"""Test targets for the Cassandra backends: the stand-in (always) or a real node (``CASSANDRA_HOSTS``).

Each target is a fresh keyspace, migrated from ``schema.cql`` by :func:`mqchat.storage.cassandra.migrate`,
exactly as a deployment does it. Real-node keyspaces are dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

from mqchat.config import CassandraSettings
from mqchat.storage.cassandra import ClusterTuning, CqlSession, migrate
from tests.cassandra_standin.server import StandIn

#: Why the real-node variants are skipped here.
NO_REAL_NODE = ("CASSANDRA_HOSTS is not set, so there is no real Cassandra node to run against "
                "(the stand-in variants still run; see deploy/cassandra/ci-workflow.yml)")

#: Small on purpose: history pages cross partition boundaries all the time.
TEST_BUCKET_SIZE = 8


def real_hosts() -> tuple[tuple[str, ...], int] | None:
    """``CASSANDRA_HOSTS`` (``host[:port],host...``) as (hosts, port), or None when unset."""
    raw = os.environ.get("CASSANDRA_HOSTS", "").strip()
    if not raw:
        return None
    hosts, port = [], 9042
    for item in raw.split(","):
        host, _, p = item.strip().partition(":")
        hosts.append(host)
        port = int(p) if p else port
    return tuple(hosts), port


@dataclass
class Target:
    settings: CassandraSettings
    tuning: ClusterTuning
    standin: StandIn | None


@asynccontextmanager
async def cassandra_target(kind: Literal["standin", "real"]) -> AsyncIterator[Target]:
    """A freshly migrated keyspace on the stand-in or on the real node(s)."""
    keyspace = "mqchat_t_" + uuid.uuid4().hex[:12]
    if kind == "standin":
        standin = StandIn().start()
        settings = CassandraSettings(hosts=("127.0.0.1",), port=standin.port, keyspace=keyspace,
                                     replication_factor=1, request_timeout_s=5.0)
        tuning = ClusterTuning(metadata=False, reconnect_base_s=0.05, reconnect_max_s=0.5, fetch_size=7)
        try:
            await migrate(settings, tuning=tuning)
            yield Target(settings, tuning, standin)
        finally:
            standin.stop()
        return
    found = real_hosts()
    assert found is not None, NO_REAL_NODE
    hosts, port = found
    settings = CassandraSettings(hosts=hosts, port=port, keyspace=keyspace, replication_factor=1,
                                 request_timeout_s=20.0)
    tuning = ClusterTuning(fetch_size=7)
    await migrate(settings, tuning=tuning)
    try:
        yield Target(settings, tuning, None)
    finally:
        admin = await CqlSession(settings, tuning).open(None)
        try:
            await admin.ddl(f"DROP KEYSPACE IF EXISTS {keyspace}")
        finally:
            await admin.close()
