"""Digests of a directory tree: a job's output files, and the content of its inputs."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

from reprotrain.hashing import digest_bytes, digest_file, digest_json

SKIP_DIRS = {"__pycache__", ".git"}


def walk(root: Path) -> Iterator[tuple[str, Path]]:
    """(relative posix path, path) of every file and symlink under root, sorted by path."""
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        base = Path(dirpath)
        for name in filenames:
            if name.endswith(".pyc"):
                continue
            p = base / name
            found.append((p.relative_to(root).as_posix(), p))
        for d in list(dirnames):  # links to directories are recorded, not followed
            if (base / d).is_symlink():
                found.append(((base / d).relative_to(root).as_posix(), base / d))
                dirnames.remove(d)
    return iter(sorted(found))


def file_entry(path: Path, digest: Callable[[Path], str] = digest_file) -> dict[str, object]:
    """Size and digest of one file; a symlink is its target text, never followed."""
    if path.is_symlink():
        target = os.readlink(path)
        return {"size": len(target), "digest": digest_bytes(b"symlink:" + target.encode()), "symlink": target}
    return {"size": path.stat().st_size, "digest": digest(path)}


def tree_digests(root: Path, skip: dict[str, str] | None = None) -> dict[str, object]:
    """Per-file digests under root, leaving out files whose digest equals `skip`'s entry."""
    files: dict[str, object] = {}
    for rel, path in walk(root):
        entry = file_entry(path)
        if skip and skip.get(rel) == entry["digest"]:
            continue
        files[rel] = entry
    return {"overall": overall(files), "files": files}


def overall(files: dict[str, object]) -> str:
    """One digest over (path, size, digest) of every file, in path order."""
    return digest_json([[rel, e["size"], e["digest"]] for rel, e in sorted(files.items())])  # type: ignore[index]


def manifest(root: Path) -> dict[str, str]:
    return {rel: str(file_entry(p)["digest"]) for rel, p in walk(root)}


def write_atomic(path: Path, text: str) -> None:
    """Write a whole file or none: a temporary name, then a rename over the old one."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
