"""The GPU placement (``device="cuda"``) against independent references: a dict for the index,
the CPU table for admission, expiry, deltas and the four optimizers (within 1e-6), snapshots in
both directions. Without a GPU these run the same kernels under Numba's CUDA simulator (see
conftest.py), at small sizes; ``scripts/gpu_check.sh`` runs them on a real GPU.
"""

from __future__ import annotations

import collections
import contextlib
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from streamrec.embedding import EmbeddingCollection, EmbeddingModule, JaggedIds, SlotConfig
from streamrec.embedding.config import FTRL, SGD, Adagrad, Adam, Normal, Uniform, Zeros, embedding_config
from streamrec.embedding.cuckoo import CuckooIndex
from streamrec.embedding.cuda_table import (
    CudaCuckooIndex,
    CudaEmbeddingTable,
    DeviceUnavailableError,
    _Launcher,
    check_device,
    torch_device,
)
from streamrec.embedding.snapshot import load_collection, save_collection
from streamrec.embedding.table import EmbeddingTable
from streamrec.errors import ConfigError, InvalidInputError, NonFiniteGradientError

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # uint64 hashing, simulated

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
OPTIMIZERS = [SGD(lr=0.3), Adagrad(lr=0.2, lr_decay=0.01), Adam(lr=0.05), FTRL(alpha=0.2, l1=0.01, l2=0.1)]


def crafted_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """Edge values, consecutive ids, multiples of 2**40 and random int64s, distinct, shuffled."""
    edge = [INT64_MIN, INT64_MAX, 0, -1, 1, INT64_MIN + 1, INT64_MAX - 1]
    parts = [edge, np.arange(100, 100 + n // 4), np.arange(1, n // 4) * (1 << 40),
             rng.integers(INT64_MIN, INT64_MAX, n, dtype=np.int64)]  # fmt: skip
    ids = np.unique(np.concatenate([np.asarray(p, dtype=np.int64) for p in parts]))
    return rng.permutation(ids)[:n]


def gpu_index(capacity: int) -> CudaCuckooIndex:
    return CudaCuckooIndex.from_cpu(CuckooIndex(capacity=capacity), _Launcher(torch_device("cuda")))


def test_gpu_index_matches_a_dict_over_inserts_lookups_and_deletes_with_growth():
    rng = np.random.default_rng(1)
    ids = crafted_ids(rng, 1500)
    index = gpu_index(8)  # grows many times
    dev = index.device
    reference: dict[int, int] = {}
    next_row = 0
    for step in range(8):
        fresh = [i for i in ids[step * 180 : (step + 1) * 180].tolist() if i not in reference]
        rows = np.arange(next_row, next_row + len(fresh), dtype=np.int32)
        next_row += len(fresh)
        index.insert(torch.tensor(fresh, dtype=torch.int64, device=dev), torch.from_numpy(rows).to(dev))
        reference.update(zip(fresh, rows.tolist(), strict=True))
        gone = rng.choice(np.array(list(reference)), size=40, replace=False)
        gone = np.concatenate([gone, gone[:5], [12345678901]])  # repeats and an absent id are ignored
        freed, freed_ids = index.delete(torch.from_numpy(gone).to(dev))
        assert sorted(freed.cpu().tolist()) == sorted(reference[i] for i in set(gone.tolist()) if i in reference)
        assert sorted(freed_ids.cpu().tolist()) == sorted(i for i in set(gone.tolist()) if i in reference)
        for i in gone.tolist():
            reference.pop(i, None)
        probe = np.concatenate([ids[: (step + 2) * 180], [2**62 + 7]])
        got = index.lookup(torch.from_numpy(probe).to(dev)).cpu().numpy()
        assert got.tolist() == [reference.get(i, -1) for i in probe.tolist()]
        assert index.size == len(reference)
    assert index.growth_loads, "the index should have grown on the device"
    # The same bytes are a CPU index: it finds every id where the GPU put it.
    cpu = index.to_cpu()
    probe = ids[:1440]
    assert cpu.lookup(probe).tolist() == [reference.get(i, -1) for i in probe.tolist()]


def test_full_buckets_spill_to_the_cuckoo_walk_and_nothing_is_lost():
    """At ~0.97 load many ids find both buckets full; the walk (and growth) still places all."""
    rng = np.random.default_rng(2)
    ids = crafted_ids(rng, 900)
    cpu = CuckooIndex(capacity=900)  # 200 buckets, 1000 slots: 900 ids -> load 0.9
    index = CudaCuckooIndex.from_cpu(cpu, _Launcher(torch_device("cuda")))
    dev = index.device
    for part in np.array_split(np.arange(900), 3):
        index.insert(torch.from_numpy(ids[part]).to(dev), torch.from_numpy(part.astype(np.int32)).to(dev))
    assert index.n_buckets == cpu.n_buckets  # placed at load 0.9 without growing
    assert index.lookup(torch.from_numpy(ids).to(dev)).cpu().tolist() == list(range(900))
    more = crafted_ids(np.random.default_rng(3), 300)
    more = more[~np.isin(more, ids)]
    rows = np.arange(900, 900 + len(more), dtype=np.int32)
    index.insert(torch.from_numpy(more).to(dev), torch.from_numpy(rows).to(dev))
    everything = np.concatenate([ids, more])
    assert index.lookup(torch.from_numpy(everything).to(dev)).cpu().tolist() == list(range(900 + len(more)))
    assert index.n_buckets > cpu.n_buckets


def test_a_cpu_index_moves_to_the_gpu_without_rehashing():
    rng = np.random.default_rng(4)
    ids = crafted_ids(rng, 700)
    cpu = CuckooIndex(capacity=16)
    cpu.insert(ids, np.arange(700, dtype=np.int32))
    index = CudaCuckooIndex.from_cpu(cpu, _Launcher(torch_device("cuda")))
    assert (index.seed1, index.seed2, index.n_buckets) == (cpu.seed1, cpu.seed2, cpu.n_buckets)
    assert np.array_equal(index.buckets.cpu().numpy(), cpu.keys)
    probe = np.concatenate([ids, [5, 6]])
    assert index.lookup(torch.from_numpy(probe).to(index.device)).cpu().tolist() == cpu.lookup(probe).tolist()


def ids_per_id_vectors(table, ids: np.ndarray) -> np.ndarray:
    return table.lookup(ids)


@pytest.mark.parametrize("optimizer", OPTIMIZERS, ids=lambda o: type(o).__name__)
def test_gpu_table_follows_the_cpu_table_admission_expiry_deltas_and_optimizer(optimizer):
    cfg = SlotConfig(dim=5, admit_after=3, ttl=50, optimizer=optimizer, initializer=Normal(std=0.1), capacity=4)
    cpu, gpu = EmbeddingTable("s", cfg, seed=9), CudaEmbeddingTable("s", cfg, seed=9)
    rng = np.random.default_rng(5)
    universe = crafted_ids(rng, 120)
    for step in range(6):
        now = 100 + 20 * step
        ids = universe[np.minimum(rng.zipf(1.3, 300) - 1, len(universe) - 1)]
        rows_cpu, rows_gpu = cpu.admit(ids, now=now), gpu.admit(ids, now=now)
        assert np.array_equal(rows_cpu >= 0, rows_gpu >= 0), "the same occurrences must be admitted"
        held = np.unique(ids[rows_cpu >= 0])
        grads = rng.normal(size=(len(held), 5)).astype(np.float32)
        cpu.apply_gradients(torch.from_numpy(cpu.rows_of(held).astype(np.int64)), torch.from_numpy(grads))
        gpu.apply_gradients(torch.from_numpy(gpu.rows_of(held).astype(np.int64)), torch.from_numpy(grads))
        np.testing.assert_allclose(gpu.lookup(universe), cpu.lookup(universe), atol=1e-6, rtol=0)
        if step % 2:
            assert gpu.evict_expired(now) == cpu.evict_expired(now)
        d_cpu, d_gpu = cpu.export_delta(), gpu.export_delta()
        order_cpu, order_gpu = np.argsort(d_cpu.ids), np.argsort(d_gpu.ids)
        assert np.array_equal(d_cpu.ids[order_cpu], d_gpu.ids[order_gpu])
        np.testing.assert_allclose(d_gpu.vectors[order_gpu], d_cpu.vectors[order_cpu], atol=1e-6, rtol=0)
        assert sorted(d_cpu.evicted.tolist()) == sorted(d_gpu.evicted.tolist())
        assert len(cpu) == len(gpu)
    assert cpu.stats.evicted == gpu.stats.evicted > 0
    assert (cpu.stats.admitted, cpu.stats.unadmitted_lookups) == (gpu.stats.admitted, gpu.stats.unadmitted_lookups)
    full_cpu, full_gpu = cpu.export_full(), gpu.export_full()
    assert sorted(full_cpu.ids.tolist()) == sorted(full_gpu.ids.tolist())


@pytest.mark.parametrize("initializer", [Zeros(), Uniform(low=-0.5, high=0.25), Normal(mean=0.1, std=0.3)])
def test_new_rows_start_from_the_cpu_initial_vectors(initializer):
    cfg = SlotConfig(dim=7, initializer=initializer)
    cpu, gpu = EmbeddingTable("s", cfg, seed=3), CudaEmbeddingTable("s", cfg, seed=3)
    ids = crafted_ids(np.random.default_rng(6), 200)
    cpu.admit(ids, now=1)
    gpu.admit(ids, now=1)
    np.testing.assert_allclose(gpu.lookup(ids), cpu.lookup(ids), atol=1e-6, rtol=0)


def test_repeated_rows_are_summed_before_the_fused_update():
    cfg = SlotConfig(dim=3, optimizer=Adagrad(lr=0.5), initializer=Zeros())
    gpu, ref = CudaEmbeddingTable("s", cfg), EmbeddingTable("s", cfg)
    ids = np.array([11, 22, 33], dtype=np.int64)
    gpu.admit(ids, now=1)
    ref.admit(ids, now=1)
    rows = torch.tensor([2, 0, 2, 2, 1], dtype=torch.int64)
    grads = torch.arange(15, dtype=torch.float32).reshape(5, 3) / 7
    gpu.apply_gradients(gpu.device_ids(rows), grads.to(gpu.device), distinct=False)
    summed = torch.zeros(3, 3).index_add_(0, rows, grads)
    ref.apply_gradients(torch.arange(3), summed)
    np.testing.assert_allclose(gpu.lookup(ids), ref.lookup(ids), atol=1e-6, rtol=0)


def test_a_bad_gradient_changes_nothing():
    gpu = CudaEmbeddingTable("s", SlotConfig(dim=2, optimizer=SGD(lr=1.0)))
    gpu.admit(np.array([1, 2]), now=1)
    before = gpu.lookup(np.array([1, 2]))
    with pytest.raises(NonFiniteGradientError, match=r"s\.grads"):
        gpu.apply_gradients(torch.tensor([0, 1]), torch.tensor([[1.0, 2.0], [float("nan"), 0.0]]))
    with pytest.raises(InvalidInputError, match=r"s\.rows"):
        gpu.apply_gradients(torch.tensor([0, 7]), torch.ones(2, 2))
    with pytest.raises(InvalidInputError, match=r"s\.grads"):
        gpu.apply_gradients(torch.tensor([0, 1]), torch.ones(2, 3))
    assert np.array_equal(gpu.lookup(np.array([1, 2])), before)
    assert gpu.step == 0
    with pytest.raises(InvalidInputError, match="ids"):
        gpu.admit(np.array([1.5, 2.0]), now=1)
    with pytest.raises(InvalidInputError, match="now"):
        gpu.admit(np.array([1]), now=-3)


def test_delete_frees_rows_for_reuse_and_reports_the_ids():
    gpu = CudaEmbeddingTable("s", SlotConfig(dim=2, initializer=Zeros()))
    gpu.admit(np.array([5, 6, 7]), now=1)
    gpu.export_delta()
    assert gpu.delete(np.array([6, 6, 99])) == 1
    assert gpu.rows_of(np.array([5, 6, 7])).tolist() == [0, -1, 2]
    assert gpu.admit(np.array([8]), now=2).tolist() == [1]  # the freed row is taken first
    delta = gpu.export_delta()
    assert delta.evicted.tolist() == [6] and delta.ids.tolist() == [8]


def test_module_training_on_gpu_tables_matches_cpu_tables():
    cfg = {
        "user": SlotConfig(dim=4, optimizer=Adam(lr=0.05)),
        "tags": SlotConfig(dim=3, admit_after=2, pooling="mean", optimizer=FTRL(alpha=0.3)),
    }
    cpu, gpu = EmbeddingCollection(cfg, seed=5), EmbeddingCollection(cfg, seed=5, device="cuda")
    assert isinstance(gpu["user"], CudaEmbeddingTable)
    modules = EmbeddingModule(cpu), EmbeddingModule(gpu)
    head = torch.linspace(-1, 1, 40)
    rng = np.random.default_rng(7)
    for step in range(4):
        user = torch.from_numpy(rng.integers(0, 25, 40))
        tags = JaggedIds.from_lists([rng.integers(0, 15, k).tolist() for k in rng.integers(0, 4, 40)])
        losses = []
        for module in modules:
            out = module({"user": user, "tags": tags}, now=100 + step)
            loss = (out["user"].sum(1).cpu() * head).sum() + (out["tags"].cpu() ** 2).sum()
            loss.backward()
            module.apply_gradients()
            losses.append(loss.item())
        assert losses[1] == pytest.approx(losses[0], abs=1e-5)
    probe = np.arange(25)
    for slot in cfg:  # gradients summed by autograd on each device (a GPU adds in another order): 1e-5
        np.testing.assert_allclose(gpu[slot].lookup(probe), cpu[slot].lookup(probe), atol=1e-5, rtol=0)
    modules[1].eval()
    with torch.no_grad():
        served = modules[1]({"user": torch.arange(25)})["user"].cpu().numpy()
    np.testing.assert_allclose(served, gpu["user"].lookup(probe), atol=0, rtol=0)


def test_snapshots_keep_their_format_across_devices(tmp_path):
    cfg = {"item": SlotConfig(dim=3, admit_after=2, ttl=10, optimizer=Adagrad())}
    gpu = EmbeddingCollection(cfg, seed=2, device="cuda")
    ids = crafted_ids(np.random.default_rng(8), 150)
    for now in (1, 2, 30):
        gpu["item"].admit(np.concatenate([ids, ids[:60]]), now=now)
        gpu.evict_expired(now)
    save_collection(gpu, tmp_path / "gpu.snap")
    on_cpu = load_collection(tmp_path / "gpu.snap", device="cpu")
    assert isinstance(on_cpu["item"], EmbeddingTable)
    np.testing.assert_array_equal(on_cpu["item"].lookup(ids), gpu["item"].lookup(ids))
    assert on_cpu["item"].rows_of(ids).tolist() == gpu["item"].rows_of(ids).tolist()
    save_collection(on_cpu, tmp_path / "cpu.snap")
    back = load_collection(tmp_path / "cpu.snap", device="cuda")
    arrays_a = gpu["item"].state_arrays()
    arrays_b = back["item"].state_arrays()
    assert arrays_a.keys() == arrays_b.keys()
    for key in arrays_a:
        np.testing.assert_array_equal(arrays_a[key], arrays_b[key], err_msg=key)
    # and both continue the same way
    more = crafted_ids(np.random.default_rng(9), 40)
    assert back["item"].admit(more, now=31).tolist() == on_cpu["item"].admit(more, now=31).tolist()


def test_device_names_are_checked():
    assert check_device("cuda:1") == "cuda:1"
    with pytest.raises(InvalidInputError, match="device"):
        check_device("gpu")
    with pytest.raises(ConfigError, match="device"):
        embedding_config({"slots": {"a": {"dim": 2, "device": "tpu"}}})
    with pytest.raises(ConfigError, match="device"):
        embedding_config({"device": "cuda:x", "slots": {"a": {"dim": 2}}})
    config = embedding_config({"device": "cuda", "slots": {"a": {"dim": 2}, "b": {"dim": 2, "device": "cpu"}}})
    tables = EmbeddingCollection(config)
    assert isinstance(tables["a"], CudaEmbeddingTable) and isinstance(tables["b"], EmbeddingTable)
    tables.to("cpu")
    assert isinstance(tables["a"], EmbeddingTable)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answer where no GPU is present")
def test_without_a_gpu_device_cuda_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("NUMBA_ENABLE_CUDASIM", "0")
    with pytest.raises(DeviceUnavailableError, match="no CUDA GPU"):
        CudaEmbeddingTable("s", SlotConfig(dim=2))
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0", "OMP_NUM_THREADS": "1"}
    commands = (
        ["bench", "embedding", "--device", "cuda", "--json"],
        ["bench", "training", "--device", "cuda"],
        ["train", "batch", "--data", "ml-100k", "--device", "cuda"],
        ["train", "online", "--log", "sqlite:///unused.db", "--snapshot", "unused.npz", "--device", "cuda"],
    )
    for command in commands:
        done = subprocess.run([sys.executable, "-m", "streamrec", *command], env=env, capture_output=True, text=True,
                              timeout=120)  # fmt: skip
        assert done.returncode != 0
        lines = (done.stdout + done.stderr).strip().splitlines()
        assert len(lines) == 1 and "no CUDA GPU" in lines[0], lines


def test_a_trainer_on_gpu_tables_matches_the_cpu_trainer_and_its_snapshot_moves_back(tmp_path):
    """``train batch|online --device cuda`` in small: DeepFM over GPU tables (head and batches on
    the trainer's device) against the same model on CPU tables; the snapshot restores on the CPU."""
    from streamrec.config import convert
    from streamrec.models import ModelConfig, build_model
    from streamrec.training.bench import synthetic_examples
    from streamrec.training.defaults import default_slot
    from streamrec.training.snapshot import load_trainer, save_trainer
    from streamrec.training.trainer import Trainer

    data = synthetic_examples(256, seed=3)
    embedding = {"slots": {slot: default_slot() for slot in data.sparse}}
    model_config = convert({"kind": "deepfm", "n_dense": 0}, ModelConfig, "model")
    trainers = []
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        tables = EmbeddingCollection(embedding, seed=1, device=device)
        trainers.append(Trainer(build_model(model_config, tables), device=device))
    for trainer in trainers:
        trainer.train(data[:192], batch_size=64)
    cpu_logits, gpu_logits = (t.predict_logits(data[192:]) for t in trainers)
    np.testing.assert_allclose(gpu_logits, cpu_logits, atol=1e-4, rtol=0)
    save_trainer(tmp_path / "gpu.npz", trainers[1])
    restored, _ = load_trainer(tmp_path / "gpu.npz", device="cpu")
    assert isinstance(restored.model.embeddings.tables["c0"], EmbeddingTable)
    np.testing.assert_allclose(restored.predict_logits(data[192:]), gpu_logits, atol=1e-6, rtol=0)


# -- the grouped training path (EmbeddingModule over GPU tables with one id per example) -------------
GROUPED_SLOTS = {
    "a": SlotConfig(dim=4, admit_after=3, optimizer=Adagrad(lr=0.3), initializer=Normal(std=0.1), capacity=4),
    "b": SlotConfig(dim=4, admit_after=2, optimizer=Adam(lr=0.05), initializer=Uniform(), capacity=4),
    "c": SlotConfig(dim=4, optimizer=FTRL(alpha=0.2, l1=0.01), capacity=4),
    "d": SlotConfig(dim=3, admit_after=2, optimizer=SGD(lr=0.5), initializer=Normal(std=0.2), capacity=4),
    "tags": SlotConfig(dim=3, admit_after=2, pooling="sum", optimizer=Adagrad(lr=0.1), capacity=4),
}


def _grouped_batch(rng: np.random.Generator, universe: np.ndarray, batch: int) -> dict:
    features = {
        slot: torch.from_numpy(universe[np.minimum(rng.zipf(1.3, batch) - 1, len(universe) - 1)])
        for slot in ("a", "b", "c", "d")
    }
    features["tags"] = JaggedIds.from_lists([rng.integers(0, 30, k).tolist() for k in rng.integers(0, 4, batch)])
    return features


def _loss(out: dict, weights: dict) -> torch.Tensor:
    return sum((out[slot].cpu() * weights[slot]).sum() + 0.1 * (out[slot].cpu() ** 2).sum() for slot in sorted(out))


def test_grouped_training_matches_the_per_slot_path_and_cpu_tables():
    """Several steps with admission thresholds > 1; rows and the index grow in the middle (capacity
    4); dims 4 and 3 make two groups, and a jagged slot takes the per-slot path beside them; in one
    step a slot is left out of the loss (no update for it, Adam's included)."""
    cpu = EmbeddingCollection(GROUPED_SLOTS, seed=4)
    per_slot = EmbeddingCollection(GROUPED_SLOTS, seed=4, device="cuda")
    grouped = EmbeddingCollection(GROUPED_SLOTS, seed=4, device="cuda")
    modules = [EmbeddingModule(cpu), EmbeddingModule(per_slot, grouped=False), EmbeddingModule(grouped)]
    universe = crafted_ids(np.random.default_rng(10), 150)
    rng = np.random.default_rng(11)
    weights = {s: torch.linspace(-1, 1, c.dim) for s, c in GROUPED_SLOTS.items()}
    buckets_before = grouped["a"].index.n_buckets
    for step in range(5):
        features = _grouped_batch(rng, universe, 60)
        for module in modules:
            out = module(features, now=100 + step)
            _loss({k: v for k, v in out.items() if step != 2 or k != "b"}, weights).backward()
            module.apply_gradients()
        assert isinstance(modules[2]._touched, list) and not modules[2]._touched
    probe = np.concatenate([universe, np.arange(30)])
    for slot in GROUPED_SLOTS:
        ref = cpu[slot]
        delta_ids = sorted(ref.export_delta().ids.tolist())
        for tables in (per_slot, grouped):
            table = tables[slot]
            assert np.array_equal(table.rows_of(probe) >= 0, ref.rows_of(probe) >= 0), slot
            np.testing.assert_allclose(
                table.lookup(probe), ref.lookup(probe), atol=1e-6, rtol=0, err_msg=f"{slot} {tables is grouped}"
            )
            assert len(table) == len(ref)
            assert (table.stats.admitted, table.stats.unadmitted_lookups) == (
                ref.stats.admitted,
                ref.stats.unadmitted_lookups,
            ), slot
            assert table.step == ref.step == (4 if slot == "b" else 5)
            assert sorted(table.export_delta().ids.tolist()) == delta_ids
    assert grouped["a"].row_capacity > 4 and grouped["a"].index.n_buckets > buckets_before
    assert cpu["a"].stats.unadmitted_lookups > 0  # admission after 3 occurrences held some ids back


def test_grouped_walk_failures_are_placed_and_keep_their_rows():
    """Walks forced to fail (no kicks allowed) during the lookups of a nearly full index: the failed
    ids keep their rows through the step (their gradients land), later finds see them, and the
    settle in apply_gradients grows the index with them (with the real walk)."""
    from streamrec.embedding import cuda_kernels

    cfg = {"a": SlotConfig(dim=2, optimizer=SGD(lr=1.0), initializer=Zeros(), capacity=500)}
    cpu, gpu = EmbeddingCollection(cfg, seed=1), EmbeddingCollection(cfg, seed=1, device="cuda")
    modules = EmbeddingModule(cpu), EmbeddingModule(gpu)
    ids = torch.from_numpy(crafted_ids(np.random.default_rng(12), 540))
    table = gpu["a"]
    kicks, failed = cuda_kernels.MAX_KICKS, 0
    buckets = table.index.n_buckets
    for step in range(13):
        batch = ids[40 * step : 40 * (step + 1)]
        batch = torch.cat([batch, batch[:7], ids[:5]])  # repeats, and ids held already
        for module in modules:
            if module is modules[1] and step >= 11:  # the index is ~0.8-0.9 full: spills are common
                cuda_kernels.MAX_KICKS = 0  # passed at each launch: a walk that fails at once
            try:
                out = module({"a": batch}, now=1 + step)
            finally:
                cuda_kernels.MAX_KICKS = kicks
            if module is modules[1]:
                failed += int(table._ctr[cuda_kernels.C_FAIL])
                rows, inverse = table.admit_distinct(batch[:40], now=1 + step)  # finds the failed list too
                assert torch.equal(table.weight[rows[inverse].long()], out["a"][:40].detach())
            (out["a"] * torch.tensor([1.0, -2.0])).sum().backward()
            module.apply_gradients()
    assert failed > 0 and table.index.n_buckets > buckets
    probe = ids.numpy()
    np.testing.assert_allclose(table.lookup(probe), cpu["a"].lookup(probe), atol=1e-6, rtol=0)
    assert sorted(table.rows_of(probe[:520]).tolist()) == list(range(520))
    assert len(table) == len(cpu["a"]) == 520


def test_a_nan_gradient_in_one_grouped_slot_changes_no_table():
    cfg = {k: v for k, v in GROUPED_SLOTS.items() if k != "tags"}
    cpu, gpu = EmbeddingCollection(cfg, seed=6), EmbeddingCollection(cfg, seed=6, device="cuda")
    modules = EmbeddingModule(cpu), EmbeddingModule(gpu)
    universe = crafted_ids(np.random.default_rng(13), 80)
    rng = np.random.default_rng(14)
    weights = {s: torch.linspace(-1, 1, c.dim) for s, c in cfg.items()}
    first = {k: v for k, v in _grouped_batch(rng, universe, 50).items() if k != "tags"}
    for module in modules:
        _loss(module(first, now=5), weights).backward()
        module.apply_gradients()
    second = {k: v for k, v in _grouped_batch(rng, universe, 50).items() if k != "tags"}
    steps = {slot: gpu[slot].step for slot in cfg}
    before = {slot: gpu[slot].lookup(universe) for slot in cfg}
    for module in modules:
        out = module(second, now=6)
        poisoned = out["c"] * torch.where(torch.arange(50) == 7, float("nan"), 1.0).unsqueeze(1).to(out["c"].device)
        _loss({**out, "c": poisoned}, weights).backward()
        with pytest.raises(NonFiniteGradientError, match=r"^c\.grads"):
            module.apply_gradients()
    for slot in cfg:
        assert gpu[slot].step == steps[slot]
        held = gpu[slot].rows_of(universe) >= 0
        # rows held before keep their vectors; ids admitted by the failed step start from init
        np.testing.assert_array_equal(gpu[slot].lookup(universe)[held & (before[slot] != 0).any(1)],
                                      before[slot][held & (before[slot] != 0).any(1)])  # fmt: skip
        np.testing.assert_allclose(gpu[slot].lookup(universe), cpu[slot].lookup(universe), atol=1e-6, rtol=0)
    # and training goes on the same way on both
    for module in modules:
        _loss(module(second, now=7), weights).backward()
        module.apply_gradients()
    for slot in cfg:
        np.testing.assert_allclose(gpu[slot].lookup(universe), cpu[slot].lookup(universe), atol=1e-6, rtol=0)


class _SyncingOps(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the aten ops that read device memory back to the host on a GPU (independent of the
    table's own tally), and every op that runs a kernel (views and allocations excluded)."""

    SYNCING = ("_local_scalar_dense", "nonzero", "_unique", "unique_dim", "unique_consecutive", "masked_select",
               "is_nonzero", "equal", "item")  # fmt: skip

    def __init__(self) -> None:
        super().__init__()
        self.syncs: list[str] = []
        self.kernels = 0
        self.names: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if any(name.startswith(s) for s in self.SYNCING) or (
            name.startswith("index")
            and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool
                for a in args
                if isinstance(a, list | tuple)
                for i in a
            )
        ):
            self.syncs.append(name)
        if not func.is_view and not name.startswith(("empty", "detach", "lift")):
            self.kernels += 1
            self.names[name] += 1
        return func(*args, **(kwargs or {}))


def test_a_grouped_step_of_26_slots_makes_one_sync_and_a_few_launches_per_slot():
    from streamrec.embedding import cuda_table

    names = [f"c{i}" for i in range(26)]
    cfg = {n: SlotConfig(dim=4, admit_after=2, optimizer=Adagrad(lr=0.1), capacity=64) for n in names}
    tables = EmbeddingCollection(cfg, seed=3, device="cuda")
    module = EmbeddingModule(tables)
    rng = np.random.default_rng(15)
    head = torch.linspace(-1, 1, 4)

    def step(now: int, ops: _SyncingOps | None = None) -> None:
        features = {n: torch.from_numpy(rng.integers(0, 40, 32)) for n in names}
        with ops or contextlib.nullcontext():  # the module's work: lookup, then the update
            out = module(features, now=now)
        loss = sum((out[n] * head).sum() for n in names)
        with ops or contextlib.nullcontext():
            loss.backward()  # F.embedding's backward: the module's too
            module.apply_gradients()

    for now in range(8):  # warm-up: rows and index grow ahead of the batch size, then stop
        step(now)
    counts = dict(cuda_table.COUNTS)
    ops = _SyncingOps()
    for now in range(8, 11):
        step(now, ops)
    syncs = (cuda_table.COUNTS["syncs"] - counts["syncs"]) / 3
    launches = (cuda_table.COUNTS["launches"] - counts["launches"]) / 3
    assert syncs <= 2 and syncs == 1
    assert ops.syncs == [], ops.syncs  # no torch op that would read the device back
    assert launches == 4 * 26  # numba kernels: find-or-insert, init + walk, gather, optimizer
    torch_ops = ops.kernels / 3 - 26 * 2  # the loss's backward: a mul and a sum per slot
    assert launches + torch_ops <= 8 * 26 + 40, (launches, torch_ops, ops.names)
    assert torch_ops <= 30, ops.names  # the dedup, the leaf's embedding, the NaN check: all slots at once


@pytest.mark.parametrize("dim", [1, 3, 16, 17, 40])
def test_lookup_gather_is_bit_identical_to_rows_then_index(dim):
    """The warp-wide probe + cooperative copy (rows handed over by shuffles on a GPU, through shared
    memory in the simulator), for dims that leave lanes idle, fill a warp and need several passes;
    a batch that ends mid-warp, absent ids getting the default vector."""
    rng = np.random.default_rng(dim)
    ids = crafted_ids(rng, 300)
    cpu = CuckooIndex(capacity=300)
    cpu.insert(ids, rng.permutation(300).astype(np.int32))
    index = CudaCuckooIndex.from_cpu(cpu, _Launcher(torch_device("cuda")))
    dev = index.device
    weights = torch.from_numpy(rng.normal(size=(300, dim)).astype(np.float32)).to(dev)
    default = torch.from_numpy(rng.normal(size=dim).astype(np.float32)).to(dev)
    probe = np.concatenate([ids[::2], np.arange(5, 40), ids[:3]])  # 188 ids: not a multiple of 32
    rows = torch.from_numpy(cpu.lookup(probe)).to(dev)
    want = torch.where((rows < 0).unsqueeze(1), default, weights[rows.clamp(min=0).long()])
    got = index.gather(torch.from_numpy(probe).to(dev), weights, default)
    assert torch.equal(got, want)
