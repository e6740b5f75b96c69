"""Local demo without a server: run an example job, re-run it, print the verdict.

python -m reprotrain.examples.local_demo [SPEC]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from reprotrain.cli.output import format_result, format_verdict
from reprotrain.compare import compare
from reprotrain.job.launcher import ForkRunner
from reprotrain.job.supervisor import execute
from reprotrain.outputs import RunFiles
from reprotrain.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    spec_path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "examples/specs/tiny_cnn.yaml"
    spec = load_spec(spec_path)
    out = Path(tempfile.mkdtemp(prefix="reprotrain-demo-"))
    with ForkRunner() as runner:
        print(f"== original run of {spec_path.name}")
        a = execute(runner, spec, out / "original", code_dir=ROOT)
        print(format_result(a, out / "original"))
        print("\n== re-run")
        b = execute(runner, spec, out / "rerun", code_dir=ROOT)
        print(format_result(b, out / "rerun"))
    print("\n== verdict")
    verdict = compare(a, b, RunFiles.local(out / "original"), RunFiles.local(out / "rerun"))
    print(format_verdict(verdict.model_dump(mode="json")))
    return 0 if a.status == b.status == "SUCCEEDED" else 1


if __name__ == "__main__":
    sys.exit(main())
