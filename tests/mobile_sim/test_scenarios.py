"""Every scenario, small (a dozen devices, seconds of traffic), against a real system it starts
itself: the run completes and the checker finds nothing. No timing is asserted."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from mobile_sim import runner
from mobile_sim.checker import Counts, Verdict, Violation
from mobile_sim.scenarios import SCENARIOS, Options
from tests.conftest import System

pytestmark = pytest.mark.e2e

SMALL = Options(devices=12, members=12, devices_per_user=2, channel_size=4, channels_per_user=2, senders=4,
                rate=8, duration=3, read_rate=2, typing_rate=2, connect_rate=0, quiet=1, drop_rate=30, outage=0.5,
                warmup=1, offline_fraction=0.5, cycle=1, observers=2, idle_measure=0.2, seed=7)
FLEET = runner.fleet_config(keepalive=30, ack_timeout=2, backoff_base=0.2, backoff_cap=2, max_attempts=0,
                            http_connections=8, sync_concurrency=8)


async def run(scenario: str, tmp_path: Path, **kw: Any) -> dict[str, Any]:
    cfg = runner.RunConfig(scenario, kw.pop("options", SMALL), FLEET, out=tmp_path / "out", **kw)
    rep, status = await runner.run(cfg, Console(stderr=True, quiet=True))
    assert rep["checker"] is not None
    assert rep["checker"]["ok"], rep["checker"]["summary"]
    assert status == 0
    return rep


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
async def test_scenario_runs_clean_against_a_fresh_system(scenario: str, tmp_path: Path) -> None:
    rep = await run(scenario, tmp_path)
    counts = rep["checker"]["counts"]
    assert counts["acked"] > 0
    assert counts["deliveries"] >= counts["acked"]
    assert rep["provision"]["path"] == "bulk + minted tokens"
    assert {"api", "bridge", "broker", "workers", "simulator"} <= rep["processes"].keys()
    written = json.loads((tmp_path / "out" / "report.json").read_text())
    assert written["scenario"] == scenario
    assert {Path(p).name for p in rep["plots"]} == {"latency.png", "timeseries.png"}
    if scenario == "reconnect-storm":
        assert rep["result"]["storm"]["all_resumed"]
        assert rep["result"]["storm"]["outboxes_drained"]
    if scenario == "flaky":
        assert rep["result"]["network_losses"] > 0
    if scenario == "push":
        assert counts["pushes"] > 0
        assert counts["push_decisions"] > 0
    if scenario == "presence-churn":
        assert counts["presence"] > 0


async def test_chat_with_edits_deletes_reactions_and_replies_folds_like_history(tmp_path: Path) -> None:
    options = dataclasses.replace(SMALL, rich=0.4, rate=15, duration=4, drop_rate=0)
    rep = await run("chat", tmp_path, options=options)
    counts = rep["checker"]["counts"]
    assert counts["states"] > 0  # devices' folds were compared with history, and agreed
    assert counts["badges"] > 0


async def test_chat_over_mosquitto_transport(tmp_path: Path, mosquitto: object) -> None:
    # The fixture only proves Mosquitto is installed; the run starts its own.
    rep = await run("chat", tmp_path, transport="mosquitto")
    assert rep["transport"] == "mosquitto"
    assert "mosquitto" in rep["processes"]


async def test_running_system_without_its_key_uses_signup_and_login(tmp_path: Path, system: System) -> None:
    options = dataclasses.replace(SMALL, devices=6, senders=2)
    rep = await run("chat", tmp_path, options=options, api=system.api, mqtt=f"127.0.0.1:{system.mqtt_port}")
    assert rep["provision"]["path"] == "signup + login"
    assert rep["target"]["started_here"] is False


def test_violations_fail_the_run_and_are_reported_with_their_ids() -> None:
    planted = Verdict((Violation("no_loss", "planted for the test", ("m1", "u:d")),), Counts())
    part, status = runner.judged(planted)
    assert status == 1
    assert "planted for the test" in part["summary"]
    assert "ids=m1,u:d" in part["summary"]
    assert part["violations_total"] == 1
    assert part["violations"][0]["ids"] == ("m1", "u:d")
    clean, status = runner.judged(Verdict((), Counts()))
    assert (status, clean["ok"], clean["violations_total"]) == (0, True, 0)


async def test_chat_in_servers_delivers_through_roles_and_overwrites(tmp_path: Path) -> None:
    """Every channel private to a server and seen through its own role: the checker still finds
    every message delivered to exactly the role holders (and the owner), in order."""
    options = dataclasses.replace(SMALL, servers=2, rich=0.3, drop_rate=0)
    rep = await run("chat", tmp_path, options=options)
    prov = rep["provision"]
    assert prov["servers"] == 2
    assert prov["roles"] == prov["channels"] == rep["result"]["channels"]
    assert rep["checker"]["counts"]["deliveries"] >= rep["checker"]["counts"]["acked"] > 0
