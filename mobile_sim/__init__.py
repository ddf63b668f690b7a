"""External MQTT client simulator and load generator.

It speaks only the documented contract (the HTTP API and the MQTT topics and payloads), and
imports nothing from the server processes: only :mod:`mqchat.topics`, :mod:`mqchat.schema` and
:mod:`mqchat.config`.
"""
