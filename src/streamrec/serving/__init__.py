"""Serving: retrieval sources, the feature plan, ranking with the serving model, top k,
impression logging, and the HTTP API of ``streamrec serve``.

See ``docs/serving.md`` for the request path, the feature plan, the sources and quotas, the API
and what is logged.
"""

from streamrec.serving.features import DenseFeature, FeaturePlan, FeatureSet, SparseFeature, default_plan, stable_id
from streamrec.serving.limits import ServingLimits
from streamrec.serving.live import LiveStats
from streamrec.serving.recommender import (
    Recommendation,
    Recommender,
    RecommenderConfig,
    RecordResult,
    check_model,
    top_k,
)
from streamrec.serving.retrieval import Candidates, RetrievalConfig, Retriever, merge_candidates
from streamrec.serving.slots import SERVING_SLOTS, serving_profiles_config, stamp

__all__ = [
    "SERVING_SLOTS",
    "Candidates",
    "DenseFeature",
    "FeaturePlan",
    "FeatureSet",
    "LiveStats",
    "Recommendation",
    "Recommender",
    "RecommenderConfig",
    "RecordResult",
    "RetrievalConfig",
    "Retriever",
    "ServingLimits",
    "SparseFeature",
    "check_model",
    "default_plan",
    "merge_candidates",
    "serving_profiles_config",
    "stable_id",
    "stamp",
    "top_k",
]


def create_app(*args, **kwargs):  # lazy: keeps FastAPI out of plain imports
    """:func:`streamrec.serving.api.create_app` (imported on first use)."""
    from streamrec.serving.api import create_app as _create_app

    return _create_app(*args, **kwargs)


__all__ += ["create_app"]
