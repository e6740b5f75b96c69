"""Digests of a directory tree: a job's output files, and the content of its inputs."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

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
    """Write a whole file or none: a temporary name, then a rename over the old one. The temporary
    is made anew (O_EXCL), so a link left at its name is replaced, never written through."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    if os.path.lexists(tmp):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def chown_tree(root: str | Path, uid: int, gid: int) -> None:
    """Hand a tree, root included, to uid:gid; links are changed themselves, never followed."""
    os.chown(root, uid, gid, follow_symlinks=False)
    for dirpath, dirs, names in os.walk(root):
        for name in dirs + names:
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


def open_regular(path: Path) -> BinaryIO | None:
    """A file in a directory a job can write, opened for reading only if it is a regular file
    itself: never through a link, never a FIFO (which would block) or a device. None otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return os.fdopen(fd, "rb")


def sanitize(root: Path, *, keep_links: bool) -> list[str]:
    """Remove what a job may have planted under root for whoever reads it next: FIFOs, sockets and
    devices always, links too unless `keep_links` (a working directory's links are outputs,
    recorded by their target, never followed). Call only once no process of the job is left.
    Returns what was removed, relative to root."""
    removed = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in [*filenames, *dirnames]:
            p = os.path.join(dirpath, name)
            mode = os.lstat(p).st_mode
            if stat.S_ISREG(mode) or stat.S_ISDIR(mode) or (keep_links and stat.S_ISLNK(mode)):
                continue
            os.unlink(p)
            removed.append(os.path.relpath(p, root))
    return removed
