"""The `reprotrain` command line.

Errors exit with status 2 and one line on stderr, never a traceback. `run` and `submit --wait`
exit 0 when the job succeeded, 1 when not; `compare` and `rerun --wait` exit 0 when the re-run
reproduced (`identical`, `results_identical`), 1 for any other verdict.
"""

from __future__ import annotations

import argparse
import os
import sys

from reprotrain import __version__
from reprotrain.cli import local, remote, server
from reprotrain.errors import ReprotrainError

EPILOG = """examples:
  reprotrain run examples/specs/mlp.yaml                 # run locally, no server
  reprotrain compare runs/a runs/b                       # compare two local runs
  reprotrain serve                                       # API + worker on this machine
  reprotrain submit examples/specs/mlp.yaml --wait       # submit to a server
  reprotrain rerun JOB_ID --wait                         # re-run by id, print the verdict
  reprotrain bisect JOB_A JOB_B --wait                   # the first op where two runs part
  reprotrain show 3fa9c2                                 # any command: a unique id prefix (6+)
  reprotrain artifacts JOB_ID model.pt -o model.pt      # download one artifact
  reprotrain trace JOB_ID --csv > trace.csv              # per-step metrics, exact
  reprotrain submit examples/script/spec.yaml --bundle examples/script --wait
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="reprotrain",
        description="Run PyTorch training jobs reproducibly, and prove it.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"reprotrain {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    local.add_commands(sub)
    remote.add_commands(sub)
    server.add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ReprotrainError as e:
        print(f"reprotrain: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("reprotrain: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader left (`| head`): stop writing, quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


__all__ = ["build_parser", "main"]
