"""Runnable example jobs for reprotrain."""
