"""Hypothesis strategies and helpers for joiner inputs: duplicated, shuffled, late, split in steps."""

from __future__ import annotations

import random

from hypothesis import strategies as st
from joiner_reference import Step

from streamrec.records import ActionEvent, Impression

WINDOW = 100.0
LATENESS = 10.0
# Action times relative to the impression, on and around every boundary of the window.
OFFSETS = (-25.0, -LATENESS, -5.0, 0.0, 5.0, 50.0, WINDOW - 5, WINDOW, WINDOW + 5, WINDOW + LATENESS, 130.0)
ACTIONS = ("click", "like", "share", "purchase", "show", "impression", "dwell")


@st.composite
def events(draw: st.DrawFn, max_requests: int = 6) -> tuple[list[Impression], list[ActionEvent]]:
    """Impressions (some duplicated) and actions around them (before, inside and after the window,
    some duplicated, some not labels, some for no impression at all)."""
    imps: list[Impression] = []
    acts: list[ActionEvent] = []
    for r in range(draw(st.integers(1, max_requests))):
        t = 10.0 * draw(st.integers(3, 60))  # a coarse grid, so boundaries coincide often
        for i in range(draw(st.integers(1, 3))):
            imp = Impression(request_id=f"r{r}", user="u", item=f"i{i}", time=t, sparse={"item": [i], "req": [r]})
            imps += [imp] * draw(st.integers(1, 3))
            for _ in range(draw(st.integers(0, 3))):
                act = ActionEvent(
                    user="u",
                    item=f"i{i}",
                    action=draw(st.sampled_from(ACTIONS)),
                    time=t + draw(st.sampled_from(OFFSETS)),
                    request_id=draw(st.sampled_from([f"r{r}", f"r{r}", f"r{r}", None, "nobody"])),
                )
                acts += [act] * draw(st.integers(1, 2))
    return imps, acts


def bounded_disorder(records: list, lateness: float, rng: random.Random) -> list:
    """Arrival order in which no record is more than ``lateness`` older than one before it."""
    return sorted(records, key=lambda r: r.time + rng.uniform(0, lateness))


def split_steps(imps: list[Impression], acts: list[ActionEvent], rng: random.Random, *, truthful: bool) -> list[Step]:
    """Cut both topics into random batches; ``caught_up`` is the truth (or random if not ``truthful``)."""
    steps: list[Step] = []
    i = a = 0
    while i < len(imps) or a < len(acts):
        ni, na = rng.randint(0, 4), rng.randint(0, 4)
        step = Step(imps[i : i + ni], acts[a : a + na])
        i, a = min(i + ni, len(imps)), min(a + na, len(acts))
        if truthful:
            step.caught_up = (i >= len(imps), a >= len(acts))
        else:
            step.caught_up = (rng.random() < 0.3, rng.random() < 0.3)
        steps.append(step)
    return steps
