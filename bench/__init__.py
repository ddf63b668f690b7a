"""Benchmarks of the MQTT broker against bare amqtt and Mosquitto (issue #3's speed targets).

::

    python -m bench.broker            bench/broker.py   CLI, workloads, table, JSON
        │ starts, per target and workload                 bench/targets.py  launch, stop, RSS / CPU probes
        │   mosquitto -c <conf> / python -m bench.amqtt_broker / mqchat broker --no-auth
        └ client load in worker processes                 bench/workers.py  roles over mobile_sim.mqtt

Everything runs on this host and talks to 127.0.0.1 only.
"""
