"""Seeded traffic for the end-to-end joiner tests: duplicated, out of order within the lateness."""

from __future__ import annotations

import random

from joiner_reference import offline_join
from joiner_strategies import bounded_disorder

from streamrec.records import ActionEvent, Example, Impression

WINDOW, LATENESS, RATE = 60.0, 5.0, 0.5


def traffic(n_requests: int, seed: int = 0) -> tuple[list[Impression], list[ActionEvent]]:
    """Requests of 5 items, one every 0.5 s; ~20% clicked (some twice, some too late, some before
    the impression is logged); 10% of impressions logged twice; each topic disordered by <= 5 s."""
    rng = random.Random(seed)
    imps: list[Impression] = []
    acts: list[ActionEvent] = []
    for r in range(n_requests):
        t = 1000.0 + 0.5 * r
        for i in range(5):
            item = f"i{rng.randrange(50)}"
            imp = Impression(request_id=f"r{r}", user=f"u{r % 17}", item=item, time=t, sparse={"item": [i]})
            imps += [imp] * (2 if rng.random() < 0.1 else 1)
            if rng.random() < 0.2:
                delay = rng.choice([-2.0, 1.0, 10.0, 59.0, 61.0, 300.0])
                act = ActionEvent(user=imp.user, item=item, action=rng.choice(["click", "like"]), time=t + delay,
                                  request_id=f"r{r}")  # fmt: skip
                acts += [act] * rng.choice([1, 1, 2])
            if rng.random() < 0.3:
                acts.append(ActionEvent(user=imp.user, item=item, action="show", time=t, request_id=f"r{r}"))
    return bounded_disorder(imps, LATENESS, rng), bounded_disorder(acts, LATENESS, rng)


def check_examples(examples: list[Example], imps: list[Impression], acts: list[ActionEvent]) -> None:
    """Exactly one example per distinct impression (kept ones), labelled as the offline join says."""
    expected = offline_join(imps, acts, window=WINDOW, lateness=LATENESS, rate=RATE)
    got: dict[tuple[str, str], Example] = {}
    for e in examples:
        key = (e.request_id, e.item)
        assert key not in got, f"duplicated example for {key}"
        got[key] = e
    assert got.keys() == expected.keys()
    for key, e in got.items():
        assert (e.label, e.sample_rate) == (expected[key].label, expected[key].sample_rate), key
        assert e.time in expected[key].times
