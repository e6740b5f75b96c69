"""What a job produced, from a server: `artifacts` (list, download), `trace` (table, JSON, CSV) and
`fingerprint` (the environment, or its difference from another job's)."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

from reprotrain import fingerprint
from reprotrain.cli.output import print_json
from reprotrain.client import Client
from reprotrain.errors import SpecInvalid


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "artifacts",
        parents=[common],
        help="list a job's artifacts, or download one",
        description="Without NAME: every artifact with its size and digest. With NAME: download it "
        "(checked against its digest by the server) to -o PATH, or to its own file name here.",
    )
    p.add_argument("id")
    p.add_argument("name", nargs="?", help="the artifact to download")
    p.add_argument("-o", "--output", help="where to write it (- for standard output)")
    p.set_defaults(func=cmd_artifacts)

    p = sub.add_parser(
        "trace",
        parents=[common],
        help="print a job's per-step metrics (exact values)",
        description="The per-step metrics the job logged, exact as stored: a table, --json, or --csv "
        "(a column per metric, for a spreadsheet or pandas).",
    )
    p.add_argument("id")
    p.add_argument("--csv", action="store_true", help="CSV: step, then one column per metric")
    p.set_defaults(func=cmd_trace)

    p = sub.add_parser(
        "fingerprint",
        parents=[common],
        help="print the environment a job ran in, or how it differs from another job's",
        description="The job's environment fingerprint (flattened), its env digest and determinism "
        "record; with --diff OTHER, only what differs, likely causes of different bits first.",
    )
    p.add_argument("id")
    p.add_argument("--diff", metavar="OTHER", help="another job: print what differs between them")
    p.set_defaults(func=cmd_fingerprint)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def cmd_artifacts(args: argparse.Namespace) -> int:
    client = Client(args.url, args.token)
    if args.name is None:
        if args.output:
            raise SpecInvalid("-o needs the NAME of the artifact to download", field="--output")
        page = client.artifacts(args.id)
        if args.json:
            print_json(page)
            return 0
        for a in page["data"]:
            print(f"{_size(a['size']):>10}  {a['digest'][:16]}…  {a['name']}")
        print(f"({page['count']} artifacts)")
        return 0
    if args.json:
        raise SpecInvalid(
            "a download writes the file's bytes; --json lists artifacts (no NAME)", field="--json"
        )
    data = client.download(args.id, args.name)
    if args.output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return 0
    out = Path(args.output or Path(args.name).name)
    if out.is_dir():
        out = out / Path(args.name).name
    out.write_bytes(data)
    print(f"{out}  ({_size(len(data))})", file=sys.stderr)
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    if args.json and args.csv:
        raise SpecInvalid("give one of --json or --csv", field="--csv")
    page = Client(args.url, args.token).trace(args.id)
    entries = page["data"]
    if args.json:
        print_json(page)
        return 0
    names = sorted({k for e in entries for k in (e.get("metrics") or {})})
    if args.csv:
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(["step", *names])
        for e in entries:
            w.writerow([e["step"], *(_cell(e["metrics"].get(n)) for n in names)])
        return 0
    if not entries:
        print(f"no steps logged (status {page['status']})")
        return 0
    widths = [max(4, *(len(str(e["step"])) for e in entries))]
    cells = [[_text(e["metrics"].get(n)) for n in names] for e in entries]
    widths += [max(len(n), *(len(row[i]) for row in cells)) for i, n in enumerate(names)]
    print("  ".join(h.rjust(w) for h, w in zip(["step", *names], widths, strict=True)))
    for e, row in zip(entries, cells, strict=True):
        print("  ".join(v.rjust(w) for v, w in zip([str(e["step"]), *row], widths, strict=True)))
    print(f"({page['count']} steps; status {page['status']})")
    return 0


def _cell(v: Any) -> Any:
    return "" if v is None else json.dumps(v) if isinstance(v, dict | list) else v


def _text(v: Any) -> str:
    if v is None:
        return "-"
    return repr(v) if isinstance(v, float) else json.dumps(v) if isinstance(v, dict | list) else str(v)


def cmd_fingerprint(args: argparse.Namespace) -> int:
    client = Client(args.url, args.token)
    fp = client.fingerprint(args.id)
    if args.diff:
        other = client.fingerprint(args.diff)
        rows = fingerprint.diff(fp["fingerprint"], other["fingerprint"])
        if args.json:
            print_json({"a": args.id, "b": args.diff, "differs": rows})
            return 0
        same = fp["env_digest"] == other["env_digest"]
        print(f"env digest {'equal' if same else 'differs'}: {fp['env_digest']} vs {other['env_digest']}")
        for r in rows:
            mark = "!" if r["likely_cause"] else " "
            print(f"{mark} {r['key']}: {_value(r['a'])} → {_value(r['b'])}  ({r['label']})")
        if not rows:
            print("the fingerprints are equal")
        elif any(r["likely_cause"] for r in rows):
            print("! likely to change result bits")
        return 0
    if args.json:
        print_json(fp)
        return 0
    print(f"env digest  {fp['env_digest']}")
    for key, value in fingerprint.flatten(fp["fingerprint"] or {}).items():
        print(f"{key}  {_value(value)}")
    if fp.get("determinism"):
        print(f"policy      {fp['determinism']['policy']}")
    return 0


def _value(v: Any) -> str:
    s = json.dumps(v, default=str)
    return s if len(s) <= 80 else s[:77] + "…"
