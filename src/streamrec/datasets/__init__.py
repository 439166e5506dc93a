"""Readers for the public data sets streamrec evaluates on (each also takes any path in the format)."""

from streamrec.datasets.movielens import MovieLens, find_dataset, load_movielens

__all__ = ["MovieLens", "find_dataset", "load_movielens"]
