"""Push benchmark harness: a private redis-server and the FCM / APNs stand-ins, then the measurement.

Starts everything on free loopback ports in a temporary directory: redis-server, the provider
stand-ins (``python -m tests.push_standins``, from a source checkout), and the measurement itself
(``python -m workers.push.bench``) with settings pointing at them. It drives the server's own
workers, so unlike the rest of the simulator it runs them as subprocesses rather than importing them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mobile_sim.ports import free_port

ROOT = Path(__file__).resolve().parent.parent




def run(members: int, jobs: int, pushes: int) -> dict[str, Any]:
    """Run the push benchmark; returns its JSON report."""
    redis_bin = shutil.which("redis-server") or "/usr/bin/redis-server"
    with tempfile.TemporaryDirectory(prefix="mqchat-push-bench-") as tmp:
        port = free_port()
        redis = subprocess.Popen([redis_bin, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                  "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL)
        standins = subprocess.Popen([sys.executable, "-m", "tests.push_standins", f"{tmp}/standins"], cwd=ROOT,
                                    stdout=subprocess.PIPE, text=True)
        try:
            assert standins.stdout is not None
            info = json.loads(standins.stdout.readline())
            deadline = time.monotonic() + 10
            while True:
                with socket.socket() as probe:
                    if probe.connect_ex(("127.0.0.1", port)) == 0:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.05)
            env = {k: v for k, v in os.environ.items() if not k.startswith("MQCHAT_")} | {
                "MQCHAT_LOG_LEVEL": "WARNING", "MQCHAT_REDIS__URL": f"redis://127.0.0.1:{port}/0",
                "MQCHAT_DATA_DIR": f"{tmp}/data",
                "MQCHAT_PUSH__FCM_SERVICE_ACCOUNT_FILE": info["fcm_service_account"],
                "MQCHAT_PUSH__FCM_ENDPOINT": info["fcm_endpoint"],
                "MQCHAT_PUSH__APNS_KEY_FILE": info["apns_key_file"], "MQCHAT_PUSH__APNS_KEY_ID": info["apns_key_id"],
                "MQCHAT_PUSH__APNS_TEAM_ID": info["apns_team_id"], "MQCHAT_PUSH__APNS_HOST": info["apns_host"],
                "MQCHAT_PUSH__APNS_CA_FILE": info["apns_ca_file"]}
            Path(f"{tmp}/data").mkdir()
            out = subprocess.run([sys.executable, "-m", "workers.push.bench", "--members", str(members),
                                  "--jobs", str(jobs), "--pushes", str(pushes)], cwd=ROOT, env=env,
                                 capture_output=True, text=True, timeout=1800)
            if out.returncode != 0:
                raise RuntimeError(f"workers.push.bench failed:\n{out.stderr[-4000:]}")
            report: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
            return report
        finally:
            standins.send_signal(signal.SIGTERM)
            standins.wait(10)
            redis.terminate()
            redis.wait(10)
