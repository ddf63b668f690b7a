"""``python -m bench.large_channel --quick`` runs one small large-channel run through the whole
system and reports every figure. Sanity only: the targets are reported by the benchmark, never
asserted here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.large_channel import TARGETS, main, params_from, parser
from tests.conftest import ROOT


def test_sizes_quick_and_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert params_from(parser().parse_args(["--members", "5000,10000"])).sizes == (5000, 10000)
    assert params_from(parser().parse_args(["--quick"])).sizes == (200,)
    for bad in ("5000,lots", "1"):
        with pytest.raises(SystemExit) as info:
            main(["--members", bad])
        assert info.value.code == 2
        assert "--members" in capsys.readouterr().err


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_quick_run_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "large.json"
    status = subprocess.run([sys.executable, "-m", "bench.large_channel", "--quick", "--json", str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=280)
    assert status.returncode == 0, status.stdout[-3000:] + status.stderr[-3000:]
    (row,) = json.loads(out.read_text())["rows"]
    assert row["members"] == 200
    assert row["checker_ok"] is True
    assert row["messages"] > 0
    assert row["expected_deliveries"] >= row["messages"] * 200
    for key in (*TARGETS, "deliver_p50_ms", "last_member_p50_ms", "last_member_max_ms", "ack_p50_ms"):
        assert isinstance(row[key], int | float), key
    assert 0 < row["live_ratio"] <= 1
    assert row["broker_cpu_s"] > 0
    assert set(row["targets_met"]) == {*TARGETS, "checker_ok"}
