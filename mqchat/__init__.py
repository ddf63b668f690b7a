"""mqchat: the shared core of a mobile-first chat backend whose transport is MQTT.

Every process (``broker``, ``bridge``, ``api``, ``workers``) and the ``mobile_sim`` client build on
this package; it imports none of them (only :mod:`mqchat.cli`, the launcher, starts them)::

    phone ──MQTT──▶ broker ──in/{user}/{device}/{channel}──▶ bridge
                      ▲                                         │ validate, dedup, order
                      │                                         ▼
                      └────── ch/{channel}, dev/../ack ◀── persist (MessageStore), then publish, then ack

The modules that define policy, and so the contract:

- :mod:`mqchat.topics`  — the topic grammar (builders, parsers, filters); nobody else formats topics.
- :mod:`mqchat.schema`  — wire payloads, size limits and strict decoding.
- :mod:`mqchat.policy`  — who may publish / subscribe / receive what (pure).
- :mod:`mqchat.auth`    — JWT issue and verification (pure: ``now`` is passed in).
- :mod:`mqchat.ids`     — id grammar and Snowflake ids (pure).
- :mod:`mqchat.mqtt`    — the MQTT 3.1.1 codec: strict for the broker, also the clients' and tests'.
"""

__version__ = "0.1.0"
