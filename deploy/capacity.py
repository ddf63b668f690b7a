#!/usr/bin/env python3
"""Capacity model of an mqchat deployment: how many of each component the seed targets need.

    python deploy/capacity.py                 # the seed targets (docs/capacity.md explains every line)
    python deploy/capacity.py --set fanout=50 --set broker_conns_per_node=1000000
    python deploy/capacity.py --list          # every input, its value and where it comes from

Every input is labelled: ``seed`` (the requirement documents), ``measured`` (on this project's
2-core machine, README Performance), ``code`` (a constant or setting of the code) or ``assumption``
(published or estimated per-node figures, each with a note saying how to re-measure it). The
script only does arithmetic; it prints each step's formula with the numbers filled in.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field, fields, replace
from typing import Literal

Source = Literal["seed", "measured", "code", "assumption"]


def _in(value: float, source: Source, note: str) -> float:
    return field(default=value, metadata={"source": source, "note": note})


@dataclass(frozen=True)
class Inputs:
    # --- seed targets (shared/seeds; docs/capacity.md) ---
    connections: float = _in(10_000_000, "seed", "peak concurrent connections (one per online device)")
    peak_msgs_per_s: float = _in(60_000, "seed", "peak sends/s (5x the 11.5k/s average)")
    msgs_per_day: float = _in(1_000_000_000, "seed", "20M DAU x 50 messages")
    body_bytes: float = _in(100, "seed", "average message body")
    fanout: float = _in(20, "seed", "online devices each message is delivered to (seed: avg channel 20 active users)")
    retention_years: float = _in(5, "seed", "history kept")
    dau: float = _in(20_000_000, "seed", "daily active users (read markers)")
    # --- code ---
    replication_factor: float = _in(3, "code", "cassandra.replication_factor")
    lease_ms: float = _in(30_000, "code", "broker.presence_lease_ms; leases are refreshed every lease_ms / 3")
    stream_overhead_bytes: float = _in(
        230, "assumption",
        "bytes of one ch/{channel} delivery besides the body: JSON fields (id, seq, epoch, channel, sender, "
        "device, cmid, ts, kind) + MQTT header and topic")
    cassandra_rows_per_msg: float = _in(
        3, "code",
        "messages row + message_cmids row + channel_positions hint (at most)")
    cassandra_lwt_per_msg: float = _in(
        1, "code",
        "conditional batch per (channel, bucket) and bridge batch: 1 per message worst case")
    redis_cmds_per_msg: float = _in(
        4, "assumption",
        "bridge: sender read marker + mentions + push job XADD; workers: XREADGROUP/XACK share")
    # --- measured here (README Performance; mobile_sim) ---
    presence_cmds_per_session: float = _in(
        20.3, "measured",
        "Redis commands per connect+disconnect (bench.presence, INFO commandstats)")
    # --- assumptions: per-node capacity (re-measure: docs/capacity.md) ---
    session_minutes: float = _in(30, "assumption", "average connection lifetime of a phone (connect+disconnect churn)")
    subscribes_per_connect: float = _in(
        20, "assumption",
        "SUBSCRIBEs a device sends after connecting (its channels + own topics)")
    channels_per_user: float = _in(20, "assumption", "read markers per active user")
    members_per_channel: float = _in(50, "assumption", "members the push fan-out decides per message (online or not)")
    api_req_per_conn_hour: float = _in(
        6, "assumption",
        "HTTP calls per connected device per hour (sync, history, read markers)")
    utilization: float = _in(0.7, "assumption", "target utilization of every component at peak (headroom)")
    broker_conns_per_node: float = _in(
        500_000, "assumption",
        "EMQX connections per 16-core/32 GiB node (EMQX publishes up to ~4M/node in lab tests; derated)")
    broker_msgs_per_node: float = _in(
        250_000, "assumption",
        "EMQX QoS 1 publishes in + deliveries out per s per node (derated from EMQX's published "
        "benchmarks)")
    bridge_msgs_per_s: float = _in(
        3_000, "assumption",
        "sends one bridge orders, persists (Cassandra) and acks per s; measured end to end on 2 shared "
        "cores: 251-410/s")
    bridge_ingest_per_s: float = _in(
        20_000, "assumption",
        "sends one bridge can receive and discard per s (MQTT decode + topic parse, one core)")
    hooks_calls_per_replica: float = _in(
        2_000, "assumption",
        "auth hook calls/s per mqchat-hooks replica (one core, membership cache warm)")
    api_req_per_replica: float = _in(500, "assumption", "HTTP requests/s per API replica (one core, Cassandra reads)")
    worker_decisions_per_s: float = _in(
        50_000, "assumption",
        "push fan-out member decisions/s per workers process (pipelined Redis reads)")
    redis_ops_per_primary: float = _in(
        150_000, "assumption",
        "commands/s per Redis primary, Lua-heavy mix (single-threaded)")
    redis_lease_bytes: float = _in(
        200, "assumption",
        "Redis memory per live presence lease (member string, score, set overhead)")
    redis_marker_bytes: float = _in(80, "assumption", "Redis memory per read marker (hash field channel -> epoch:seq)")
    cassandra_row_overhead_bytes: float = _in(
        150, "assumption",
        "messages row on disk besides the body: columns, clustering key, cell timestamps (schema.cql: ~250 B "
        "per 100 B message)")
    cassandra_cmid_bytes: float = _in(100, "assumption", "message_cmids row on disk")
    cassandra_compression: float = _in(1.0, "assumption", "on-disk / raw after LZ4 (1.0 = none, conservative)")
    cassandra_writes_per_node: float = _in(
        25_000, "assumption",
        "replica writes/s per 8-core Cassandra node (small rows)")
    cassandra_lwt_cost: float = _in(
        4, "assumption",
        "write-equivalents of one Paxos round (prepare, read, propose, commit)")
    cassandra_tb_per_node: float = _in(
        2, "assumption",
        "live data per node (TB) that keeps compaction, repair and streaming manageable")


@dataclass
class Plan:
    lines: list[str] = field(default_factory=list)
    result: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def step(self, key: str, formula: str, value: float, unit: str = "") -> float:
        self.result[key] = value
        self.lines.append(f"  {key:<34} = {formula} = {fmt(value)}{(' ' + unit) if unit else ''}")
        return value

    def head(self, title: str) -> None:
        self.lines.append(f"\n{title}")


def fmt(x: float) -> str:
    if float(x).is_integer():
        return f"{int(x):,}"
    return f"{x:,.1f}" if abs(x) >= 10 else f"{x:,.3g}"


def ceil(x: float) -> int:
    return math.ceil(x - 1e-9)


def next_pow2(x: float) -> int:
    return 1 << max(0, ceil(math.log2(max(x, 1))))


def plan(i: Inputs) -> Plan:
    p = Plan()
    u = i.utilization
    P, C = i.peak_msgs_per_s, i.connections

    p.head("Traffic")
    avg = p.step("avg_msgs_per_s", f"{fmt(i.msgs_per_day)} / 86,400", i.msgs_per_day / 86_400, "msg/s")
    p.step("peak_over_avg", f"{fmt(P)} / {fmt(avg)}", P / avg)
    deliveries = p.step("deliveries_per_s", f"{fmt(P)} x fanout {fmt(i.fanout)}", P * i.fanout, "/s")
    p.step("egress_MB_per_s", f"{fmt(deliveries)} x ({fmt(i.body_bytes)} + {fmt(i.stream_overhead_bytes)}) B / 1e6",
           deliveries * (i.body_bytes + i.stream_overhead_bytes) / 1e6, "MB/s")
    connects = p.step("connects_per_s", f"{fmt(C)} / ({fmt(i.session_minutes)} min x 60)",
                      C / (i.session_minutes * 60), "/s")

    p.head("Bridges and partitions (every bridge receives every send: bridge/ownership.py)")
    bridges = p.step("bridges", f"ceil({fmt(P)} / ({fmt(i.bridge_msgs_per_s)} x {u}))",
                     ceil(P / (i.bridge_msgs_per_s * u)))
    bridges = p.step("bridges_with_spare", f"max(2, {bridges} + 1)", max(2, bridges + 1))
    p.step("partitions", f"next_pow2(8 x {bridges})", min(4096, next_pow2(8 * bridges)))
    ingest = p.step("ingest_per_bridge", f"{fmt(P)} (broadcast: all sends to each bridge)", P, "msg/s")
    if ingest > i.bridge_ingest_per_s * u:
        p.warnings.append(
            f"each bridge must receive all {fmt(P)} sends/s but one can take ~{fmt(i.bridge_ingest_per_s * u)}/s: "
            "the broadcast subscription caps total throughput; partitioned ingest (a topic per partition, e.g. an "
            "EMQX rule republishing in/+/+/{channel} to a partition topic) is needed before this scale")

    p.head("MQTT broker (EMQX) nodes")
    inbound = p.step("broker_publishes_in", f"{fmt(P)} x 3 (send, ch/ stream, ack)", P * 3, "/s")
    outbound = p.step("broker_deliveries_out",
                      f"{fmt(P)} x ({bridges} bridges + fanout {fmt(i.fanout)} + 1 ack)",
                      P * (bridges + i.fanout + 1), "/s")
    by_conns = p.step("broker_nodes_for_connections", f"ceil({fmt(C)} / ({fmt(i.broker_conns_per_node)} x {u}))",
                      ceil(C / (i.broker_conns_per_node * u)))
    by_msgs = p.step("broker_nodes_for_messages",
                     f"ceil(({fmt(inbound)} + {fmt(outbound)}) / ({fmt(i.broker_msgs_per_node)} x {u}))",
                     ceil((inbound + outbound) / (i.broker_msgs_per_node * u)))
    p.step("broker_nodes", f"max({by_conns}, {by_msgs}) + 1 (survive a node loss)", max(by_conns, by_msgs) + 1)

    p.head("Auth hooks (mqchat-hooks) and HTTP API")
    hook_calls = p.step("hook_calls_per_s",
                        f"{fmt(connects)} x (1 authn + {fmt(i.subscribes_per_connect)} subscribes)"
                        f" + {fmt(P)} publish checks",
                        connects * (1 + i.subscribes_per_connect) + P, "/s")
    p.step("hooks_replicas", f"max(2, ceil({fmt(hook_calls)} / ({fmt(i.hooks_calls_per_replica)} x {u})))",
           max(2, ceil(hook_calls / (i.hooks_calls_per_replica * u))))
    api_rps = p.step("api_requests_per_s", f"{fmt(C)} x {fmt(i.api_req_per_conn_hour)} / 3600",
                     C * i.api_req_per_conn_hour / 3600, "/s")
    p.step("api_replicas", f"max(2, ceil({fmt(api_rps)} / ({fmt(i.api_req_per_replica)} x {u})))",
           max(2, ceil(api_rps / (i.api_req_per_replica * u))))

    p.head("Workers (push fan-out)")
    decisions = p.step("fanout_decisions_per_s", f"{fmt(P)} x {fmt(i.members_per_channel)} members",
                       P * i.members_per_channel, "/s")
    workers = p.step("workers", f"ceil({fmt(decisions)} / ({fmt(i.worker_decisions_per_s)} x {u}))",
                     ceil(decisions / (i.worker_decisions_per_s * u)))
    if workers > 1:
        p.warnings.append(f"{workers} workers needed, but the workers process runs as ONE instance today "
                          "(single presence publisher, fixed MQTT client id svc-workers:w0)")

    p.head("Redis")
    refresh = p.step("lease_refreshes_per_s", f"{fmt(C)} / ({fmt(i.lease_ms)} ms / 3 / 1000)",
                     C / (i.lease_ms / 3 / 1000), "/s")
    churn = p.step("presence_cmds_per_s", f"{fmt(connects)} sessions x {i.presence_cmds_per_session}",
                   connects * i.presence_cmds_per_session, "/s")
    msg_cmds = p.step("message_cmds_per_s", f"{fmt(P)} x {fmt(i.redis_cmds_per_msg)} + {fmt(decisions)} fan-out reads",
                      P * i.redis_cmds_per_msg + decisions, "/s")
    redis_ops = p.step("redis_ops_per_s", f"{fmt(refresh)} + {fmt(churn)} + {fmt(msg_cmds)}",
                       refresh + churn + msg_cmds, "/s")
    primaries = p.step("redis_primaries", f"ceil({fmt(redis_ops)} / ({fmt(i.redis_ops_per_primary)} x {u}))",
                       ceil(redis_ops / (i.redis_ops_per_primary * u)))
    if primaries > 1:
        terms = {"push fan-out reads": decisions, "presence lease refreshes (broker.presence_lease_ms)": refresh,
                 "per-message commands": P * i.redis_cmds_per_msg, "connect/disconnect churn": churn}
        top = max(terms, key=lambda k: terms[k])
        p.warnings.append(f"{primaries} Redis primaries needed, but mqchat supports one Redis (no Redis Cluster) "
                          f"today; the largest share is {top} ({fmt(terms[top])}/s)")
    leases = p.step("redis_lease_GB", f"{fmt(C)} x {fmt(i.redis_lease_bytes)} B / 1e9",
                    C * i.redis_lease_bytes / 1e9, "GB")
    markers = p.step("redis_marker_GB",
                     f"{fmt(i.dau)} x {fmt(i.channels_per_user)} x {fmt(i.redis_marker_bytes)} B / 1e9",
                     i.dau * i.channels_per_user * i.redis_marker_bytes / 1e9, "GB")
    p.step("redis_memory_GB", f"({fmt(leases)} + {fmt(markers)}) / {u}", (leases + markers) / u, "GB")

    p.head("Cassandra")
    rf = i.replication_factor
    per_msg = i.cassandra_rows_per_msg + i.cassandra_lwt_per_msg * i.cassandra_lwt_cost
    writes = p.step("replica_writes_per_s",
                    f"{fmt(P)} x ({fmt(i.cassandra_rows_per_msg)} rows + {fmt(i.cassandra_lwt_per_msg)} LWT x "
                    f"{fmt(i.cassandra_lwt_cost)}) x RF {fmt(rf)}", P * per_msg * rf, "/s")
    by_writes = p.step("cassandra_nodes_for_writes",
                       f"ceil({fmt(writes)} / ({fmt(i.cassandra_writes_per_node)} x {u}))",
                       ceil(writes / (i.cassandra_writes_per_node * u)))
    days = i.retention_years * 365
    raw_tb = p.step("stored_TB_one_copy",
                    f"{fmt(i.msgs_per_day)} x {fmt(days)} days x ({fmt(i.body_bytes)} + "
                    f"{fmt(i.cassandra_row_overhead_bytes)} + "
                    f"{fmt(i.cassandra_cmid_bytes)}) B x {i.cassandra_compression} / 1e12",
                    i.msgs_per_day * days * (i.body_bytes + i.cassandra_row_overhead_bytes + i.cassandra_cmid_bytes)
                    * i.cassandra_compression / 1e12,
                    "TB")
    total_tb = p.step("stored_TB_replicated", f"{fmt(raw_tb)} x RF {fmt(rf)}", raw_tb * rf, "TB")
    by_disk = p.step("cassandra_nodes_for_storage", f"ceil({fmt(total_tb)} / {fmt(i.cassandra_tb_per_node)} TB)",
                     ceil(total_tb / i.cassandra_tb_per_node))
    p.step("cassandra_nodes", f"max({fmt(rf)}, {by_writes}, {by_disk})", max(rf, by_writes, by_disk))
    return p


def inputs_table(i: Inputs) -> str:
    rows = []
    for f in fields(i):
        rows.append(f"  {f.name:<28} {fmt(getattr(i, f.name)):>14}  [{f.metadata['source']}] {f.metadata['note']}")
    return "\n".join(rows)


def parse_overrides(pairs: list[str]) -> dict[str, float]:
    names = {f.name for f in fields(Inputs)}
    out: dict[str, float] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in names:
            raise SystemExit(f"--set {pair!r}: expected NAME=NUMBER with NAME one of {sorted(names)}")
        out[key] = float(value)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", action="append", default=[], metavar="NAME=NUMBER", help="override an input")
    parser.add_argument("--list", action="store_true", help="print the inputs and their sources")
    args = parser.parse_args(argv)
    inputs = replace(Inputs(), **parse_overrides(args.set))
    print("Inputs ([seed] requirement documents, [code] this repository, [measured] here, [assumption] to re-measure)")
    print(inputs_table(inputs))
    if args.list:
        return 0
    result = plan(inputs)
    print("\n".join(result.lines))
    if result.warnings:
        print("\nLimits of the current code at this scale:")
        for w in result.warnings:
            print(f"  ! {w}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
