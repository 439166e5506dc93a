"""Training: the trainer (batch stage), the online stage, training→serving sync, snapshots.

The public names, by what a user does with them:

* train a model on a batch of examples: :class:`Trainer` with its :class:`TrainConfig`, on
  :class:`ExampleBatch` (defined in :mod:`streamrec.batch`, re-exported here);
* keep training on the log: :class:`OnlineTrainer` with its :class:`OnlineConfig`, counting in
  :class:`OnlineStats`;
* serve what it learns: :class:`ServingModel` applies the :class:`ModelUpdate` messages the online
  stage publishes on :data:`UPDATES_TOPIC` (sparse rows every few seconds, dense parameters less often);
* save and restore: :func:`save_trainer` / :func:`load_trainer` (one file), :func:`save_sharded` /
  :func:`load_shard` (one file per rank, any world size on load).

Distributed training (``streamrec.training.distributed``, ``launch``) and the CLI are modules of
their own; everything else in the package is an implementation detail.

Examples
--------
>>> import torch
>>> from streamrec.batch import ExampleBatch
>>> from streamrec.embedding import EmbeddingCollection, JaggedIds, SlotConfig
>>> from streamrec.models import ModelConfig, build_model
>>> from streamrec.training import TrainConfig, Trainer
>>> _ = torch.manual_seed(0)
>>> tables = EmbeddingCollection({"item": SlotConfig(dim=4)})
>>> trainer = Trainer(build_model(ModelConfig(hidden=[8]), tables), TrainConfig(batch_size=64, dense_lr=0.01))
>>> items = torch.randint(0, 20, (512,))
>>> batch = ExampleBatch({"item": JaggedIds.from_lists([[int(i)] for i in items])}, torch.zeros(512, 0),
...                      (items < 10).float())  # items 0-9 are clicked, 10-19 are not
>>> progressive = trainer.train(batch, epochs=3)
>>> print(f"train AUC {trainer.evaluate(batch)['auc']:.2f}")
train AUC 1.00
"""

from streamrec.batch import ExampleBatch
from streamrec.training.online import OnlineConfig, OnlineStats, OnlineTrainer
from streamrec.training.serving_model import ServingModel
from streamrec.training.shards import load_shard, save_sharded
from streamrec.training.snapshot import load_trainer, save_trainer
from streamrec.training.trainer import TrainConfig, Trainer
from streamrec.training.updates import UPDATES_TOPIC, ModelUpdate

__all__ = [
    "UPDATES_TOPIC",
    "ExampleBatch",
    "ModelUpdate",
    "OnlineConfig",
    "OnlineStats",
    "OnlineTrainer",
    "ServingModel",
    "TrainConfig",
    "Trainer",
    "load_shard",
    "load_trainer",
    "save_sharded",
    "save_trainer",
]
