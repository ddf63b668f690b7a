"""``python -m workers``: run the workers with settings from the environment / ``MQCHAT_CONFIG``."""

from __future__ import annotations

import sys

from mqchat.lifecycle import serve_process
from workers.app import main

if __name__ == "__main__":
    sys.exit(serve_process("workers", main))
