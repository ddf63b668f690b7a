"""The supervisor of ``mqchat up``: its pure restart policy, and the loop over real child processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mqchat import supervisor
from mqchat.supervisor import Child, CrashLoop, RestartPolicy, State, Supervisor
from tests.conftest import RedisServer, free_port

POLICY = RestartPolicy(base_s=0.5, cap_s=10.0, loop_window_s=60.0, loop_max=5)


def test_restart_delay_doubles_per_restart_in_the_window_and_is_capped() -> None:
    assert supervisor.restart_delay([], 100.0, POLICY) == 0.5
    assert supervisor.restart_delay([99.0], 100.0, POLICY) == 1.0
    assert supervisor.restart_delay([97.0, 98.0, 99.0], 100.0, POLICY) == 4.0
    assert supervisor.restart_delay([float(t) for t in range(90, 100)], 100.0, POLICY) == 10.0


def test_restarts_older_than_the_window_are_forgotten() -> None:
    assert supervisor.restart_delay([10.0, 20.0], 100.0, POLICY) == 0.5
    assert not supervisor.crash_loop([10.0, 20.0, 30.0, 40.0, 50.0], 111.0, POLICY)
    assert supervisor.crash_loop([60.0, 70.0, 80.0, 90.0, 100.0], 111.0, POLICY)


@given(st.lists(st.floats(min_value=0, max_value=1000, allow_nan=False), max_size=30),
       st.floats(min_value=0, max_value=1100, allow_nan=False))
def test_restart_delay_stays_between_base_and_cap(restarts: list[float], now: float) -> None:
    delay = supervisor.restart_delay(restarts, now, POLICY)
    assert POLICY.base_s <= delay <= POLICY.cap_s
    # one more restart inside the window never shortens the next delay
    assert supervisor.restart_delay([*restarts, now], now, POLICY) >= delay


@pytest.mark.parametrize("bad", [{"base_s": 0}, {"cap_s": 0.1}, {"loop_max": 0}, {"probe_failures": 0},
                                 {"probe_timeout_s": 0}])
def test_nonsensical_policies_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="need"):
        RestartPolicy(**bad)  # type: ignore[arg-type]


def python_child(code: str) -> Callable[[], subprocess.Popen[bytes]]:
    return lambda: subprocess.Popen([sys.executable, "-c", code])


def tick_until(sup: Supervisor, done: Callable[[], bool], within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not done():
        assert time.monotonic() < deadline, "the supervisor did not get there in time"
        sup.tick()
        time.sleep(0.02)


@pytest.fixture
def stop_after() -> Iterator[list[Supervisor]]:
    started: list[Supervisor] = []
    yield started
    for sup in started:
        sup.stop_all(5)


def test_a_crashing_child_is_restarted_with_backoff_then_a_crash_loop_stops_it(stop_after: list[Supervisor]) -> None:
    policy = RestartPolicy(base_s=0.05, cap_s=0.2, loop_window_s=60, loop_max=3)
    child = Child("flaky", python_child("raise SystemExit(3)"), probe=lambda _t: True, ready=lambda: True)
    sup = Supervisor([child], policy)
    stop_after.append(sup)
    sup.start(child)
    with pytest.raises(CrashLoop, match=r"flaky crashed 4 times within 60s \(last exit status 3\)"):
        tick_until(sup, lambda: False)
    assert len(child.restarts) == 3
    assert child.state is State.STOPPED
    assert sup.registry.get_sample_value("mqchat_up_restarts_total", {"process": "flaky", "reason": "exited"}) == 3
    # the delays doubled, 0.05 s then 0.1 s: a crash comes no sooner than the delay before its restart
    gaps = [b - a for a, b in zip(child.restarts, list(child.restarts)[1:], strict=False)]
    assert gaps[0] >= 0.05
    assert gaps[1] >= 0.1


def test_a_hung_child_is_killed_and_restarted_while_the_others_keep_running(stop_after: list[Supervisor]) -> None:
    port = free_port()
    server = Child("server", lambda: subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind",
                                                       "127.0.0.1"], stdout=subprocess.DEVNULL,
                                                      stderr=subprocess.DEVNULL),
                   probe=supervisor.http_probe(f"http://127.0.0.1:{port}/"),
                   ready=lambda: supervisor.http_probe(f"http://127.0.0.1:{port}/")(1.0))
    bystander = Child("bystander", python_child("import time; time.sleep(60)"), probe=lambda _t: True,
                      ready=lambda: True)
    policy = RestartPolicy(probe_interval_s=0.2, probe_timeout_s=0.3, probe_failures=2, base_s=0.05, cap_s=0.1)
    sup = Supervisor([server, bystander], policy)
    stop_after.append(sup)
    for child in (server, bystander):
        sup.start(child)
    tick_until(sup, lambda: server.state is State.RUNNING and bystander.state is State.RUNNING)
    assert server.proc is not None
    assert bystander.proc is not None
    hung_pid, bystander_pid = server.proc.pid, bystander.proc.pid

    server.proc.send_signal(signal.SIGSTOP)
    tick_until(sup, lambda: server.proc is not None and server.proc.pid != hung_pid
               and server.state is State.RUNNING)
    assert sup.registry.get_sample_value("mqchat_up_restarts_total", {"process": "server", "reason": "hung"}) == 1
    assert bystander.proc.pid == bystander_pid
    assert bystander.proc.poll() is None
    assert sup.registry.get_sample_value("mqchat_up_child_running", {"process": "bystander"}) == 1


def test_redis_probe_answers_only_for_a_live_redis(redis_server: RedisServer) -> None:
    assert supervisor.redis_probe("127.0.0.1", redis_server.port)(1.0)
    assert not supervisor.redis_probe("127.0.0.1", free_port())(0.5)
