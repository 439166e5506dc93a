"""The paper's experiments on real data: ``streamrec eval collisions`` and ``streamrec eval online``."""

from streamrec.eval.experiments import Result, collisions, expectations, online

__all__ = ["Result", "collisions", "expectations", "online"]
