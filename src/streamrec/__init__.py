"""streamrec: a real-time recommendation engine (Monolith-style training, IPS-style profiles)."""

__version__ = "0.1.0"
