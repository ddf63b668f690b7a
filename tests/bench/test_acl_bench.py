"""``python -m bench.acl`` runs end to end on a small server and reports every figure. Sanity only:
speed is reported by the benchmark, never asserted here (a change may take up to the cache window)."""

from __future__ import annotations

import pytest

from bench.acl import main, parser, run


async def test_small_run_reports_every_figure() -> None:
    args = parser().parse_args(["--members", "30", "--roles", "4", "--checks", "200", "--cache-s", "0.2"])
    args.what = ["decisions", "live"]
    out = await run(args)
    for key in ("flat.decisions_per_s", "roles.cpu_us_per_delivery", "roles.reload_cpu_us", "join.effect_s",
                "role_change.effect_s", "kick.effect_s"):
        assert out[key] > 0, key
    for event in ("join", "role_change", "kick"):
        assert out[f"{event}.effect_s"] < 5.0


async def test_small_fanout_reports_both_ways() -> None:
    args = parser().parse_args(["fanout", "--fanout-members", "20", "--rate", "20", "--seconds", "0.3",
                                "--cache-s", "0.1"])
    out = await run(args)
    for key in ("fanout.old.cpu_us_per_delivery", "fanout.new.cpu_us_per_delivery", "fanout.old.messages",
                "fanout.new.messages", "fanout.speedup", "fanout.revoke_s"):
        assert out[key] > 0, key
    assert out["fanout.old.directory_reads_per_s"] > 0  # the old way re-reads every cache window
    assert out["fanout.new.directory_reads_per_s"] == 0  # the fed cache does not


def test_unknown_measurement_is_refused() -> None:
    with pytest.raises(SystemExit):
        main(["nonsense"])
