"""The embedded MQTT broker: our MQTT 3.1.1 engine (:mod:`broker.engine` has the map of its
modules) with mqchat's authentication and topic ACL plugins.

::

    CONNECT ──▶ JwtAuthPlugin.authenticate   token valid? username = sub? client id = sub:dev?
                                             will only on the device's own presence topic?
    SUBSCRIBE / PUBLISH / delivery
            ──▶ TopicAclPlugin.topic_allowed ──▶ mqchat.policy.authorize (pure)
                                             ──▶ membership cache ──▶ directory (SQLite)

Our plugins implement the native protocol of :mod:`broker.plugin_api` and are built from typed
settings by :func:`broker.app.native_plugins`; amqtt-API plugins named in the configuration run
through :mod:`broker.amqtt_adapter`. Both of ours return an explicit ``True``/``False`` and fail
closed: a backend error or an unexpected exception denies and is logged. Only this package knows
amqtt; the bridge, workers and simulator are plain MQTT 3.1.1 clients.
"""
