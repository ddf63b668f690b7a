"""MQTT 3.1.1 on the wire, shared by every side that speaks it.

:mod:`mqchat.mqtt.codec` is the one codec: pure functions and no I/O. The broker reads client
packets with it in strict mode (every rule a client can break, with its spec citation) and writes
server packets; the simulator's lean client (:mod:`mobile_sim.mqtt`) and the tests encode client
packets and decode server packets with the same functions::

    client                                   codec                                  broker
    encode_connect / encode_subscribe ─▶ bytes ─▶ FrameReader / split_packets ─▶ decode_connect, ...
    decode_connack / decode_suback    ◀─ bytes ◀─ encode_connack / encode_suback ◀─
    encode_publish  ◀────────────────────── both ways ──────────────────────────▶  decode_publish

:mod:`mqchat.mqtt.client` is the services' client on the same codec (the bridge's connection):
an :class:`asyncio.Protocol` with an in-flight window, pipelined publishes and PUBACKs sent once
the consumer has taken a message.
"""
