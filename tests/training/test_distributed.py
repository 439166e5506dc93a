"""Distributed training, checked against one process: W = 2 and 3 ranks on gloo give the parameters
and the AUC of W = 1 on the same global batches (the reference is the ordinary ``Trainer``)."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import dist_data
import numpy as np
import pytest
import torch

from streamrec.quality import auc
from streamrec.redis_server import free_port
from streamrec.training.distributed import global_slice, owner_of
from streamrec.training.trainer import TrainConfig, Trainer

HERE = Path(__file__).parent
STEPS, BATCH = 50, 64


def reference(optimizer: str, admit: int) -> dict[str, np.ndarray]:
    torch.set_num_threads(1)
    model = dist_data.model(optimizer, admit)
    trainer = Trainer(model, TrainConfig(dense_optimizer="adam", dense_lr=0.01))
    records = dist_data.examples(STEPS * BATCH, seed=1)
    for step in range(STEPS):
        trainer.train_step(dist_data.batch(records[step * BATCH : (step + 1) * BATCH]))
    test = dist_data.examples(500, seed=2)
    params = dist_data.parameters(model)
    params["auc"] = np.array(auc(np.array([e.label for e in test]), trainer.predict_logits(dist_data.batch(test))))
    return params


def run_ranks(
    world: int, optimizer: str, admit: int, folder: Path, steps: int = STEPS, save: str = "-", load: str = "-"
) -> list[dict[str, np.ndarray]]:
    folder.mkdir(parents=True, exist_ok=True)
    path = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
           "OMP_NUM_THREADS": "1", "PYTHONPATH": path}  # fmt: skip
    procs = []
    for rank in range(world):
        out = folder / f"rank{rank}.npz"
        args = [sys.executable, str(HERE / "dist_worker.py"), str(out), optimizer, str(admit), str(steps), str(BATCH)]
        args += [save, load]
        procs.append(subprocess.Popen(args, env={**env, "RANK": str(rank)}, stderr=subprocess.PIPE, text=True))
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    return [dict(np.load(folder / f"rank{rank}.npz")) for rank in range(world)]


def merged(shards: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The W shards' rows as one table keyed by id (each id must live on exactly its owner)."""
    world = len(shards)
    out = {k: v for k, v in shards[0].items() if k.startswith("dense/")}
    for slot in dist_data.SLOTS:
        ids = np.concatenate([s[f"{slot}/ids"] for s in shards])
        assert len(np.unique(ids)) == len(ids), f"{slot}: an id is stored on two shards"
        for rank, shard in enumerate(shards):
            assert (owner_of(shard[f"{slot}/ids"], world) == rank).all(), (
                f"{slot}: an id on a rank that is not its owner"
            )
        order = np.argsort(ids)
        out[f"{slot}/ids"] = ids[order]
        for name in {k.split("/", 1)[1] for k in shards[0] if k.startswith(f"{slot}/") and not k.endswith("/ids")}:
            out[f"{slot}/{name}"] = np.concatenate([s[f"{slot}/{name}"] for s in shards])[order]
    return out


@pytest.mark.parametrize(
    "optimizer,admit",
    [
        ("sgd", 1),
        ("adagrad", 2),
        ("adam", 1),
        pytest.param("adagrad", 1, marks=pytest.mark.slow),
        pytest.param("ftrl", 2, marks=pytest.mark.slow),
    ],
)
def test_two_and_three_ranks_give_the_parameters_of_one(optimizer, admit, tmp_path):
    ref = reference(optimizer, admit)
    for world in (2, 3):
        shards = run_ranks(world, optimizer, admit, tmp_path / f"w{world}")
        for rank in range(1, world):  # data parallel: every rank holds the same dense head
            for key in ref:
                if key.startswith("dense/"):
                    np.testing.assert_array_equal(shards[rank][key], shards[0][key])
        got = merged(shards)
        worst = 0.0
        for key, expected in ref.items():
            if key in ("auc",):
                continue
            if key.endswith("/ids"):
                np.testing.assert_array_equal(got[key], expected, err_msg=f"W={world}: {key}")
                continue
            assert got[key].shape == expected.shape, (world, key)
            if expected.size:
                worst = max(worst, float(np.abs(got[key] - expected).max()))
        print(f"\n{optimizer} admit_after={admit} W={world}: max abs difference {worst:.2e}, "
              f"AUC {float(shards[0]['auc']):.6f} vs {float(ref['auc']):.6f}")  # fmt: skip
        assert worst <= 1e-5, f"W={world}: parameters differ from one process by {worst}"
        assert abs(float(shards[0]["auc"]) - float(ref["auc"])) <= 1e-4


def test_owner_of_spreads_ids_evenly_and_is_fixed():
    ids = np.arange(100_000, dtype=np.int64)
    for world in (2, 3, 8):
        counts = np.bincount(owner_of(ids, world), minlength=world)
        assert counts.min() > 0.97 * len(ids) / world  # sequential ids too
    assert owner_of(np.array([np.iinfo(np.int64).min, -1, 0, np.iinfo(np.int64).max]), 5).tolist() == [
        int(x) for x in owner_of(np.array([np.iinfo(np.int64).min, -1, 0, np.iinfo(np.int64).max]), 5)
    ]


def test_global_slices_cover_a_batch_in_order():
    for n in (0, 1, 5, 64, 65):
        for world in (1, 2, 3, 7):
            cuts = [global_slice(n, r, world) for r in range(world)]
            assert cuts[0][0] == 0 and cuts[-1][1] == n
            assert all(a[1] == b[0] for a, b in itertools.pairwise(cuts))


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    for key in a:
        if key.startswith(("dense/", "user/", "item/", "tag/")):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_a_sharded_snapshot_reshards_2_to_3_to_1_keeping_every_row_and_optimizer_state(tmp_path):
    from streamrec.training.shards import load_shard, read_manifest

    two = merged(run_ranks(2, "adagrad", 2, tmp_path / "w2", steps=20, save=str(tmp_path / "snap2")))
    manifest = read_manifest(tmp_path / "snap2")
    assert manifest["world"] == 2 and len(manifest["files"]) == 2 and manifest["extra"] == {"note": "dist_worker"}
    three = merged(run_ranks(3, "adagrad", 2, tmp_path / "w3", steps=0, save=str(tmp_path / "snap3"),
                             load=str(tmp_path / "snap2")))  # fmt: skip
    _same(two, three)  # bit for bit: ids moved between shards, nothing else changed
    trainer, extra = load_shard(tmp_path / "snap3", rank=0, world=1)  # one process takes the whole model
    _same(two, dist_data.parameters(trainer.model))
    assert extra == {"note": "dist_worker"} and trainer.examples_seen == 20 * BATCH


def test_a_corrupt_or_missing_shard_is_reported_not_loaded(tmp_path):
    from streamrec.errors import SnapshotError
    from streamrec.training.shards import load_shard, read_manifest

    run_ranks(2, "sgd", 1, tmp_path / "w2", steps=3, save=str(tmp_path / "snap"))
    manifest = read_manifest(tmp_path / "snap")
    shard = tmp_path / "snap" / manifest["version"] / manifest["files"][1]["name"]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match="SHA-256"):
        load_shard(tmp_path / "snap", rank=0, world=1)
    shard.unlink()
    with pytest.raises(SnapshotError, match="missing"):
        load_shard(tmp_path / "snap", rank=0, world=1)
    (tmp_path / "snap" / "manifest.json").unlink()
    with pytest.raises(SnapshotError, match="no manifest"):
        load_shard(tmp_path / "snap", rank=0, world=1)
