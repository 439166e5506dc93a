"""The online joiner: impressions ⋈ actions within an event-time window → labelled examples.

See ``docs/joiner.md`` for the windows, the watermark, the LMDB state, negative sampling and
crash safety.

Examples
--------
Three items shown, one clicked: one positive, and the two shown-but-not-clicked become negatives
when the window closes (all kept here: ``negative_rate`` 1):

>>> import tempfile
>>> from streamrec.joiner import Joiner
>>> from streamrec.log import open_log
>>> from streamrec.records import ActionEvent, Impression
>>> tmp = tempfile.mkdtemp()
>>> log = open_log(f"sqlite://{tmp}/log.db")
>>> _ = log.append("impressions", [Impression(request_id="r1", user="u1", item=i, time=0.0) for i in "abc"])
>>> _ = log.append("actions", [ActionEvent(user="u1", item="b", action="click", time=3.0, request_id="r1")])
>>> with Joiner(log, f"{tmp}/state", {"window": "1m", "negative_rate": 1.0}) as joiner:
...     stats = joiner.run(once=True, drain=True)
>>> print(f"{stats.positives} positive, {stats.negatives_kept} negatives, CTR {stats.positives / 3:.2f}")
1 positive, 2 negatives, CTR 0.33
>>> log.close()
"""

from streamrec.joiner.config import JoinConfig, joiner_config, load_joiner_config
from streamrec.joiner.runner import Joiner
from streamrec.joiner.sampling import correct_logit, correct_probability, keep_negative
from streamrec.joiner.state import JoinState
from streamrec.joiner.stats import JoinStats

__all__ = [
    "JoinConfig",
    "JoinState",
    "JoinStats",
    "Joiner",
    "correct_logit",
    "correct_probability",
    "joiner_config",
    "keep_negative",
    "load_joiner_config",
]
