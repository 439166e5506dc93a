"""The online joiner: impressions ⋈ actions within an event-time window → labelled examples.

See ``docs/joiner.md`` for the windows, the watermark, the LMDB state, negative sampling and
crash safety.
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
