"""Readers never lock and never see half a merge, while writes, merges, flushes and evictions run."""

from __future__ import annotations

import threading

from streamrec.profiles import Feature, FeatureQuery, ProfileStore
from streamrec.records import ActionEvent

NOW = 1_700_000_000.0


def test_queries_see_whole_merges_while_writes_merges_flushes_and_evictions_run(tmp_path):
    cfg = {"merge_interval": "0.005s", "flush_interval": "0.05s", "memory_budget_mb": 0.02}
    store = ProfileStore(cfg, path=tmp_path, clock=lambda: NOW)
    users = [str(u) for u in range(40)]
    q = FeatureQuery(
        entities=["user:0", "user:1"],
        features=[
            Feature(slot="clicked_category", window="1h", counters=("click", "show")),
            Feature(slot="clicked_category", window="1h", top_k=3),
            Feature(slot="actions", window="1d", agg="distinct"),
        ],
        now=NOW,
    )
    batches = 60
    errors: list[BaseException] = []
    seen: list[tuple[float, float]] = []
    done = threading.Event()

    def writer() -> None:
        try:
            for b in range(batches):
                # Every batch: one click and one show per user, so clicks == shows after any whole merge.
                store.write(
                    [
                        ActionEvent(
                            user=u, item=f"i{b}", action=a, time=NOW - 30 + b * 0.1, attributes={"category": "c"}
                        )
                        for u in users
                        for a in ("click", "show")
                    ]
                )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            done.set()

    def reader() -> None:
        try:
            while not done.is_set():
                res = store.query(q)
                for row in res.results:
                    clicks, shows = row[0].data[0]
                    assert clicks == shows  # never half a merge
                    seen.append((clicks, shows))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer), threading.Thread(target=reader), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    store.merge()
    final = store.query(q).results
    assert final[0][0].data[0] == [float(batches), float(batches)]
    assert store.stats()["evictions"] > 0
    store.close()
    reopened = ProfileStore(cfg, path=tmp_path, clock=lambda: NOW, background=False)
    assert all(reopened.query(q).results[i][0].data[0] == [float(batches)] * 2 for i in range(2))
    reopened.close()
