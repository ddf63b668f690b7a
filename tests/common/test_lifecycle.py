"""A stopping process always stops: drain, then cancel, then exit."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

from tests.conftest import ROOT

SCRIPT = textwrap.dedent("""
    import asyncio, sys
    from mqchat import lifecycle
    lifecycle.CANCEL_GRACE_S = 0.5

    async def main(stop):
        print("ready", flush=True)
        await stop.wait()
        if sys.argv[1] == "clean":
            return
        while True:  # a dependency that swallows cancellation
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                pass

    lifecycle.run(main, grace_s=0.5)
""")


def start(mode: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, mode], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_a_clean_drain_exits_zero() -> None:
    with start("clean") as proc:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


def test_a_process_stuck_in_shutdown_still_exits() -> None:
    with start("stuck") as proc:
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 70
        assert time.monotonic() - began < 5  # grace 0.5 s + cancel grace 0.5 s, not forever


async def test_supervised_work_is_restarted_after_a_failure_and_ends_with_stop() -> None:
    import asyncio

    from mqchat import lifecycle

    stop = asyncio.Event()
    calls: list[int] = []

    async def work() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise RuntimeError("redis down")
        stop.set()

    await asyncio.wait_for(lifecycle.supervised("work", work, stop), 10)
    assert calls == [0, 1]
