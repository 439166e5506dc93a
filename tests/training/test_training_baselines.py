"""The modulo-hashed DeepFM of ``bench training``: one row per distinct id, ids modulo rows, and it learns."""

from __future__ import annotations

import numpy as np
import torch

from streamrec.training.baselines import modulo_trainer, torchrec_baseline
from streamrec.training.bench import synthetic_examples

torch.set_num_threads(1)


def test_modulo_trainer_looks_up_id_mod_rows_and_a_few_steps_reduce_the_loss():
    data = synthetic_examples(2048, seed=1)
    trainer = modulo_trainer(data, dim=8, batch_size=256, seed=0)
    bags = trainer.model.embeddings.bags
    for slot, ids in data.sparse.items():
        assert bags[slot].weight.shape == (len(np.unique(ids.values.numpy())), 8)
    batch = data[:256]
    emb = trainer.model.embeddings(batch.sparse)
    for slot, ids in batch.sparse.items():
        weight = bags[slot].weight
        assert torch.equal(emb[slot], weight[ids.values % weight.shape[0]])
    before = trainer.evaluate(data)["logloss"]
    for _ in range(3):
        for part in data.batches(256):
            logits = trainer.train_step(part)
            assert logits.shape == (len(part),)
    after = trainer.evaluate(data)["logloss"]
    assert after < 0.9 * before, (before, after)


def test_torchrec_baseline_reports_that_it_did_not_run_and_why():
    out = torchrec_baseline()
    assert out["ran"] is False and "fbgemm" in out["reason"]
