"""The [serving] config and the feature plan: validated, errors naming the key."""

from __future__ import annotations

import pytest

from streamrec.errors import ConfigError
from streamrec.serving import FeaturePlan, RecommenderConfig, default_plan


def test_serving_section_round_trips_and_bad_keys_are_named():
    cfg = RecommenderConfig.from_dict({"category_cap": 2, "sample_rate": 0.1, "retrieval": {"quotas": {"popular": 5}}})
    assert cfg.category_cap == 2 and cfg.retrieval.quotas == {"popular": 5}
    with pytest.raises(ConfigError, match=r"serving\.retrieval\.quota"):
        RecommenderConfig.from_dict({"retrieval": {"quota": {}}})
    with pytest.raises(ConfigError, match="sample_rate"):
        RecommenderConfig.from_dict({"sample_rate": 0.0})


def test_feature_plan_from_toml_dict_and_its_errors():
    plan = FeaturePlan.from_dict(
        {
            "sparse": [{"name": "item", "kind": "item"}],
            "dense": [
                {"name": "ctr", "kind": "item", "slot": "item_ctr", "agg": "ratio", "numerator": "click",
                 "denominator": "show"},
                {"name": "hour", "kind": "context", "context": "hour_sin"},
            ],
        }
    )  # fmt: skip
    assert plan.n_dense == 2 and plan.slots == ["item"]
    with pytest.raises(ConfigError, match="counter"):
        FeaturePlan.from_dict({"sparse": [], "dense": [{"name": "x", "kind": "user", "slot": "clicked_item"}]})
    with pytest.raises(ConfigError, match="context"):
        FeaturePlan.from_dict({"sparse": [], "dense": [{"name": "x", "kind": "context", "context": "moon"}]})
    assert default_plan().n_dense == 60 and len(default_plan(("1h",)).dense) == 18


@pytest.mark.parametrize("window", ["soon", "0s", -5, True])
def test_a_bad_exclusion_window_is_named(window):
    with pytest.raises(ConfigError, match=r"serving\.retrieval.*exclude_clicked_window"):
        RecommenderConfig.from_dict({"retrieval": {"exclude_clicked_window": window}})


def test_exclusion_settings_round_trip():
    cfg = RecommenderConfig.from_dict({"retrieval": {"exclude_clicked_window": "7d", "exclude_clicked_max": 50}})
    assert cfg.retrieval.exclude_clicked_window == "7d" and cfg.retrieval.exclude_clicked_max == 50
    with pytest.raises(ConfigError, match="exclude_clicked_max"):
        RecommenderConfig.from_dict({"retrieval": {"exclude_clicked_max": 0}})
