"""Training: the example batch, the trainer (batch and online stages), snapshots and sync."""

from streamrec.batch import ExampleBatch

__all__ = ["ExampleBatch"]
