"""One rank of the distributed tests, as torchrun would start it (``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT`` set)::

    python dist_worker.py OUT OPTIMIZER ADMIT STEPS BATCH [SAVE_DIR|-] [LOAD_DIR|-]

Trains ``STEPS`` global batches (after restoring ``LOAD_DIR`` if given, resharding to this world
size), then writes this rank's parameters, the AUC on a held-out set and the bytes it sent to
``OUT``, and a sharded snapshot to ``SAVE_DIR`` if given.
"""

from __future__ import annotations

import sys

import dist_data
import numpy as np
import torch

from streamrec.quality import auc
from streamrec.training.distributed import DistributedTrainer, ShardedEmbeddingModule, global_slice, init_from_env
from streamrec.training.shards import load_shard, save_sharded
from streamrec.training.trainer import TrainConfig


def main() -> None:
    out, optimizer, admit, steps, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    save = sys.argv[6] if len(sys.argv) > 6 and sys.argv[6] != "-" else None
    load = sys.argv[7] if len(sys.argv) > 7 and sys.argv[7] != "-" else None
    torch.set_num_threads(1)
    rank, world = init_from_env("gloo")
    if load is not None:
        trainer = DistributedTrainer.from_trainer(load_shard(load, rank, world)[0])
    else:
        model = dist_data.model(optimizer, admit)
        model.embeddings = ShardedEmbeddingModule(model.embeddings.tables)
        trainer = DistributedTrainer(model, TrainConfig(dense_optimizer="adam", dense_lr=0.01))
    model = trainer.model
    records = dist_data.examples(steps * size, seed=1)
    for step in range(steps):
        lo, hi = global_slice(size, rank, world)
        trainer.train_step(dist_data.batch(records[step * size + lo : step * size + hi]))
    if save is not None:
        save_sharded(save, trainer, {"note": "dist_worker"})
    test = dist_data.examples(500, seed=2)
    lo, hi = global_slice(len(test), rank, world)
    logits = trainer.predict_logits(dist_data.batch(test[lo:hi]))
    gathered = [None] * world
    torch.distributed.all_gather_object(gathered, logits)
    labels = np.array([e.label for e in test])
    params = dist_data.parameters(model)
    params["auc"] = np.array(auc(labels, np.concatenate(gathered)))
    params["bytes_sent"] = np.array(model.embeddings.bytes_sent)
    np.savez(out, **params)
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
