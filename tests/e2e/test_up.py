"""`mqchat up` as a user meets it: a taken port, and a clean Ctrl-C / SIGTERM."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from tests.conftest import ROOT, System, free_port

pytestmark = pytest.mark.e2e


def test_a_taken_port_is_named_with_the_flag_to_change_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "mqchat.cli", "up", "--data-dir", str(tmp_path), "--mqtt-port", str(port),
             "--ws-port", str(free_port()), "--http-port", str(free_port())],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )
    assert proc.returncode == 2
    assert f"port {port} (MQTT)" in proc.stderr
    assert "--mqtt-port" in proc.stderr


def test_sigterm_drains_and_exits_cleanly(system: System) -> None:
    code = system.stop()
    log = system.log.read_text()
    assert code == 0, log
    assert "bridge stopped" in log
    assert "broker stopped" in log
    assert "API stopped" in log
    assert "workers stopped" in log
    assert "Traceback" not in log
    assert not any((system.data_dir / "run" / f"{n}.ready").exists() for n in ("broker", "bridge", "api", "workers"))


def test_data_files_are_private_to_their_owner(system: System) -> None:
    import stat

    data = system.data_dir
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    files = [p for p in data.rglob("*") if p.is_file()]
    assert {"jwt-secret", "directory.db", "messages.db"} <= {p.name for p in files}
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, f"{path.relative_to(data)} is readable by others"
    for path in (p for p in data.rglob("*") if p.is_dir()):
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, f"{path.relative_to(data)}/ is open to others"
