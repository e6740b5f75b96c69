"""Write the image's build facts (read back, typed as `ImageFacts`, into fingerprint["image"]).

Run at image build time, after everything is installed:

    python deploy/build_facts.py --base-image "$CUDA_BASE" --python-image "$PYTHON_BASE" \
        --lock requirements.lock --lock requirements-image.lock --lock requirements-worker.lock \
        --torch-index "$TORCH_INDEX_URL" --vcs-ref "$VCS_REF" -o /etc/reprotrain/build.json

The build date comes from SOURCE_DATE_EPOCH when set (reproducible builds); otherwise the clock,
and "build_date_source" says which. Standard library only: it also runs outside any image (tests).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import importlib.metadata
import json
import os
import subprocess
from pathlib import Path
from typing import Any

SCHEMA = 1


def _digest_of(ref: str) -> str | None:
    """The `sha256:<hex>` a pinned image reference names, or None for an unpinned one."""
    _, sep, digest = ref.partition("@")
    return digest if sep and digest.startswith("sha256:") and len(digest) == 71 else None


def _sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _os_packages() -> dict[str, Any] | None:
    """Digest of the Debian/Ubuntu package list (name=version), so apt drift shows in the facts."""
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Package}=${Version}\n"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    lines = sorted(set(out.splitlines()))
    text = "\n".join(lines).encode()
    return {"count": len(lines), "digest": "sha256:" + hashlib.sha256(text).hexdigest()}


def build_facts(
    *,
    target: str,
    base_image: str,
    python_image: str | None,
    locks: list[Path],
    torch_index: str | None,
    vcs_ref: str | None,
    source_date_epoch: str | None,
) -> dict[str, Any]:
    if source_date_epoch:
        when = dt.datetime.fromtimestamp(int(source_date_epoch), tz=dt.UTC)
        source = "SOURCE_DATE_EPOCH"
    else:
        when = dt.datetime.now(tz=dt.UTC).replace(microsecond=0)
        source = "clock"
    return {
        "schema": SCHEMA,
        "target": target,
        "base_image": base_image,
        "base_image_digest": _digest_of(base_image),
        "python_image": python_image,
        "python_image_digest": _digest_of(python_image) if python_image else None,
        "requirements_lock_sha256": next((_sha256(p) for p in locks if p.name == "requirements.lock"), None),
        "locks": {p.name: _sha256(p) for p in locks},
        "torch": _version("torch"),
        "torch_index": torch_index or None,
        "reprotrain": _version("reprotrain"),
        "os_packages": _os_packages(),
        "vcs_ref": vcs_ref or None,
        "build_date": when.isoformat().replace("+00:00", "Z"),
        "build_date_source": source,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", default="worker")
    p.add_argument("--base-image", required=True, help="the FROM reference, pinned by @sha256")
    p.add_argument("--python-image", help="where the interpreter came from, if another image")
    p.add_argument("--lock", action="append", type=Path, default=[], help="lock file to hash (repeatable)")
    p.add_argument("--torch-index")
    p.add_argument("--vcs-ref")
    p.add_argument("-o", "--output", type=Path, required=True)
    args = p.parse_args(argv)
    facts = build_facts(
        target=args.target,
        base_image=args.base_image,
        python_image=args.python_image,
        locks=args.lock,
        torch_index=args.torch_index,
        vcs_ref=args.vcs_ref,
        source_date_epoch=os.environ.get("SOURCE_DATE_EPOCH"),
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(facts, indent=2, sort_keys=True) + "\n")
    print(json.dumps(facts, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
