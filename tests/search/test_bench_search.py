"""``python -m bench.search`` runs end to end on a few hundred messages, so it cannot rot. Speed is
reported by the benchmark, never asserted here."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench.search import main


@pytest.mark.postgres
@pytest.mark.timeout(300)
def test_tiny_run_on_both_backends(tmp_path: Path, postgres_server: object, capsys: pytest.CaptureFixture[str]) -> None:
    # postgres_server: skipped where PostgreSQL is not installed (the benchmark starts its own server).
    out = tmp_path / "search.json"
    assert main(["--messages", "300", "--batch", "100", "--queries", "3", "--channels", "40", "--visible", "10",
                 "--users", "50", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "index msgs/s" in printed
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"sqlite", "postgresql"}
    for backend, figures in report["results"].items():
        assert figures["index"]["messages"] == 300
        assert figures["index"]["msgs_per_s"] > 0, backend
        assert figures["index"]["bytes_on_disk"] > 0, backend
        assert len(figures["queries"]) == 10
        for kind, q in figures["queries"].items():
            assert q["n"] == 3, (backend, kind)
            assert not math.isnan(q["p50_ms"]), (backend, kind)
    # Same seed, same corpus, same queries: both backends find the same number of hits per kind
    # where their matching rules agree (one word, one channel).
    for kind in ("common", "rare", "channel", "next-page", "accent"):
        assert (report["results"]["sqlite"]["queries"][kind]["mean_hits"]
                == report["results"]["postgresql"]["queries"][kind]["mean_hits"]), kind


def test_bad_arguments_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--messages", "0"], ["--visible", "5000"], ["--backend", "elastic"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
    assert "usage" in capsys.readouterr().err
