"""What the tests, the simulator and the benchmarks share to run the system on this machine.

::

    harness.system          System: ``mqchat up`` on free loopback ports in a data directory,
                            launch(): the same in a temporary directory, optionally over Mosquitto
    harness.mosquitto       a bare Mosquitto on a free port (plain for tests, tuned for load)
    harness.redis           a private redis-server, or a three-node Redis Cluster, on free ports
    harness.postgres        a private PostgreSQL cluster (initdb, pg_ctl) on a free port
    harness.push_standins   FCM and APNs stand-ins (``python -m harness.push_standins DIR``)
    harness.processes       run a process tied to us; wait for its port
    harness.ports           free ports, the open-files limit
    harness.client          a reference device (aiomqtt) and the HTTP API, as an app would use them
    harness.http            the HTTP API over aiohttp, and the one client-side ApiError

It imports :mod:`mqchat` and nothing else of this repository: ``tests``, ``mobile_sim`` and
``bench`` import it, never the other way round.
"""
