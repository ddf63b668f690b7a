"""``python -m harness.push_standins DIR``: run both stand-ins until SIGTERM (for the push benchmark).

Prints one JSON line with what a sender needs: the FCM endpoint and service account, the APNs
host, CA file, key file, key id and team id.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

from harness.push_standins.apns import ApnsStandIn
from harness.push_standins.fcm import FcmStandIn


def main(argv: list[str]) -> int:
    workdir = Path(argv[0])
    workdir.mkdir(parents=True, exist_ok=True)
    fcm = FcmStandIn(workdir).start()
    apns = ApnsStandIn(workdir).start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    print(json.dumps({"fcm_endpoint": fcm.endpoint, "fcm_service_account": str(fcm.service_account),
                      "apns_host": apns.host, "apns_ca_file": str(apns.ca_file), "apns_key_file": str(apns.key_file),
                      "apns_key_id": apns.key_id, "apns_team_id": apns.team_id}), flush=True)
    done.wait()
    print(json.dumps({"fcm_received": len(fcm.recorder.received), "apns_received": len(apns.recorder.received)}),
          flush=True)
    apns.stop()
    fcm.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
