"""Bridge metrics (Prometheus, default registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SENDS = Counter("mqchat_bridge_sends_total", "Sends processed, by outcome.", ["outcome"])
BATCH_SIZE = Histogram("mqchat_bridge_batch_size", "Sends per batch (group commit).",
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024))
RECEIVE_TO_ACK = Histogram("mqchat_bridge_receive_to_ack_seconds",
                           "From the bridge receiving a send to its ack being handed to the broker "
                           "(validate, dedup, order, fsync, publish).",
                           buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
QUEUE_DEPTH = Gauge("mqchat_bridge_queue_depth", "Sends received and not yet processed (bridge lag).")
OWNED_PARTITIONS = Gauge("mqchat_bridge_owned_partitions", "Channel partitions this bridge holds a lease on.")
CONNECTED = Gauge("mqchat_bridge_connected", "1 while connected to the broker.")
