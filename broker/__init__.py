"""The embedded MQTT broker: amqtt with mqchat's authentication and topic ACL plugins.

::

    CONNECT ──▶ JwtAuthPlugin.authenticate   token valid? username = sub? client id = sub:dev?
                                             will only on the device's own presence topic?
    SUBSCRIBE / PUBLISH / delivery
            ──▶ TopicAclPlugin.topic_filtering ──▶ mqchat.policy.authorize (pure)
                                             ──▶ membership cache ──▶ directory (SQLite)

Both plugins return an explicit ``True``/``False`` and fail closed: a backend error or an
unexpected exception denies and is logged. Only this package knows amqtt; the bridge, workers and
simulator are plain MQTT 3.1.1 clients.
"""
