"""The warm-up's promise: after it, the real work compiles nothing new.

Each check runs in a fresh interpreter (this test process has compiled everything long ago, so an
in-process check could not fail): warm up, count the compiled signatures of every Numba kernel in
streamrec, run real work, count again. A kernel the warm-up missed, or one it called with other
argument types (another dtype, layout or a read-only array), shows as a new signature, named.
The real work is built independently of the warm-up: an online trainer over a SQLite log with
every schedule firing and a serving model following its updates; the profiles benchmark's
events and its 100-feature requests on a store with a disk behind it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

COUNT_KERNELS = """
import importlib, pkgutil, streamrec
from numba.core.registry import CPUDispatcher

def kernels():
    found = {}
    for info in pkgutil.walk_packages(streamrec.__path__, "streamrec."):
        if info.name.split(".")[1] not in ("embedding", "profiles"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if isinstance(obj, CPUDispatcher) and obj.__module__ == info.name:
                found[f"{info.name}.{name}"] = len(obj.signatures)
    return found
"""


def _run(body: str, tmp_path: Path) -> dict:
    script = COUNT_KERNELS + textwrap.dedent(body)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}
    tests = Path(__file__).parent
    env["PYTHONPATH"] = os.pathsep.join([str(tests / "training"), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _new_signatures(before: dict, after: dict) -> dict:
    return {name: after[name] - before.get(name, 0) for name in after if after[name] != before.get(name, 0)}


@pytest.mark.timeout(900)
def test_after_the_embedding_warm_up_training_and_serving_compile_nothing(tmp_path):
    out = _run(
        f"""
        import json, numpy as np
        from streamrec.embedding.warmup import warm_embedding
        from streamrec.log import open_log
        from streamrec.training.online import OnlineConfig, OnlineTrainer
        from streamrec.training.serving_model import ServingModel
        from streamrec.batch import ExampleBatch
        from streamrec.training.updates import ModelUpdate
        from test_online_support import make_examples, write_snapshot

        write_snapshot("model.snap")           # the batch stage: compiles what it needs, before counting
        cold = kernels()
        warm_embedding()
        before = kernels()
        with open_log("sqlite://{tmp_path}/log.db") as log:
            log.append("examples", make_examples(600, users=2000, items=3000))
            fast = dict(sparse_sync_interval=1e-6, dense_sync_interval=1e-6, snapshot_interval=1e-6,
                        expiry_interval=1e-6, batch_size=64)
            serving = ServingModel.from_snapshot("model.snap")
            online = OnlineTrainer.from_snapshot("model.snap", log, OnlineConfig(**fast))
            online.run(until_drained=True)
            online.close()
            with log.consumer("model-updates", "replica", ModelUpdate) as updates:
                while batch := updates.poll(100, 0):
                    for envelope in batch:
                        serving.apply(envelope.record)
            examples = make_examples(300, seed=3, users=4000, items=5000)
            from test_online_support import SLOTS
            batch = ExampleBatch.from_examples(examples, list(SLOTS), 2)
            serving.predict(batch, sample_rate=0.5)
            assert online.stats.evicted > 0 and online.stats.sparse_syncs > 2
        print(json.dumps({{"cold": cold, "before": before, "after": kernels()}}))
        """,
        tmp_path,
    )
    assert _new_signatures(out["cold"], out["before"]), "the warm-up compiled nothing: the check would be vacuous"
    assert _new_signatures(out["before"], out["after"]) == {}


@pytest.mark.timeout(900)
def test_after_the_profiles_warm_up_writes_merges_and_queries_compile_nothing(tmp_path):
    out = _run(
        """
        import dataclasses, json, time
        from streamrec.profiles.warmup import warm_profiles
        from streamrec.profiles.bench import QUICK, bench_config, generate_events, request_features
        from streamrec.profiles.store import ProfileStore
        from streamrec.profiles.types import FeatureQuery

        config = bench_config()
        cold = kernels()
        warm_profiles(config)
        before = kernels()
        now = time.time()
        data = generate_events(dataclasses.replace(QUICK, events=5000, users=50), now)
        store = ProfileStore(config, "store", background=False)
        for events in data.batches(1000):
            result = store.write(events)
            assert result.accepted == len(events), result
            store.merge()
        store.compact()
        store.flush()
        store.close()
        store = ProfileStore(config, "store", background=False)  # every profile now loads from disk
        users = [f"user:u{i}" for i in range(10)]
        answer = store.query(FeatureQuery(entities=users, features=request_features(), now=now))
        assert len(answer.results) == len(users)
        store.close()
        print(json.dumps({"cold": cold, "before": before, "after": kernels()}))
        """,
        tmp_path,
    )
    assert _new_signatures(out["cold"], out["before"]), "the warm-up compiled nothing: the check would be vacuous"
    assert _new_signatures(out["before"], out["after"]) == {}
