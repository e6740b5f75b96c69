"""`reprotrain export` and `reprotrain verify`: a job's signed manifest with its bytes, checked.

An export is a tar of `manifest.json` (the signed manifest with its public key), `result.json`
(the stored result and verdict) and `artifacts/<name>` for every artifact the manifest lists.
`verify` takes a job id (checked against the service: its registered key, every artifact
downloaded) or an export (checked offline), recomputes every digest from the bytes, and names
each check that fails.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import tarfile
import time
from pathlib import Path
from typing import Any

from reprotrain.cli.output import print_json
from reprotrain.client import Client
from reprotrain.errors import SpecInvalid, VerifyFailed
from reprotrain.manifest import Checked, SignedManifest, check_contents

MANIFEST, RESULT, ARTIFACTS = "manifest.json", "result.json", "artifacts/"


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "export",
        parents=[common],
        help="write a job's signed manifest, result and artifacts to a tar",
        description="Write JOB's signed manifest, stored result and every artifact it lists to a tar "
        "that `reprotrain verify` checks offline.",
    )
    p.add_argument("id")
    p.add_argument("-o", "--output", help="the tar to write (default: job-ID.tar)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "verify",
        parents=[common],
        help="check a job's signed manifest against its bytes (a job id, or an exported tar)",
        description="Check the manifest's signature, then recompute the digest of the stored result, "
        "the trace, a re-run's verdict and every artifact. TARGET is a job id (checked against the "
        "service) or a tar written by `reprotrain export` (checked offline). Exit 1 when any fails.",
    )
    p.add_argument("target")
    p.add_argument("--key", metavar="HEX", help="the public key (hex) the manifest must be signed by")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("keys", parents=[common], help="list the workers' public signing keys")
    p.set_defaults(func=cmd_keys)

    p = sub.add_parser("workers", parents=[common], help="list the workers, live ones first")
    p.set_defaults(func=cmd_workers)


def cmd_workers(args: argparse.Namespace) -> int:
    page = Client(args.url, args.token).workers()
    if args.json:
        print_json(page)
        return 0
    for w in page["data"]:
        state = "alive" if w["alive"] else "silent"
        env = (w["static_digest"] or "-")[:16]
        gpus = ",".join(w.get("gpus") or []) or "none"
        print(
            f"{w['id']}  {state:6}  queues {','.join(w['queues'])}  isolation {w['isolation'] or '-'}  "
            f"env {env}  gpus {gpus}  seen {w['last_seen_at'][:19]}"
        )
    print(f"({page['alive']} alive of {page['count']})")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    keys = Client(args.url, args.token).keys()
    if args.json:
        print_json(keys)
    else:
        for k in keys["data"]:
            print(f"{k['key_id']}  {k['public_key']}  {k['created_at'][:19]}  {k['owner']}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    client = Client(args.url, args.token)
    signed = SignedManifest.model_validate(client.manifest(args.id))
    args.id = signed.parsed.job_id  # the whole id, where a prefix was given
    stored = client.stored_result(args.id)
    out = Path(args.output or f"job-{args.id}.tar")
    with tarfile.open(out, "w") as tar:
        _add(tar, MANIFEST, json.dumps(signed.model_dump(mode="json"), indent=1).encode())
        _add(tar, RESULT, json.dumps(stored, indent=1).encode())
        for name in sorted(signed.parsed.artifacts):
            _add(tar, ARTIFACTS + name, client.download(args.id, name))
    if args.json:
        print_json({"path": str(out), "job_id": args.id, "artifacts": len(signed.parsed.artifacts)})
    else:
        print(
            f"{out}: job {args.id}, {len(signed.parsed.artifacts)} artifacts, signed by key {signed.key_id}"
        )
    return 0


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o444
    tar.addfile(info, io.BytesIO(data))


def cmd_verify(args: argparse.Namespace) -> int:
    if re.fullmatch(r"[0-9a-fA-F]{6,32}", args.target) and not Path(args.target).exists():
        checked, where = _verify_online(args), "against the service"
    elif Path(args.target).is_file():
        checked, where = _verify_tar(Path(args.target), args.key), "offline"
        if not args.key:
            where += ", by the key in the export (pass --key HEX, from `reprotrain keys`, to require yours)"
    else:
        raise SpecInvalid(f"neither a job id nor an exported tar: {args.target}", field="target")
    if args.json:
        print_json(checked.model_dump(mode="json") | {"ok": checked.ok})
    else:
        print(_report(checked, where))
    return 0 if checked.ok else 1


def _verify_online(args: argparse.Namespace) -> Checked:
    client = Client(args.url, args.token)
    signed = SignedManifest.model_validate(client.manifest(args.target))
    registered = {k["key_id"]: k["public_key"] for k in client.keys()["data"]}
    trusted = args.key or registered.get(signed.key_id)
    if trusted is None:
        raise VerifyFailed(f"the manifest's key {signed.key_id} is not registered with this service")
    return check_contents(
        signed, client.stored_result(args.target), lambda n: client.download(args.target, n), trusted
    )


def _verify_tar(path: Path, key: str | None) -> Checked:
    try:
        tar = tarfile.open(path)  # noqa: SIM115 - closed by the with below, once it opened
    except (tarfile.TarError, OSError) as e:
        raise SpecInvalid(f"not a readable tar: {e}", field="target") from None
    with tar:
        members = {m.name: m for m in tar.getmembers() if m.isfile()}

        def read(name: str) -> bytes:
            member = members.get(name)
            f = tar.extractfile(member) if member is not None else None
            if f is None:
                raise KeyError(f"{name} is not in {path.name}")
            return f.read()

        try:
            signed = SignedManifest.model_validate_json(read(MANIFEST))
            stored = json.loads(read(RESULT))
        except (KeyError, ValueError) as e:
            raise VerifyFailed(f"{path.name} is not a reprotrain export: {e}") from None
        return check_contents(signed, stored, lambda n: read(ARTIFACTS + n), key)


def _report(checked: Checked, where: str) -> str:
    head = f"job {checked.job_id}, key {checked.key_id}, checked {where}: "
    if checked.ok:
        return head + f"OK ({len(checked.passed)} checks: signature, result, trace, every artifact)"
    lines = [head + f"FAILED ({len(checked.failed)} of {len(checked.failed) + len(checked.passed)} checks)"]
    lines += [f"  ✗ {name}: {why}" for name, why in checked.failed.items()]
    return "\n".join(lines)
