"""The worker's cache of extracted bundles stays within its budget, least recently used out first."""

from __future__ import annotations

import os
import time
from pathlib import Path

from reprotrain.worker.task import prune_bundle_cache


def _bundle(cache: Path, name: str, size: int, age_s: float) -> Path:
    d = cache / name
    (d / "pkg").mkdir(parents=True)
    (d / "pkg" / "code.py").write_bytes(b"x" * size)
    t = time.time() - age_s
    os.utime(d, (t, t))
    return d


def test_oldest_go_first_until_within_budget(tmp_path: Path) -> None:
    old = _bundle(tmp_path, "a" * 64, 4000, age_s=3000)
    mid = _bundle(tmp_path, "b" * 64, 4000, age_s=2000)
    new = _bundle(tmp_path, "c" * 64, 4000, age_s=1000)
    removed = prune_bundle_cache(tmp_path, max_bytes=9000, keep=new)
    assert removed == [old.name]
    assert not old.exists() and mid.exists() and new.exists()


def test_the_running_bundle_and_recently_used_ones_stay_even_over_budget(tmp_path: Path) -> None:
    keep = _bundle(tmp_path, "a" * 64, 4000, age_s=5000)  # oldest, but about to run
    recent = _bundle(tmp_path, "b" * 64, 4000, age_s=10)  # another worker may be copying it
    stale = _bundle(tmp_path, "c" * 64, 4000, age_s=4000)
    assert prune_bundle_cache(tmp_path, max_bytes=0, keep=keep) == [stale.name]
    assert keep.exists() and recent.exists()


def test_crash_leftovers_are_cleared_and_fresh_extractions_left_alone(tmp_path: Path) -> None:
    keep = _bundle(tmp_path, "a" * 64, 10, age_s=0)
    left = _bundle(tmp_path, "b" * 64 + ".0123.gone", 10, age_s=4000)
    extracting = _bundle(tmp_path, "c" * 64 + ".4567", 10, age_s=5)
    prune_bundle_cache(tmp_path, max_bytes=10**9, keep=keep)
    assert not left.exists() and extracting.exists() and keep.exists()
