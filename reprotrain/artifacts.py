"""Content-addressed artifact files: stored once under their digest, written whole or not at all,
read-only once stored, and checked against their digest whenever they are read for a client.

Keys are the blake3 digests the result already carries, so storing a new output costs a copy, not
a second hash pass. A file already stored under the digest is checked before it is counted as
the new one (a tampered copy is replaced by the good bytes).
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
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
