"""The Grafana dashboard queries only metrics the processes really export.

Honest check: a whole system runs (``mqchat up``, each process with its operations port), one
message goes through it so that labelled series exist, and every metric name in every panel's
PromQL must be among the sample names scraped from the processes' ``/metrics``.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port
from tests.deploy.support import DEPLOY

DASHBOARD = DEPLOY / "grafana" / "mqchat.json"
#: Metric names in PromQL: ours, and the process collector's that prometheus_client exports.
METRIC = re.compile(r"\b(?:mqchat|process)_[a-z0-9_]+\b")


def dashboard_exprs(path: Path = DASHBOARD) -> list[str]:
    def walk(panels: list[dict[str, Any]]) -> list[str]:
        found = []
        for p in panels:
            found += [t["expr"] for t in p.get("targets", [])]
            found += walk(p.get("panels", []))  # collapsed rows hold their panels
        return found

    return walk(json.loads(path.read_text())["panels"])


def scrape(url: str) -> set[str]:
    text = httpx.get(url, timeout=5).text
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def send_one(api: str) -> None:
    """Sign up, create a channel and send one message, waiting for its ack."""
    pw = "correct horse"
    httpx.post(f"{api}/v1/users", json={"username": "grafana", "password": pw}).raise_for_status()
    login = httpx.post(f"{api}/v1/login", json={"username": "grafana", "password": pw, "device_id": "d1"}).json()
    me, token = login["user_id"], login["token"]
    channel = httpx.post(f"{api}/v1/channels", headers={"Authorization": f"Bearer {token}"},
                         json={"kind": "group", "members": []}).json()["channel_id"]
    acks: list[bytes | bytearray] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{me}:d1")
    client.username_pw_set(me, token)
    client.on_message = lambda _c, _u, msg: acks.append(msg.payload)
    client.connect(login["mqtt"]["host"], login["mqtt"]["port"])
    client.loop_start()
    try:
        client.subscribe(f"dev/{me}/d1/ack", 1)
        deadline = time.monotonic() + 15
        while not acks and time.monotonic() < deadline:
            client.publish(f"in/{me}/d1/{channel}", json.dumps({"cmid": uuid.uuid4().hex[:16], "kind": "text",
                                                               "body": "hi"}), qos=1)
            wait_until = time.monotonic() + 2
            while not acks and time.monotonic() < wait_until:
                time.sleep(0.05)
        assert acks, "no ack"
    finally:
        client.disconnect()
        client.loop_stop()


def test_every_dashboard_query_names_only_metrics_that_exist() -> None:
    exprs = dashboard_exprs()
    assert exprs
    for expr in exprs:
        assert METRIC.search(expr), f"no mqchat_/process_ metric in {expr!r}: this check would not cover it"


@pytest.mark.timeout(120)
def test_dashboard_metrics_are_exported_by_the_running_processes(system_factory) -> None:  # type: ignore[no-untyped-def]
    ports = {name: free_port() for name in ("broker", "bridge", "workers")}
    system = system_factory()
    system.env = {f"MQCHAT_OPS__{name.upper()}_PORT": str(port) for name, port in ports.items()}
    system.start()
    send_one(system.api)
    urls = [f"http://127.0.0.1:{port}/metrics" for port in ports.values()] + [f"{system.api}/metrics"]
    deadline = time.monotonic() + 15
    while True:  # the bridge counts the send just after acking it
        exported = set().union(*(scrape(u) for u in urls))
        if "mqchat_bridge_sends_total" in exported or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    used = {name for expr in dashboard_exprs() for name in METRIC.findall(expr)}
    assert used - exported == set(), f"the dashboard queries metrics nobody exports: {sorted(used - exported)}"
