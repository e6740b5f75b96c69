"""Tree digests and input digests with their stat-keyed cache."""

from __future__ import annotations

import os

import pytest

from reprotrain.errors import InputError
from reprotrain.files import manifest, tree_digests
from reprotrain.inputs import DigestCache, digest_input, digest_inputs
from reprotrain.spec import InputSpec


def test_tree_digest_covers_paths_and_bytes(tmp_path) -> None:
    """Renaming or changing a file changes the overall digest; pyc files are ignored."""
    (tmp_path / "a.txt").write_text("1")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "x.pyc").write_bytes(b"junk")
    first = tree_digests(tmp_path)
    assert list(first["files"]) == ["a.txt"]
    (tmp_path / "a.txt").rename(tmp_path / "b.txt")
    assert tree_digests(tmp_path)["overall"] != first["overall"]


def test_skip_leaves_out_unchanged_code(tmp_path) -> None:
    """Files equal to the pre-run manifest are not outputs; changed ones are."""
    (tmp_path / "code.py").write_text("x = 1")
    (tmp_path / "data.txt").write_text("a")
    before = manifest(tmp_path)
    (tmp_path / "data.txt").write_text("b")
    (tmp_path / "out.txt").write_text("c")
    assert sorted(tree_digests(tmp_path, skip=before)["files"]) == ["data.txt", "out.txt"]


def test_symlinks_are_recorded_not_followed(tmp_path) -> None:
    """A link to a device or a directory is digested as its target path."""
    os.symlink("/dev/zero", tmp_path / "zero")
    entry = tree_digests(tmp_path)["files"]["zero"]
    assert entry["symlink"] == "/dev/zero"


def test_input_digest_changes_with_one_byte_and_cache_skips_reads(tmp_path) -> None:
    """One changed byte changes the digest; an unchanged file is served from the cache."""
    d = tmp_path / "data"
    d.mkdir()
    (d / "x.bin").write_bytes(b"\x00" * 1000)
    cache = DigestCache(tmp_path / "c.sqlite")
    first = digest_input("train", InputSpec(path=str(d)), cache)
    again = digest_input("train", InputSpec(path=str(d)), cache)
    assert again["digest"] == first["digest"] and cache.hits == 1 and cache.misses == 1
    with open(d / "x.bin", "r+b") as f:
        f.seek(500)
        f.write(b"\x01")
    changed = digest_input("train", InputSpec(path=str(d)), cache)
    assert changed["digest"] != first["digest"] and cache.misses == 2


def test_missing_input_names_it(tmp_path) -> None:
    """A missing input path is an InputError naming the input."""
    with pytest.raises(InputError) as e:
        digest_inputs({"train": InputSpec(path=str(tmp_path / "nope"))}, None)
    assert e.value.field == "inputs.train.path"


def test_the_digest_cache_is_opened_only_when_a_file_is_digested(tmp_path) -> None:
    """A job without inputs opens no database; the first digest creates it, and a second cache on
    the same file reads what the first stored."""
    path = tmp_path / "cache" / "c.sqlite"
    assert digest_inputs({}, path) == {} and not path.parent.exists()
    (tmp_path / "x.bin").write_bytes(b"\x01" * 10)
    spec = {"x": InputSpec(path=str(tmp_path / "x.bin"))}
    first = digest_inputs(spec, path)
    assert path.exists()
    second = DigestCache(path)
    assert digest_input("x", spec["x"], second) == first["x"] and second.hits == 1
    second.close()
