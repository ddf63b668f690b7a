"""``python -m bridge``: run the bridge with settings from the environment / ``MQCHAT_CONFIG``."""

from __future__ import annotations

import sys

from bridge.app import main
from mqchat.lifecycle import serve_process

if __name__ == "__main__":
    sys.exit(serve_process("bridge", main))
