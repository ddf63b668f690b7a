"""A CQL native-protocol v4 stand-in for Cassandra, for tests only.

Lets the real cassandra-driver, and through it mqchat's Cassandra backends, run in CI where no
Cassandra can be installed. :class:`StandIn` (server.py) speaks the protocol; model.py holds an
in-memory model of our fixed statements. Read server.py's docstring for what it does not prove.
"""

from tests.cassandra_standin.server import Fault, StandIn

__all__ = ["Fault", "StandIn"]
