"""Push benchmark (``python -m bench.push``): a private redis-server and the FCM / APNs stand-ins, then
the measurement.

Starts everything on free loopback ports in a temporary directory: redis-server, the provider
stand-ins (``python -m harness.push_standins``), and the measurement itself
(``python -m bench.push_measure``, which drives the server's own push workers) in a process of its
own, with settings pointing at them through the environment.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console

from harness.redis import RedisServer
from harness.system import ROOT


def run(members: int, jobs: int, pushes: int) -> dict[str, Any]:
    """Run the push benchmark; returns its JSON report."""
    with tempfile.TemporaryDirectory(prefix="mqchat-push-bench-") as tmp, RedisServer(Path(tmp)) as redis:
        standins = subprocess.Popen([sys.executable, "-m", "harness.push_standins", f"{tmp}/standins"], cwd=ROOT,
                                    stdout=subprocess.PIPE, text=True)
        try:
            assert standins.stdout is not None
            info = json.loads(standins.stdout.readline())
            env = {k: v for k, v in os.environ.items() if not k.startswith("MQCHAT_")} | {
                "MQCHAT_LOG_LEVEL": "WARNING", "MQCHAT_REDIS__URL": redis.url,
                "MQCHAT_DATA_DIR": f"{tmp}/data",
                "MQCHAT_PUSH__FCM_SERVICE_ACCOUNT_FILE": info["fcm_service_account"],
                "MQCHAT_PUSH__FCM_ENDPOINT": info["fcm_endpoint"],
                "MQCHAT_PUSH__APNS_KEY_FILE": info["apns_key_file"], "MQCHAT_PUSH__APNS_KEY_ID": info["apns_key_id"],
                "MQCHAT_PUSH__APNS_TEAM_ID": info["apns_team_id"], "MQCHAT_PUSH__APNS_HOST": info["apns_host"],
                "MQCHAT_PUSH__APNS_CA_FILE": info["apns_ca_file"]}
            Path(f"{tmp}/data").mkdir()
            out = subprocess.run([sys.executable, "-m", "bench.push_measure", "--members", str(members),
                                  "--jobs", str(jobs), "--pushes", str(pushes)], cwd=ROOT, env=env,
                                 capture_output=True, text=True, timeout=1800)
            if out.returncode != 0:
                raise RuntimeError(f"bench.push_measure failed:\n{out.stderr[-4000:]}")
            report: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
            return report
        finally:
            standins.send_signal(signal.SIGTERM)
            standins.wait(10)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.push",
                                description="push fan-out decisions/s and pushes/s against the FCM/APNs stand-ins")
    p.add_argument("--members", type=int, default=10_000, help="members of the fanned-out channel")
    p.add_argument("--jobs", type=int, default=3, help="messages fanned out")
    p.add_argument("--pushes", type=int, default=2000, help="pushes sent per platform")
    args = p.parse_args(argv)
    with Console(stderr=True).status(f"push: fan-out to {args.members} members, {args.pushes} pushes/platform"):
        report = run(args.members, args.jobs, args.pushes)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
