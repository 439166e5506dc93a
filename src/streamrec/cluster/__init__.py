"""Cluster mode on one machine: every part of the loop as its own process (``streamrec cluster up``).

See ``docs/cluster.md``. :class:`Cluster` starts Redis (unless given one), the profile nodes, the
profile ingest, the joiner, the online trainer and the API, waits until each answers, and stops
them in order.
"""

from streamrec.cluster.launcher import Cluster, ClusterConfig
from streamrec.cluster.process import ProcessDiedError

__all__ = ["Cluster", "ClusterConfig", "ProcessDiedError"]
