"""Ranking models over the collisionless embedding collection."""

from streamrec.models.fm import FactorizationMachine

__all__ = ["FactorizationMachine"]
