import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from streamrec.cli import app
from streamrec.datasets import find_dataset
from streamrec.datasets.resolve import load_dataset
from streamrec.embedding import EmbeddingCollection
from streamrec.models import build_model
from streamrec.training.defaults import configs_for
from streamrec.training.snapshot import load_trainer, save_trainer
from streamrec.training.trainer import Trainer

pytestmark = pytest.mark.skipif(find_dataset("ml-100k") is None, reason="ml-100k not present")


@pytest.fixture(scope="module")
def movielens():
    return load_dataset("ml-100k")


def test_train_batch_learns_movielens_and_writes_a_snapshot_that_scores_the_same(tmp_path, movielens):
    out = tmp_path / "batch.npz"
    result = CliRunner().invoke(app, ["train", "batch", "--data", "ml-100k", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["test_auc"] > 0.68  # item popularity alone gives ~0.70 on this time split
    trainer, extra = load_trainer(out)
    assert extra["dataset"] == "ml-100k" and trainer.examples_seen == 80_000
    test = movielens.examples[80_000:]
    assert trainer.evaluate(test)["auc"] == pytest.approx(summary["test_auc"], abs=1e-4)


@pytest.mark.parametrize("kind", ["dcnv2", "two_tower"])
def test_a_restored_trainer_continues_bit_for_bit(tmp_path, movielens, kind):
    embedding, model_config, train_config = configs_for(movielens, kind)
    torch.manual_seed(0)
    trainer = Trainer(build_model(model_config, EmbeddingCollection(embedding)), train_config)
    data = movielens.examples
    trainer.train(data[:4000])
    save_trainer(tmp_path / "s.npz", trainer, {"offset": 4000})
    restored, extra = load_trainer(tmp_path / "s.npz")
    assert extra == {"offset": 4000}
    assert np.array_equal(trainer.predict_logits(data[4000:5000]), restored.predict_logits(data[4000:5000]))
    trainer.train(data[4000:7000])
    restored.train(data[4000:7000])
    assert np.array_equal(trainer.predict_logits(data[7000:8000]), restored.predict_logits(data[7000:8000]))


def test_train_batch_names_a_missing_data_set():
    result = CliRunner().invoke(app, ["train", "batch", "--data", "no-such-data"])
    assert result.exit_code != 0
    assert "--data" in str(result.exception)
