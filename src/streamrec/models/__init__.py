"""Ranking models over the collisionless embedding collection (and the hashed baseline)."""

from streamrec.models.fm import FactorizationMachine
from streamrec.models.hashed import HashedEmbeddingModule
from streamrec.models.heads import DCNv2Head, DeepFMHead, TwoTowerHead
from streamrec.models.ranking import ModelConfig, RankingModel, build_hashed_model, build_model

__all__ = [
    "DCNv2Head",
    "DeepFMHead",
    "FactorizationMachine",
    "HashedEmbeddingModule",
    "ModelConfig",
    "RankingModel",
    "TwoTowerHead",
    "build_hashed_model",
    "build_model",
]
