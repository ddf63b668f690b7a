"""Offline push: fan-out decisions and the FCM / APNs senders.

::

    bridge ─▶ push:jobs ─▶ workers.fanout.Fanout ─▶ push:sends ─▶ workers.push.sender.Sender ─▶ Pusher
                           (who needs a push,        (durable)     (re-check, send, settle)      ├ FcmPusher   (pyfcm)
                            badge, collapse key)                   │                             ├ ApnsPusher  (aioapns)
                                                                   └─▶ push:retry / push:dlq     └ RecordingPusher

The functions that define policy, all pure: :func:`workers.fanout.decide` (who gets a push),
:func:`workers.push.sender.skip_reason` (the re-check just before sending),
:func:`workers.push.policy.next_attempt_ms` (backoff, ``Retry-After``, give-up horizon),
:func:`workers.push.policy.fit_payload` (provider size limits), and the ``classify`` function
with its code tables in each provider module. See docs/push.md.
"""
