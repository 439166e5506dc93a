"""A model that does not fit the feature plan is refused at start (issue 13, item 6).

Before, ``streamrec serve --snapshot`` with such a model started, reported healthy, and answered
every recommendation with 500 (a shape mismatch inside the forward pass).
"""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from streamrec.errors import InvalidInputError
from streamrec.serving import FeaturePlan, Recommender, RecommenderConfig

SMALL_PLAN = {
    "sparse": [{"name": "user", "kind": "user"}, {"name": "item", "kind": "item"},
               {"name": "genre", "kind": "category"}],
    "dense": [{"name": "item_ctr_1d", "kind": "item", "slot": "item_ctr", "agg": "ratio", "numerator": "click",
               "denominator": "show"}],
}  # fmt: skip


def test_a_model_with_other_dense_columns_or_slots_is_refused_naming_what_differs(world):
    cfg = RecommenderConfig(features=FeaturePlan.from_dict(SMALL_PLAN))
    with pytest.raises(InvalidInputError) as caught:
        Recommender(world.client, world.log, world.model, cfg)
    message = str(caught.value)
    assert caught.value.field == "model"
    assert "n_dense" in message and "60" in message and "1" in message
    assert "category" in message and "user_categories" in message  # the model's slots the plan lacks


def test_a_model_that_fits_its_plan_is_accepted(world):
    rec = Recommender(world.client, world.log, world.model, RecommenderConfig(features=world.plan))
    assert rec.model is world.model


def test_streamrec_serve_refuses_to_start_with_a_snapshot_that_does_not_fit_the_plan(tmp_path, world):
    lines = ["[[serving.features.sparse]]"]
    lines += ['name = "user"', 'kind = "user"', "[[serving.features.sparse]]", 'name = "item"', 'kind = "item"']
    lines += ["[[serving.features.dense]]", 'name = "item_ctr_1d"', 'kind = "item"', 'slot = "item_ctr"']
    lines += ['agg = "ratio"', 'numerator = "click"', 'denominator = "show"']
    config = tmp_path / "streamrec.toml"
    config.write_text("\n".join(lines) + "\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "streamrec", "serve", "--port", str(port), "--no-follow",
           "--log", f"sqlite:///{tmp_path}/log.db", "--profiles", str(tmp_path / "profiles"),
           "--snapshot", f"{world.folder}/deepfm.snapshot", "--config", str(config)]  # fmt: skip
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail("streamrec serve started (and kept running) with a model that does not fit the plan")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "n_dense" in done.stderr and "does not fit" in done.stderr
