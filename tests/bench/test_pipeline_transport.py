"""``python -m bench.pipeline`` measures the pipeline over Mosquitto beside bare Mosquitto, in one run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.pipeline import main

pytestmark = pytest.mark.e2e


def test_pipeline_over_mosquitto_is_measured_with_ratios_to_bare_mosquitto(tmp_path: Path, mosquitto: object) -> None:
    out = tmp_path / "bench.json"
    code = main(["--channels", "2", "--members", "3", "--messages", "30", "--rate", "60",
                 "--targets", "mqchat-mosquitto,mosquitto", "--fsync-samples", "20", "--json", str(out)])
    assert code == 0
    doc = json.loads(out.read_text())
    assert [r["target"] for r in doc["results"]] == ["mqchat-mosquitto", "mosquitto"]
    for r in doc["results"]:
        assert r["delivered"] == r["expected_deliveries"] == 30 * 3
        assert r["acked"] == 30
    assert {"throughput mqchat-mosquitto/mosquitto", "deliver p99 mqchat-mosquitto/mosquitto"} <= doc["ratios"].keys()
    floor = doc["fsync_floor"]  # the disk's own commit latency, measured in the same run
    assert 0 < floor["sqlite_commit_p50_ms"] <= floor["sqlite_commit_p99_ms"]
    assert 0 < floor["fsync_p50_ms"] <= floor["fsync_p99_ms"]
    cpu = doc["results"][0]["cpu_ms_per_send"]  # each process of the pipeline, per acked send
    assert {"bridge", "workers", "api"} <= cpu.keys()
    assert cpu["bridge"] > 0
