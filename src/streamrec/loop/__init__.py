"""The whole loop embedded in one process, three arms on the same simulated users (``docs/loop.md``).

``run_loop(LoopConfig(...), out)`` warms up on popularity, batch-trains a DeepFM, then steps the
online, frozen and popularity arms in lockstep; ``streamrec demo`` is this with live progress and
a report.
"""

from streamrec.loop.run import LoopConfig, LoopResult, run_loop

__all__ = ["LoopConfig", "LoopResult", "run_loop"]
