"""The store: tables, the repository that owns every state change, and migrations."""

from reprotrain.store.repo import Store

__all__ = ["Store"]
