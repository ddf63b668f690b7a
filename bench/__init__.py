"""Every benchmark of the system, each a ``python -m bench.<name>`` command.

::

    python -m bench.broker            bench/broker.py   our broker vs bare amqtt and Mosquitto (issue #3's targets)
        │ starts, per target and workload                 bench/targets.py  launch, stop, RSS / CPU probes
        │   mosquitto -c <conf> / python -m bench.amqtt_broker / mqchat broker --no-auth
        └ client load in worker processes                 bench/workers.py  roles over mobile_sim.mqtt
    python -m bench.pipeline          bench/pipeline.py the full pipeline vs bare brokers, same clients and load
    python -m bench.presence          bench/presence.py connect/disconnect churn: presence latency, Redis cost
    python -m bench.push              bench/push.py     push fan-out and senders against the FCM / APNs stand-ins
        └ python -m bench.push_measure                  the measurement, driving the server's push workers

Systems, brokers, Redis and stand-ins come from :mod:`harness`. Everything runs on this host and
talks to 127.0.0.1 only.
"""
