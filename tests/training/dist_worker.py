"""One rank of the equivalence test: ``python dist_worker.py OUT OPTIMIZER ADMIT STEPS BATCH``, with
``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` set as torchrun sets them."""

from __future__ import annotations

import sys

import dist_data
import numpy as np
import torch

from streamrec.metrics import auc
from streamrec.training.distributed import DistributedTrainer, ShardedEmbeddingModule, global_slice, init_from_env
from streamrec.training.trainer import TrainConfig


def main() -> None:
    out, optimizer, admit, steps, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    torch.set_num_threads(1)
    rank, world = init_from_env("gloo")
    model = dist_data.model(optimizer, admit)
    model.embeddings = ShardedEmbeddingModule(model.embeddings.tables)
    trainer = DistributedTrainer(model, TrainConfig(dense_optimizer="adam", dense_lr=0.01))
    records = dist_data.examples(steps * size, seed=1)
    for step in range(steps):
        lo, hi = global_slice(size, rank, world)
        trainer.train_step(dist_data.batch(records[step * size + lo : step * size + hi]))
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
