"""``eval recommend`` on tiny logs: the popularity rows against a brute-force replay, the
prequential order (nothing is predicted from what it has not yet seen), refusals, the CLI."""

import json
import math

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from streamrec.cli import app
from streamrec.datasets.formats import table_dataset
from streamrec.errors import InvalidInputError
from streamrec.eval.recommend import RecommendConfig, RecommendRow, recommend, recommend_expectations
from streamrec.eval.topk import TopKScores

FAST = dict(ks=(2, 5), retrieval_epochs=1, batch_size=32, quotas={"co_engaged": 4, "ann": 4, "trending": 4, "fresh": 2})


def tiny_log(n_rows=400, n_users=25, n_items=30, seed=0):
    rng = np.random.default_rng(seed)
    # a popularity skew, so the popular baseline has something to find
    p = 1.0 / np.arange(1, n_items + 1)
    items = rng.choice(n_items, size=n_rows, p=p / p.sum())
    table = pa.table(
        {
            # users keep arriving, so the last part of time has users never seen before (cold)
            "user": (rng.random(n_rows) * (5 + np.arange(n_rows) * n_users / n_rows)).astype(np.int64),
            "item": items,
            "rating": rng.integers(1, 6, n_rows),
            "time": np.sort(rng.integers(0, 10_000_000, n_rows)),
        }
    )
    return table_dataset(table, "tiny", "rating>=4", "time", ["user", "item"], "tiny.csv")


def brute_popularity(user, item, label, lo, hi, k):
    """Per-user mean over the positives of rows [lo, hi) (one at a time, in order) of whether the
    item is in the top k by positives among rows before it, skipping what the user already met."""
    hits = {}
    for r in range(lo, hi):
        if not label[r]:
            continue
        counts, seen_items, met = {}, set(), set()
        for q in range(r):
            seen_items.add(item[q])
            if user[q] == user[r]:
                met.add(item[q])
            if label[q]:
                counts[item[q]] = counts.get(item[q], 0) + 1
        ranked = sorted((i for i in counts if i not in met and i in seen_items), key=lambda i: (-counts[i], i))
        hits.setdefault(user[r], []).append(float(item[r] in ranked[:k]))
    return float(np.mean([np.mean(h) for h in hits.values()])), len(hits)


def rows_of(rows, variant, method, k, group="all") -> TopKScores:
    return next(r.scores for r in rows if (r.variant, r.method, r.k, r.group) == (variant, method, k, group))


def test_prequential_popularity_matches_a_replay_that_predicts_each_positive_before_learning_it():
    ds = tiny_log()
    step = 1  # one row per step: the brute-force replay above, exactly
    rows = recommend(ds, RecommendConfig(step=step, test_fraction=0.1, **FAST))
    ex = ds.examples
    user = ex.sparse["user"].values.numpy()
    item = ex.sparse["item"].values.numpy()
    label = ex.labels.numpy() > 0
    cut = int(len(ex) * 0.9)
    for k in (2, 5):
        expected, users = brute_popularity(user, item, label, cut, len(ex), k)
        got = rows_of(rows, "prequential", "popular", k)
        assert got.users == users
        assert got.recall == pytest.approx(expected)


def test_split_popularity_matches_a_brute_force_list_per_user():
    ds = tiny_log(seed=1)
    rows = recommend(ds, RecommendConfig(prequential=False, **FAST))
    ex = ds.examples
    user, item = ex.sparse["user"].values.numpy(), ex.sparse["item"].values.numpy()
    label = ex.labels.numpy() > 0
    cut = int(len(ex) * 0.8)
    counts = {}
    for q in range(cut):
        if label[q]:
            counts[item[q]] = counts.get(item[q], 0) + 1
    recalls = []
    for u in sorted({user[r] for r in range(cut, len(ex)) if label[r]}):
        met = {item[q] for q in range(cut) if user[q] == u}
        relevant = {item[r] for r in range(cut, len(ex)) if label[r] and user[r] == u}
        ranked = sorted((i for i in counts if i not in met), key=lambda i: (-counts[i], i))[:5]
        recalls.append(len(relevant & set(ranked)) / len(relevant))
    assert rows_of(rows, "split", "popular", 5).recall == pytest.approx(np.mean(recalls))


def test_no_method_recommends_an_item_before_it_appears_in_the_stream():
    # Every row brings a new item: whatever learned a row before predicting it would hit it.
    n = 120
    table = pa.table(
        {"user": np.arange(n) % 7, "item": np.arange(n), "rating": np.full(n, 5), "time": np.arange(n) * 60}
    )
    ds = table_dataset(table, "new-items", "rating>=4", "time", ["user", "item"], "t.csv")
    rows = recommend(ds, RecommendConfig(step=10, test_fraction=0.5, **FAST))
    prequential = [r for r in rows if r.variant == "prequential" and r.group == "all"]
    assert {r.method for r in prequential} >= {"popular", "ann", "retrieval", "ranker", "recommender", "random"}
    assert all(r.scores.hit == 0.0 for r in prequential)


def test_warm_and_cold_users_split_the_users_and_every_method_is_reported():
    ds = tiny_log(n_rows=300, n_users=60, seed=2)
    rows = recommend(ds, RecommendConfig(prequential=False, **FAST))
    for method in ("random", "popular", "trending", "co_engaged", "fresh", "ann", "retrieval", "ranker", "recommender"):
        n = {g: rows_of(rows, "split", method, 5, g).users for g in ("all", "warm", "cold")}
        assert n["all"] == n["warm"] + n["cold"] and n["cold"] > 0 and n["warm"] > 0
        s = rows_of(rows, "split", method, 5)
        assert 0.0 <= s.recall <= 1.0 and s.recall_ci[0] <= s.recall <= s.recall_ci[1]


def test_a_table_without_event_times_is_refused_naming_the_time_flag():
    table = pa.table({"user": [1, 2, 3, 1], "item": [1, 2, 1, 3], "rating": [5, 4, 1, 5]})
    ds = table_dataset(table, "untimed", "rating>=4", None, None, "t.csv")
    assert not ds.has_time
    with pytest.raises(InvalidInputError, match="--time"):
        recommend(ds, RecommendConfig(**FAST))


def test_expectations_compare_the_recommender_with_popularity():
    def row(variant, group, method, recall):
        s = TopKScores(recall, (recall, recall), 0.0, (0.0, 0.0), 0.0, 0.0, 10)
        return RecommendRow("d", variant, group, method, 10, s)

    rows = [row("split", "all", "popular", 0.10), row("split", "all", "recommender", 0.12)]
    rows += [row("split", "cold", "popular", 0.05), row("split", "cold", "recommender", 0.05)]
    met = recommend_expectations(rows)
    assert met == {
        "recommend/d/split: recommender > popular on recall@10": True,
        "recommend/d/split: recommender >= 1.3 x popular on recall@10 (goal)": False,
        "recommend/d/split: cold users, recommender >= popular on recall@10 (goal)": True,
    }


def test_cli_eval_recommend_reads_a_csv_with_label_and_time_and_prints_json(tmp_path):
    ds_rows = 300
    rng = np.random.default_rng(4)
    lines = ["uid,movie,stars,ts"]
    for t in range(ds_rows):
        lines.append(f"{rng.integers(0, 20)},{rng.integers(0, 25)},{rng.integers(1, 6)},{1_000_000 + 60 * t}")
    path = tmp_path / "ratings_any.csv"
    path.write_text("\n".join(lines) + "\n")
    args = ["eval", "recommend", "--data", str(path), "--label", "stars>=4", "--time", "ts", "--slots", "uid,movie"]
    args += ["--user-slot", "uid", "--item-slot", "movie", "--k", "3,5", "--step", "50", "--retrieval-epochs", "1"]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    methods = {r["method"] for r in out["results"]}
    assert {"popular", "random", "recommender", "ann", "retrieval"} <= methods
    assert {r["k"] for r in out["results"]} == {3, 5}
    assert {r["variant"] for r in out["results"]} == {"split", "prequential"}
    assert any("recommender > popular" in k for k in out["expectations_met"])
    assert all(r["recall"] is None or (0 <= r["recall"] <= 1 and not math.isnan(r["recall"])) for r in out["results"])
    bad = CliRunner().invoke(app, ["eval", "recommend", "--data", str(path), "--label", "stars >> 4"])
    assert bad.exit_code != 0 and "--label" in str(bad.exception)


def test_eval_and_train_batch_pin_torch_threads(tmp_path):
    import torch

    path = tmp_path / "examples.csv"
    rng = np.random.default_rng(0)
    rows = [f"{rng.integers(0, 2)},{rng.integers(0, 9)},{rng.integers(0, 9)},{t}" for t in range(200)]
    path.write_text("label,user,item,time\n" + "\n".join(rows) + "\n")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        args = ["train", "batch", "--data", str(path), "--out", str(tmp_path / "b.npz"), "--json", "--threads", "1"]
        assert CliRunner().invoke(app, args).exit_code == 0
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        args = ["eval", "recommend", "--data", str(path), "--step", "100", "--retrieval-epochs", "1", "--json"]
        assert CliRunner().invoke(app, args).exit_code == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def brute_co_engaged(user, item, label, before, u, recent=10):
    """The co-engagement list of user ``u`` from rows ``[0, before)``, by its definition."""
    seeds = [item[q] for q in range(before) if label[q] and user[q] == u][-recent:]
    seeds = list(dict.fromkeys(reversed(seeds)))  # distinct, newest first
    took = {}
    for q in range(before):
        if label[q]:
            took.setdefault(user[q], set()).add(item[q])
    score = {}
    for other, items in took.items():
        if other == u:
            continue
        weight = sum(1 for s in seeds if s in items)
        for i in items:
            score[i] = score.get(i, 0) + weight
    met = {item[q] for q in range(before) if user[q] == u}
    return sorted(
        (i for i, s in score.items() if s > 0 and i not in seeds and i not in met), key=lambda i: (-score[i], i)
    )


def test_prequential_co_engagement_matches_its_definition_across_steps():
    ds = tiny_log(n_rows=300, n_users=12, n_items=25, seed=5)
    step = 7  # many steps: each user's recent positives roll over between them
    rows = recommend(ds, RecommendConfig(step=step, test_fraction=0.3, recent_items=3, **FAST))
    ex = ds.examples
    user, item = ex.sparse["user"].values.numpy(), ex.sparse["item"].values.numpy()
    label = ex.labels.numpy() > 0
    cut = int(len(ex) * 0.7)
    hits = {}
    for lo in range(cut, len(ex), step):
        for r in range(lo, min(lo + step, len(ex))):
            if label[r]:
                top = brute_co_engaged(user, item, label, lo, user[r], recent=3)[:5]
                hits.setdefault(user[r], []).append(float(item[r] in top))
    expected = float(np.mean([np.mean(h) for h in hits.values()]))
    got = rows_of(rows, "prequential", "co_engaged", 5)
    assert got.users == len(hits) and got.recall == pytest.approx(expected)
    assert expected > 0  # the log is dense enough that co-engagement finds something
