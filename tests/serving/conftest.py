"""A small world for the serving tests: real embedded profiles, a real SQLite log, a real model.

The model is trained here, once per session, on examples rebuilt with the same feature plan the
recommender serves with (``FeatureSet.examples``), then loaded as a :class:`ServingModel` from a
trainer snapshot: the path a deployment takes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from streamrec.batch import ExampleBatch
from streamrec.embedding import EmbeddingCollection, SlotConfig
from streamrec.log import open_log
from streamrec.models.ranking import ModelConfig, build_model
from streamrec.profiles import ProfileClient
from streamrec.records import ActionEvent
from streamrec.serving import Recommender, RecommenderConfig, default_plan, serving_profiles_config
from streamrec.serving.retrieval import RetrievalConfig
from streamrec.training.serving_model import ServingModel
from streamrec.training.snapshot import save_trainer
from streamrec.training.trainer import TrainConfig, Trainer

torch.set_num_threads(1)  # the 2-core box is shared; spinning OpenMP workers only slow it down
NOW = 1_700_000_000.0
N_USERS, N_ITEMS, N_CATEGORIES = 24, 80, 6


def category_of(item: str) -> str:
    return f"c{int(item[1:]) % N_CATEGORIES}"


def make_events(seed: int = 0, n: int = 1500) -> list[ActionEvent]:
    """Shows and clicks over the last 6 hours; each user clicks mostly two favourite categories."""
    rng = random.Random(seed)
    likes = {f"u{u}": {f"c{u % N_CATEGORIES}", f"c{(u + 1) % N_CATEGORIES}"} for u in range(N_USERS)}
    events = []
    for _ in range(n):
        user = f"u{rng.randrange(N_USERS)}"
        item = f"i{min(int(rng.expovariate(1 / 20)), N_ITEMS - 1)}"
        t = NOW - rng.uniform(60, 6 * 3600)
        attrs = {"category": category_of(item)}
        events.append(ActionEvent(user=user, item=item, action="show", time=t, attributes=attrs))
        p = 0.6 if category_of(item) in likes[user] else 0.05
        if rng.random() < p:
            events.append(
                ActionEvent(
                    user=user, item=item, action="click", time=t + 1, attributes=attrs, counters={"dwell_ms": 900.0}
                )
            )
    return sorted(events, key=lambda e: e.time)


@dataclass
class World:
    client: ProfileClient
    log: object
    events: list[ActionEvent]
    model: ServingModel
    plan: object
    folder: str

    def recommender(self, **config) -> Recommender:
        cfg = RecommenderConfig(
            features=self.plan,
            retrieval=config.pop("retrieval", RetrievalConfig(quotas={"co_engaged": 30, "popular": 30, "fresh": 20})),
            **config,
        )
        return Recommender(self.client, self.log, self.model, cfg, clock=lambda: NOW)


def train_model(client: ProfileClient, plan, folder: str, kind: str = "deepfm") -> ServingModel:
    """Train a tiny DeepFM on examples rebuilt with ``plan``: label = the user clicked the item."""
    events = make_events(seed=1, n=600)  # labels from a second draw of the same world
    clicked = {(e.user, e.item) for e in events if e.action == "click"}
    shown: dict[str, list[str]] = {}
    for e in events:
        if e.action == "show":
            shown.setdefault(e.user, []).append(e.item)
    examples = []
    for user, items in sorted(shown.items()):
        items = list(dict.fromkeys(items))
        fs = plan.fetch(client, user, items, NOW)
        examples += fs.examples([float((user, i) in clicked) for i in items])
    torch.manual_seed(0)
    tables = EmbeddingCollection({slot: SlotConfig(dim=4) for slot in plan.slots})
    config = ModelConfig(kind=kind, hidden=[16], n_dense=plan.n_dense)
    if kind == "two_tower":
        config = ModelConfig(
            kind=kind, hidden=[16], n_dense=plan.n_dense, out_dim=8,
            user_slots=["user", "user_categories"], item_slots=["item", "category"],
        )  # fmt: skip
    trainer = Trainer(build_model(config, tables), TrainConfig(batch_size=64, epochs=3, dense_lr=0.01))
    trainer.train(ExampleBatch.from_examples(examples, plan.slots, plan.n_dense))
    path = f"{folder}/{kind}.snapshot"
    save_trainer(path, trainer)
    return ServingModel.from_snapshot(path)


def _stores(folder: str, plan) -> tuple[ProfileClient, object, list[ActionEvent]]:
    """A profile store and a log holding the world's events, recorded through the recommender."""
    client = ProfileClient.embedded(
        serving_profiles_config({"merge_interval": "10ms"}), f"{folder}/profiles", clock=lambda: NOW
    )
    log = open_log(f"sqlite:///{folder}/log.db")
    events = make_events()
    result = Recommender(client, log, None, RecommenderConfig(features=plan), clock=lambda: NOW).record(events)
    assert result.accepted == len(events) and not result.rejected
    client.flush()
    return client, log, events


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> World:
    """The world the read-only tests share (nothing may write to it)."""
    folder = str(tmp_path_factory.mktemp("serving"))
    plan = default_plan()
    client, log, events = _stores(folder, plan)
    model = train_model(client, plan, folder)
    yield World(client, log, events, model, plan, folder)
    log.close()
    client.close()


@pytest.fixture(scope="session")
def two_tower(world) -> ServingModel:
    """A two-tower model trained on the same examples (for the ann source)."""
    return train_model(world.client, world.plan, world.folder, kind="two_tower")


@pytest.fixture(scope="module")
def own_world(world, tmp_path_factory) -> World:
    """The same world in stores of its own (same events, same model), for tests that write."""
    folder = str(tmp_path_factory.mktemp("serving-own"))
    client, log, events = _stores(folder, world.plan)
    yield World(client, log, events, world.model, world.plan, folder)
    log.close()
    client.close()


def reference_scores(model: ServingModel, examples, plan, sample_rate: float | None = None) -> np.ndarray:
    batch = ExampleBatch.from_examples(examples, plan.slots, plan.n_dense)
    return model.predict(batch, sample_rate=sample_rate)
