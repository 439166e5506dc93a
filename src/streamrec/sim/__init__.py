"""A simulated world to drive the loop: users whose interests drift, items that come and go (``docs/sim.md``).

``World`` holds the users, items and the true click model; the drivers (``InProcessDriver``,
``HttpDriver``) send its traffic to any ``Recommender``; ``PopularityPolicy``, ``RandomPolicy`` and
``OraclePolicy`` are the reference arms; ``World.generate_history`` makes past traffic for the
batch stage.

Examples
--------
The expected click-through rate of recommending what is popular, and of an oracle that knows each
user's interests, on the same 300 simulated users for 20 minutes:

>>> from streamrec.sim import InProcessDriver, OraclePolicy, PopularityPolicy, World
>>> def ctr(policy):
...     world = World(seed=3, n_users=300)
...     return InProcessDriver(world, policy(world)).run(minutes=20).total().expected_ctr
>>> print(f"popularity {ctr(PopularityPolicy):.3f}, oracle {ctr(OraclePolicy):.3f}")
popularity 0.042, oracle 0.194
"""

from streamrec.sim.config import WorldConfig
from streamrec.sim.driver import Bucket, Driver, InProcessDriver, SimReport
from streamrec.sim.history import History, generate_history
from streamrec.sim.http import HttpDriver
from streamrec.sim.policies import OraclePolicy, PopularityPolicy, RandomPolicy
from streamrec.sim.protocol import Recommender, Slate, SlateItem
from streamrec.sim.world import Feedback, World

__all__ = [
    "Bucket",
    "Driver",
    "Feedback",
    "History",
    "HttpDriver",
    "InProcessDriver",
    "OraclePolicy",
    "PopularityPolicy",
    "RandomPolicy",
    "Recommender",
    "SimReport",
    "Slate",
    "SlateItem",
    "World",
    "WorldConfig",
    "generate_history",
]
