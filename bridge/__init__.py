"""The bridge: turns sends into one ordered, durable stream per channel.

::

    in/{user}/{device}/{channel} ──▶ consume ──▶ batch ──▶ decode + validate (schema)
                                                       ──▶ membership check (directory)
                                                       ──▶ dedup on (channel, sender, cmid)
                                                       ──▶ assign seq + Snowflake id (sequencer)
                                                       ──▶ persist the batch, one transaction
                                                       ──▶ publish ch/{channel}, in seq order
                                                       ──▶ ack dev/{user}/{device}/ack

The sender is taken from the topic (which the broker's ACL ties to the connection's identity),
never from the payload. A send is acked only after it is durable; every rejected send gets an
error ack with a code, never silence.

Functions that define policy: :meth:`bridge.sequencer.Sequencer.plan` (order and idempotency) and
:func:`mqchat.schema.decode_send` (what a valid send is).
"""
