"""The benchmark runs end to end on a small load (figures are not asserted: they are reported)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.pipeline import main

pytestmark = pytest.mark.e2e


def test_small_benchmark_delivers_everything_on_every_target(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    code = main(["--channels", "2", "--members", "3", "--messages", "60", "--window", "5",
                 "--json", str(out)])
    assert code == 0
    doc = json.loads(out.read_text())
    targets = {r["target"] for r in doc["results"]}
    assert {"mqchat", "broker", "mosquitto"} <= targets, "scripts/test installs mosquitto; it must be found"
    for r in doc["results"]:
        assert r["delivered"] == r["expected_deliveries"] == 60 * 3
        assert r["acked"] == 60


def test_both_bridge_clients_in_one_run(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    code = main(["--channels", "2", "--members", "2", "--messages", "40", "--window", "5", "--targets", "mqchat",
                 "--bridge-client", "lean,aiomqtt", "--json", str(out)])
    assert code == 0
    doc = json.loads(out.read_text())
    assert [r["target"] for r in doc["results"]] == ["mqchat[lean]", "mqchat[aiomqtt]"]
    for r in doc["results"]:
        assert r["delivered"] == r["expected_deliveries"] == 40 * 2
    assert "throughput mqchat[lean]/mqchat[aiomqtt]" in doc["ratios"]


def test_an_unknown_bridge_client_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--bridge-client", "paho"])
    assert exc.value.code == 2
    assert "--bridge-client: lean and/or aiomqtt" in capsys.readouterr().err
