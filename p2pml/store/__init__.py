"""Persistent storage: the SQLite block store."""

from p2pml.store.sqlite import BlockStore

__all__ = ["BlockStore"]
