"""What checking an artifact against its digest costs on every download: hash vs plain read.

    python -m bench.integrity [--sizes 1,100,1000]   (MiB)

Each size: a file in the artifact store, read once to warm the page cache, then timed (median of
5): `ArtifactStore.verified` (blake3 over the bytes, what the API does before serving) next to a
plain read of the same bytes (what serving costs anyway).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from reprotrain.artifacts import ArtifactStore
from reprotrain.hashing import digest_file


def timed(fn, n: int = 5) -> float:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def read_all(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(1 << 20):
            pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1,100,1000", help="file sizes in MiB (default 1,100,1000)")
    args = ap.parse_args()
    print("| size (MiB) | verify (ms) | plain read (ms) | verify GB/s |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        store = ArtifactStore(Path(d) / "store")
        for mib in (int(x) for x in args.sizes.split(",")):
            src = Path(d) / "src.bin"
            src.write_bytes(os.urandom(mib << 20))
            digest = digest_file(src)
            path = store.put(src, digest)
            src.unlink()
            read_all(path)
            verify = timed(lambda d=digest: store.verified(d))
            plain = timed(lambda p=path: read_all(p))
            print(f"| {mib} | {verify * 1000:.1f} | {plain * 1000:.1f} | {(mib << 20) / verify / 1e9:.2f} |")
            path.unlink()


if __name__ == "__main__":
    main()
