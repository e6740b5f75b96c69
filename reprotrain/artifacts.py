"""Content-addressed artifact files: stored once under their digest, written whole or not at all.

Keys are the blake3 digests the result already carries, so storing a job's outputs costs a copy,
not a second hash pass over every file.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

from reprotrain.errors import NotFound

_DIGEST = re.compile(r"^[0-9a-f]{64}$")


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, digest: str) -> Path:
        if not _DIGEST.match(digest):
            raise NotFound(f"no artifact with digest {digest!r}")
        return self.root / digest[:2] / digest

    def put(self, src: Path, digest: str) -> Path:
        """Copy src in under its digest (temporary name, then rename); a no-op if present."""
        dest = self.path(digest)
        if dest.exists():
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{digest}.{uuid.uuid4().hex}.partial")
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest

    def open_path(self, digest: str) -> Path:
        p = self.path(digest)
        if not p.is_file():
            raise NotFound(f"artifact {digest} is missing from the store")
        return p
