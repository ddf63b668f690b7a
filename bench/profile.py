"""Sampling profiles of the Python brokers while a workload runs (``--profile DIR``), with py-spy.

py-spy samples from outside the process, ``--nonblocking`` (it does not pause the broker for a
sample), so the profiled figures move little; the results name the profile file of each workload.
Samples are aggregated by function (``--function``), not by line.
Each profile is written as collapsed stacks (``DIR/<target>-<workload>.txt``: one line per
stack, ``frame;frame;... count``, loadable in speedscope or flamegraph.pl), and
:func:`top_functions` turns one into the functions where the samples landed.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

SAMPLES_PER_S = 200


def py_spy() -> str | None:
    found = shutil.which("py-spy")
    if found:
        return found
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else None


@contextlib.contextmanager
def recording(pid: int, out: Path) -> Iterator[None]:
    """Sample ``pid`` into ``out`` for the duration of the block (nothing if py-spy is absent)."""
    binary = py_spy()
    if binary is None:
        yield
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([binary, "record", "--pid", str(pid), "--rate", str(SAMPLES_PER_S), "--nonblocking",
                             "--function", "--format", "raw", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def top_functions(collapsed: Path, n: int = 15) -> list[tuple[str, float, float]]:
    """``(function, self %, total %)`` for the ``n`` functions with the most self samples."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        k = int(count)
        samples += k
        frames = stack.split(";")
        own[frames[-1]] += k
        for frame in set(frames):
            total[frame] += k
    if not samples:
        return []
    return [(f, 100 * k / samples, 100 * total[f] / samples) for f, k in own.most_common(n)]
