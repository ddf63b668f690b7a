"""Background workers: fan-out of offline-push jobs and the FCM / APNs senders.

Not built yet: this package holds the process's place in the layout. The push pipeline (fan-out
jobs on Redis Streams, FCM HTTP v1 and APNs senders with token-dead handling and backoff) is the
subject of its own issue; nothing in the message path depends on it.
"""
