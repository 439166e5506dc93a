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


@needs_movielens
def test_online_training_beats_the_frozen_model_on_movielens(small_movielens):
    results = {r.variant: r.value for r in online(small_movielens, online_batch_size=128)}
    assert set(results) == set(ONLINE_VARIANTS)
    assert results["immediate"] > results["frozen"] + 0.01
    assert results["sync 10m"] > results["sync 1d"]


@needs_movielens
def test_collisionless_beats_heavy_hashing_on_movielens(small_movielens):
    results = collisions(small_movielens, epochs=1, fractions=(1 / 32,))
    by = {r.variant: r.value for r in results}
    assert by["collisionless"] > by["hashed 1/32"] + 0.05


@needs_movielens
def test_eval_online_cli_writes_plots_and_json(tmp_path, monkeypatch, small_movielens):
    import streamrec.datasets.resolve as resolve

    tiny = Dataset("ml-8k", small_movielens.kind, small_movielens.examples[:8_000], small_movielens.pooling)
    monkeypatch.setattr(resolve, "load_dataset", lambda spec: tiny)
    result = CliRunner().invoke(app, ["eval", "online", "--data", "x", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert {r["variant"] for r in out["results"]} == set(ONLINE_VARIANTS)
    assert out["plots"] and all((tmp_path / p.split("/")[-1]).stat().st_size > 1000 for p in out["plots"])
    assert set(out["expectations_met"]) == {"online/ml-8k: every online variant > frozen",
                                            "online/ml-8k: shorter sync >= longer"}  # fmt: skip
