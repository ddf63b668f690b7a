"""``python -m bench.broker --quick`` runs end to end against Mosquitto and our broker and writes every
figure. Sanity only: speed is reported by the benchmark, never asserted here."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench import targets
from bench.broker import ROWS, WORKLOADS, main, params_from, parser
from tests.conftest import ROOT

pytestmark = pytest.mark.e2e


def test_help_lists_the_workloads() -> None:
    out = subprocess.run([sys.executable, "-m", "bench.broker", "--help"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    for name in (*WORKLOADS, "--quick", "--targets", "--json", "--conns"):
        assert name in out


def test_params_quick_and_overrides() -> None:
    p = params_from(parser().parse_args(["--quick", "--conns", "50"]))
    assert p.conns == 50
    assert p.messages == 2_000
    assert params_from(parser().parse_args([])).conns == 10_000


@pytest.mark.timeout(600)
def test_quick_run_against_mosquitto_and_mqchat(tmp_path: Path) -> None:
    if not targets.available("mosquitto"):
        pytest.skip("mosquitto is not installed (scripts/test installs it with apt-get)")
    out = tmp_path / "bench.json"
    status = subprocess.run([sys.executable, "-m", "bench.broker", "--quick", "--targets", "mosquitto,mqchat",
                             "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=540)
    assert status.returncode == 0, status.stdout[-3000:] + status.stderr[-3000:]
    report = json.loads(out.read_text())
    results = report["results"]
    assert set(results) == {"mosquitto", "mqchat"}
    for target, by_workload in results.items():
        assert set(by_workload) == set(WORKLOADS), target
        for workload, figure, _, _ in ROWS:
            value = by_workload[workload][figure]
            assert isinstance(value, int | float), (target, workload, figure)
            assert not math.isnan(value), (target, workload, figure)
        pubsub = [by_workload[w] for w in ("one-to-one", "fan-out", "latency")]
        for r in pubsub:
            assert r["sent"] > 0
            assert r["delivered"] == r["expected_deliveries"], (target, r)
        idle = by_workload["idle"]
        assert idle["connected"] == idle["requested"], (target, idle)
        assert idle["rss_after_kib"] > 0
    assert "one-to-one.msgs_per_s" in report["ratios"]["mqchat/mosquitto"]
    assert report["meta"]["params"]["conns"] == 300


def test_unknown_target_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--targets", "nope"])
    assert info.value.code == 2
    assert "unknown" in capsys.readouterr().err
