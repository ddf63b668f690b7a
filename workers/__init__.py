"""Background workers.

::

    presence:changes (Redis stream) ──▶ workers.presence.publish ──▶ presence/{user} (retained)
                                                                 └─▶ presence:online:{channel} sets
    presence:leases (expired)        ──▶ workers.presence.sweep  ──▶ presence:changes

The presence publisher is the only writer of ``presence/{user}``: it publishes the aggregates in
the order Redis recorded them, so the retained state always ends on the latest one. It reads
through a consumer group, so a restart resumes where it stopped. The sweeper expires leases that
no broker refreshes any more (a crashed broker sends no wills).

Offline push (see docs/push.md and :mod:`workers.push`)::

    push:jobs  ──▶ workers.push.fanout ──▶ push:sends ──▶ workers.push.send ──▶ FCM (pyfcm) / APNs (aioapns)
    (bridge)       who is offline, badge,   (durable)      re-check, send,       or the recording pusher
                   collapse key                            retry / dead-letter

``python -m workers.push`` runs only the push loops, to scale them apart from presence.
"""
