"""deploy/capacity.py: the arithmetic on a small case computed by hand, and the seed run."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import fields
from types import ModuleType

import pytest

from tests.deploy.support import DEPLOY


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mqchat_capacity", DEPLOY / "capacity.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up while the class is built
    spec.loader.exec_module(module)
    return module


capacity = load()

SMALL = {
    "connections": 6000, "peak_msgs_per_s": 100, "msgs_per_day": 86_400, "fanout": 2, "retention_years": 1,
    "dau": 100, "replication_factor": 3, "lease_ms": 3000, "body_bytes": 100, "stream_overhead_bytes": 0,
    "cassandra_rows_per_msg": 3,
    "cassandra_lwt_per_msg": 1, "redis_cmds_per_msg": 4, "presence_cmds_per_session": 20, "session_minutes": 1,
    "subscribes_per_connect": 9, "channels_per_user": 20, "members_per_channel": 50, "api_req_per_conn_hour": 6,
    "utilization": 0.5, "broker_conns_per_node": 1000, "broker_msgs_per_node": 1000, "bridge_msgs_per_s": 10,
    "bridge_ingest_per_s": 1000, "hooks_calls_per_replica": 100, "api_req_per_replica": 10,
    "worker_decisions_per_s": 1000, "redis_ops_per_primary": 10_000, "redis_lease_bytes": 200,
    "redis_marker_bytes": 80, "cassandra_row_overhead_bytes": 150,
    "cassandra_cmid_bytes": 100, "cassandra_compression": 1.0,
    "cassandra_writes_per_node": 1000, "cassandra_lwt_cost": 4, "cassandra_tb_per_node": 2,
}


def test_small_case_computed_by_hand() -> None:
    assert set(SMALL) == {f.name for f in fields(capacity.Inputs)}, "the case sets every input"
    r = capacity.plan(capacity.Inputs(**SMALL))
    got = r.result
    assert got["avg_msgs_per_s"] == 1                # 86,400 / 86,400
    assert got["deliveries_per_s"] == 200            # 100 x 2
    assert got["egress_MB_per_s"] == pytest.approx(0.02)  # 200 x 100 B
    assert got["connects_per_s"] == 100              # 6000 / 60 s
    assert got["bridges"] == 20                      # 100 / (10 x 0.5)
    assert got["bridges_with_spare"] == 21
    assert got["partitions"] == 256                  # next power of two >= 8 x 21 = 168
    assert got["broker_publishes_in"] == 300         # 100 x 3
    assert got["broker_deliveries_out"] == 2400      # 100 x (21 + 2 + 1)
    assert got["broker_nodes_for_connections"] == 12  # 6000 / 500
    assert got["broker_nodes_for_messages"] == 6     # 2700 / 500 = 5.4
    assert got["broker_nodes"] == 13                 # 12 + 1
    assert got["hook_calls_per_s"] == 1100           # 100 x (1 + 9) + 100
    assert got["hooks_replicas"] == 22               # 1100 / 50
    assert got["api_requests_per_s"] == 10           # 6000 x 6 / 3600
    assert got["api_replicas"] == 2                  # max(2, 10 / 5)
    assert got["fanout_decisions_per_s"] == 5000     # 100 x 50
    assert got["workers"] == 10                      # 5000 / 500
    assert got["lease_refreshes_per_s"] == 6000      # 6000 / 1 s
    assert got["presence_cmds_per_s"] == 2000        # 100 x 20
    assert got["message_cmds_per_s"] == 5400         # 100 x 4 + 5000
    assert got["redis_ops_per_s"] == 13_400
    assert got["redis_primaries"] == 3               # 13,400 / 5,000 = 2.68
    assert got["redis_memory_GB"] == pytest.approx((6000 * 200 + 100 * 20 * 80) / 1e9 / 0.5)
    assert got["replica_writes_per_s"] == 2100       # 100 x (3 + 1 x 4) x 3
    assert got["cassandra_nodes_for_writes"] == 5    # 2100 / 500 = 4.2
    assert got["stored_TB_one_copy"] == pytest.approx(86_400 * 365 * 350 / 1e12)
    assert got["stored_TB_replicated"] == pytest.approx(86_400 * 365 * 350 * 3 / 1e12)
    assert got["cassandra_nodes_for_storage"] == 1
    assert got["cassandra_nodes"] == 5               # max(RF 3, 5, 1)
    # 10 workers and 3 Redis primaries exceed what the code runs today; one bridge can take the ingest.
    assert len(r.warnings) == 2
    assert any("workers" in w for w in r.warnings)
    assert any("Redis" in w for w in r.warnings)


def test_broadcast_ingest_limit_is_flagged() -> None:
    r = capacity.plan(capacity.Inputs(**{**SMALL, "bridge_ingest_per_s": 150}))  # 100 > 150 x 0.5
    assert any("receive all 100 sends/s" in w for w in r.warnings)


def test_every_input_is_labelled() -> None:
    for f in fields(capacity.Inputs):
        assert f.metadata["source"] in ("seed", "measured", "code", "assumption"), f.name
        assert f.metadata["note"], f.name


def test_seed_run_prints_every_step(capsys: pytest.CaptureFixture[str]) -> None:
    assert capacity.main([]) == 0
    out = capsys.readouterr().out
    for key in ("broker_nodes", "bridges_with_spare", "partitions", "api_replicas", "hooks_replicas", "workers",
                "redis_ops_per_s", "redis_memory_GB", "replica_writes_per_s", "stored_TB_replicated",
                "cassandra_nodes"):
        assert f"\n  {key} " in out
    assert "10,000,000" in out
    assert "[assumption]" in out
    assert "[measured]" in out
    with pytest.raises(SystemExit):
        capacity.main(["--set", "no_such_input=1"])
