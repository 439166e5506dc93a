"""The two-tower retriever: in-batch softmax with log-Q against a hand-written loss, learning a
clustered log, the frequency sketch against exact counts, and the ANN lists against brute force."""

import math

import numpy as np
import pytest
import torch

from streamrec.batch import ExampleBatch
from streamrec.embedding import EmbeddingCollection, JaggedIds
from streamrec.errors import InvalidInputError
from streamrec.models import ModelConfig, build_model
from streamrec.serving.ann import nearest_items
from streamrec.training.defaults import default_slot
from streamrec.training.retrieval import ItemFrequency, RetrievalTrainer


def two_tower(temperature=0.1, seed=0):
    torch.manual_seed(seed)
    tables = EmbeddingCollection({"slots": {"user": default_slot(), "item": default_slot()}}, seed=seed)
    cfg = ModelConfig(kind="two_tower", user_slots=["user"], item_slots=["item"], hidden=[16], out_dim=8,
                      temperature=temperature)  # fmt: skip
    return build_model(cfg, tables)


def batch_of(users, items, labels=None):
    n = len(users)
    single = lambda v: JaggedIds(torch.tensor(v, dtype=torch.int64), torch.arange(n))  # noqa: E731
    labels = torch.ones(n) if labels is None else torch.tensor(labels, dtype=torch.float32)
    return ExampleBatch({"user": single(users), "item": single(items)}, torch.zeros((n, 0)), labels)


def test_frequency_sketch_counts_like_exact_counting():
    rng = np.random.default_rng(0)
    ids = rng.integers(-(2**62), 2**62, 500)
    stream = rng.choice(ids, 5000)
    f = ItemFrequency()
    for part in np.array_split(stream, 7):
        f.update(part)
    values, counts = np.unique(stream, return_counts=True)
    assert np.exp(f.log_q(values)) == pytest.approx(counts / len(stream))


def test_loss_is_the_in_batch_softmax_with_log_q_and_repeated_items_masked():
    model = two_tower()
    trainer = RetrievalTrainer(model, item_slot="item")
    batch = batch_of([1, 2, 3, 4, 5], [10, 11, 10, 12, 13])
    trainer.train_step(batch)  # admits every id, counts once
    model.eval()
    with torch.no_grad():
        emb = model.embeddings({"user": batch.sparse["user"], "item": batch.sparse["item"]})
        u = model.head.user_vector(emb, batch.dense).numpy()
        v = model.head.item_vector(emb).numpy()
    items = [10, 11, 10, 12, 13]
    q = {i: 2 * items.count(i) / (2 * len(items)) for i in items}  # counts after the second update
    expected = 0.0
    for i in range(5):
        logits = [float(u[i] @ v[j]) - math.log(q[items[j]]) for j in range(5) if j == i or items[j] != items[i]]
        own = float(u[i] @ v[i]) - math.log(q[items[i]])
        expected += -own + math.log(sum(math.exp(x) for x in logits))
    assert trainer.train_step(batch) == pytest.approx(expected / 5, rel=1e-5)


def test_negatives_are_dropped_and_a_batch_without_two_positives_is_not_a_step():
    trainer = RetrievalTrainer(two_tower(), item_slot="item")
    assert math.isnan(trainer.train_step(batch_of([1, 2], [5, 6], [1, 0])))
    assert trainer.steps == 0 and trainer.frequency.total == 1
    trainer.train_step(batch_of([1, 2, 3], [5, 6, 7], [1, 0, 1]))
    assert trainer.steps == 1 and trainer.examples_seen == 2


def test_the_retriever_learns_which_items_each_group_of_users_takes():
    # users 0-19 take items 0-9, users 20-39 items 10-19: a retriever must rank the own group first
    rng = np.random.default_rng(0)
    users = rng.integers(0, 40, 4000)
    items = np.where(users < 20, rng.integers(0, 10, 4000), rng.integers(10, 20, 4000))
    model = two_tower()
    RetrievalTrainer(model, item_slot="item", dense_lr=0.01).train(batch_of(users, items), epochs=3, batch_size=64)
    model.eval()
    with torch.no_grad():
        u = model.head.user_vector(model.embeddings({"user": torch.arange(40)}), torch.zeros((40, 0)))
        v = model.head.item_vector(model.embeddings({"item": torch.arange(20)}))
    top = torch.topk(u @ v.T, 10, dim=1).indices.numpy()
    own = np.where(np.arange(40)[:, None] < 20, top < 10, top >= 10)
    assert own.mean() > 0.95  # random: 0.5
    norms = torch.linalg.norm(u, dim=1)
    assert norms.numpy() == pytest.approx(np.full(40, 1 / math.sqrt(0.1)), rel=1e-5)


def test_a_ranking_head_is_refused():
    tables = EmbeddingCollection({"slots": {"user": default_slot(), "item": default_slot()}})
    with pytest.raises(InvalidInputError, match="two_tower"):
        RetrievalTrainer(build_model(ModelConfig(kind="deepfm"), tables))


def test_ann_lists_match_brute_force_inner_product():
    rng = np.random.default_rng(5)
    items = rng.normal(size=(300, 8)).astype(np.float32) * rng.uniform(0.2, 2.0, (300, 1)).astype(np.float32)
    users = rng.normal(size=(20, 8)).astype(np.float32)
    found = nearest_items(items, users, 10)
    exact = np.argsort(-(users @ items.T), axis=1, kind="stable")[:, :10]
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact, strict=True)])
    assert overlap >= 0.95
    assert nearest_items(items[:4], users[:1], 10).tolist() == [
        [*np.argsort(-(users[:1] @ items[:4].T)[0], kind="stable").tolist(), *[-1] * 6]
    ]


def test_the_demo_loop_trains_the_retriever_online_and_the_ann_index_follows_its_syncs(tmp_path):
    from streamrec.loop import LoopConfig, run_loop

    small = dict(n_users=150, history_minutes=20, warmup_minutes=8, sim_minutes=4, bucket_s=120, sparse_sync_s=20)
    summary = run_loop(LoopConfig(**small, retrieval=True), tmp_path).summary
    online, retrieval = summary["online"], summary["retrieval"]
    # both trainers read the whole examples topic after the warm-up: the same examples
    assert retrieval["examples_trained"] == online["examples_trained"] > 0
    # every sync published reached the replica, and the ann index was rebuilt from the new vectors
    assert retrieval["updates_applied"] == retrieval["sparse_syncs"] + retrieval["dense_syncs"] > 0
    assert retrieval["serving_version"] == retrieval["updates_applied"]
    assert 1 <= retrieval["ann_rebuilds"] <= retrieval["updates_applied"] + 1
    off = LoopConfig(**{**small, "sim_minutes": 1, "warmup_minutes": 4}, retrieval=False)
    assert run_loop(off, tmp_path / "off").summary["retrieval"] is None


def test_train_online_retrieval_trains_positives_from_the_log_and_publishes_to_its_topic(tmp_path):
    # The cluster's retriever process: `train online --retrieval --updates-topic retrieval-updates`.
    from streamrec.log import open_log
    from streamrec.records import Example
    from streamrec.training.online_cli import run_online
    from streamrec.training.snapshot import load_trainer, save_trainer
    from streamrec.training.trainer import TrainConfig, Trainer
    from streamrec.training.updates import ModelUpdate

    snapshot = tmp_path / "retriever.npz"
    save_trainer(snapshot, Trainer(two_tower(), TrainConfig()))
    url = f"sqlite://{tmp_path}/log.db"
    rng = np.random.default_rng(0)
    users = rng.integers(0, 20, 300)
    examples = [
        Example(sparse={"user": [int(u)], "item": [int(u % 5 + 10 * (i % 2))]}, label=float(i % 3 != 0), time=1e9 + i)
        for i, u in enumerate(users)
    ]
    with open_log(url) as log:
        log.append("examples", examples)
    summary = run_online(url, snapshot, "10s", "5m", "10m", batch_size=50, until_drained=True, quiet=True,
                         retrieval=True, updates_topic="retrieval-updates")  # fmt: skip
    assert summary["examples"] == 300  # polled and trained (the step keeps the positives)
    restored, _ = load_trainer(snapshot)
    positives = sum(e.label > 0 for e in examples)
    assert restored.examples_seen == positives  # the retriever counts the positives it learned
    with open_log(url) as log:
        assert log.end_offset("retrieval-updates") >= 1 and log.end_offset("model-updates") == 0
        consumer = log.consumer("retrieval-updates", "probe", ModelUpdate)
        kinds = [e.record.kind for e in consumer.poll(100, 0)]
        consumer.close()
    assert kinds[0] == "full" and "sparse" in kinds
