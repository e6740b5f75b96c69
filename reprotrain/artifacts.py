"""Content-addressed artifact files: stored once under their digest, written whole or not at all,
read-only once stored, and checked against their digest whenever they are read for a client.

Keys are the blake3 digests the result already carries, so storing a new output costs a copy, not
a second hash pass. A file already stored under the digest is checked before it is counted as
the new one (a tampered copy is replaced by the good bytes).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

from reprotrain.errors import ArtifactTampered, NotFound
from reprotrain.hashing import digest_file

_DIGEST = re.compile(r"^[0-9a-f]{64}$")


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, digest: str) -> Path:
        if not _DIGEST.match(digest):
            raise NotFound(f"no artifact with digest {digest!r}")
        return self.root / digest[:2] / digest

    def put(self, src: Path, digest: str) -> Path:
        """Copy src in under its digest (temporary name, read-only, then rename); where the digest is
        stored already and intact, nothing is written."""
        dest = self.path(digest)
        if dest.is_file() and digest_file(dest) == digest:
            with contextlib.suppress(OSError):  # in use again: a sweep's grace counts from now
                os.utime(dest)
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{digest}.{uuid.uuid4().hex}.partial")
        try:
            shutil.copyfile(src, tmp)
            os.chmod(tmp, 0o444)  # written once: nothing of ours opens a stored artifact for writing
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest

    def open_path(self, digest: str) -> Path:
        p = self.path(digest)
        if not p.is_file():
            raise NotFound(f"artifact {digest} is missing from the store")
        return p

    def verified(self, digest: str, what: str = "") -> Path:
        """The stored file, once its bytes hash to its digest; ArtifactTampered where they do not."""
        p = self.open_path(digest)
        actual = digest_file(p)
        if actual != digest:
            raise ArtifactTampered(digest, actual, what)
        return p

    def remove(self, digests: Iterable[str], grace_s: float) -> tuple[int, int]:
        """Delete these stored files, except any stored or reused within `grace_s` (a worker may be
        about to record it for a new job). Returns (files, bytes) removed."""
        files = size = 0
        cutoff = time.time() - grace_s
        for digest in digests:
            p = self.path(digest)
            try:
                st = p.stat()
                if st.st_mtime > cutoff:
                    continue
                p.unlink()
            except FileNotFoundError:
                continue
            files, size = files + 1, size + st.st_size
        return files, size

    def sweep(
        self, referenced: Callable[[list[str]], set[str]], grace_s: float, batch: int = 500
    ) -> tuple[int, int]:
        """Delete every stored file no job holds (`referenced` says which are held), past the grace."""
        files = size = 0
        if not self.root.is_dir():
            return 0, 0
        found = [
            p.name for d in self.root.iterdir() if d.is_dir() for p in d.iterdir() if _DIGEST.match(p.name)
        ]
        for i in range(0, len(found), batch):
            chunk = found[i : i + batch]
            held = referenced(chunk)
            f, s = self.remove([d for d in chunk if d not in held], grace_s)
            files, size = files + f, size + s
        return files, size
