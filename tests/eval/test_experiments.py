import json

import pytest
from typer.testing import CliRunner

from streamrec.cli import app
from streamrec.datasets import find_dataset
from streamrec.datasets.resolve import Dataset, load_dataset
from streamrec.eval.experiments import ONLINE_VARIANTS, Result, collisions, expectations, online


def test_expectations_are_judged_per_data_set_from_the_results():
    rs = [
        Result("collisions", "d", "collisionless", "test_auc", 0.70, 1),
        Result("collisions", "d", "hashed 1/2", "test_auc", 0.69, 1),
        Result("collisions", "d", "collisionless", "test_auc", 0.70, 2),
        Result("collisions", "d", "hashed 1/2", "test_auc", 0.71, 2),
    ]
    assert expectations(rs) == {"collisions/d: collisionless >= every hashed variant at every epoch": False}
    values = dict(zip(ONLINE_VARIANTS, [0.70, 0.71, 0.72, 0.73, 0.73], strict=True))
    met = expectations([Result("online", "d", k, "progressive_auc", v) for k, v in values.items()])
    assert all(met.values()) and len(met) == 2


needs_movielens = pytest.mark.skipif(find_dataset("ml-100k") is None, reason="ml-100k not present")


@pytest.fixture(scope="module")
def small_movielens():
    ds = load_dataset("ml-100k")
    return Dataset("ml-20k", ds.kind, ds.examples[:20_000], ds.pooling)


ONLINE_MET = {"every online variant > frozen": True, "shorter sync >= longer": True}


@needs_movielens
def test_online_training_beats_the_frozen_model_on_movielens(small_movielens):
    results = online(small_movielens, online_batch_size=128)
    by = {r.variant: r.value for r in results}
    assert set(by) == set(ONLINE_VARIANTS)
    # What `streamrec eval online` prints as held, all of it (measured: 0.6835 frozen, 0.7092 1d,
    # 0.7294 1h, 0.7408 10m, 0.7408 immediate).
    assert expectations(results) == {f"online/ml-20k: {name}": ok for name, ok in ONLINE_MET.items()}
    assert by["frozen"] > 0.65  # the batch stage learned something before the replay
    assert by["immediate"] > by["frozen"] + 0.04
    assert by["sync 10m"] > by["sync 1d"] + 0.02


@needs_movielens
def test_collisionless_beats_every_hashed_table_on_movielens(small_movielens):
    results = collisions(small_movielens, epochs=2)
    key = "collisions/ml-20k: collisionless >= every hashed variant at every epoch"
    assert expectations(results) == {key: True}
    by = {(r.variant, r.epoch): r.value for r in results}
    assert {v for v, _ in by} == {"collisionless", "hashed 1/2", "hashed 1/8", "hashed 1/32"}
    for epoch in (1, 2):  # measured: 0.708 / 0.713 collisionless, 0.562 / 0.552 at 1/32 of the rows
        assert by["collisionless", epoch] > 0.69
        assert by["collisionless", epoch] > by["hashed 1/32", epoch] + 0.1


@needs_movielens
def test_eval_online_cli_writes_plots_and_json_and_the_expectations_hold(tmp_path, monkeypatch, small_movielens):
    import streamrec.datasets.resolve as resolve

    monkeypatch.setattr(resolve, "load_dataset", lambda spec: small_movielens)
    result = CliRunner().invoke(app, ["eval", "online", "--data", "x", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert {r["variant"] for r in out["results"]} == set(ONLINE_VARIANTS)
    assert out["plots"] and all((tmp_path / p.split("/")[-1]).stat().st_size > 1000 for p in out["plots"])
    # The verdicts printed are the verdicts of the values printed, and on these 20,000 ratings they hold
    # (measured: 0.6835 frozen, 0.7105 1d, 0.7293 1h, 0.7486 10m, 0.7529 immediate).
    printed = [Result(r["experiment"], r["dataset"], r["variant"], r["metric"], r["value"]) for r in out["results"]]
    assert out["expectations_met"] == expectations(printed)
    assert out["expectations_met"] == {f"online/ml-20k: {name}": ok for name, ok in ONLINE_MET.items()}
