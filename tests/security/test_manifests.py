"""Signed run manifests: every finished job's manifest is signed by its worker's registered key;
`reprotrain verify` checks it online and, exported, offline; a flipped byte in any artifact or an
edited manifest or result fails, naming what."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from reprotrain.errors import VerifyFailed
from reprotrain.manifest import Manifest, SignedManifest, WorkerKey, check_contents, check_signature
from tests.helpers import ROOT, base_spec

TIMEOUT = 120
SPEC = base_spec(name="signed", params={"epochs": 1, "samples": 32})


def _cli(stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in stack.env.items() if not k.startswith("REPROTRAIN_")}
    argv = [sys.executable, "-m", "reprotrain.cli", *args, "--url", stack.url]
    return subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)


def _rewrite(tar_path: Path, name: str, change) -> None:
    """Rewrite one member of an export in place, as someone editing it by hand would."""
    with tarfile.open(tar_path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    with tarfile.open(tar_path, "w") as tar:
        for m, data in members:
            if m.name == name:
                data = change(data)
                m.size = len(data)
            import io

            tar.addfile(m, io.BytesIO(data))


def test_a_key_is_made_once_and_signs_what_verifies(tmp_path: Path) -> None:
    """The key file is made 0600 on first use and reused; a signature checks out for that manifest
    only: another key, or one changed field, fails."""
    path = tmp_path / "keys" / "worker.pem"
    key = WorkerKey.load_or_create(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert WorkerKey.load_or_create(path).key_id == key.key_id
    m = Manifest(
        job_id="j", name="n", status="SUCCEEDED", spec_digest="s", trace_digest="t", result_digest="r"
    )
    signed = key.sign(m)
    check_signature(signed)
    check_signature(signed, key.public_hex)
    other = WorkerKey.load_or_create(tmp_path / "other.pem")
    with pytest.raises(VerifyFailed, match="not by the trusted key"):
        check_signature(signed, other.public_hex)
    edited = signed.model_copy(update={"manifest": signed.manifest | {"status": "FAILED"}})
    with pytest.raises(VerifyFailed, match="does not match its signature"):
        check_signature(edited)
    assert not check_contents(edited, {}, lambda n: b"").ok


def test_every_finished_job_is_signed_and_verifies_online_and_offline(stack, tmp_path: Path) -> None:
    """A job and its re-run: each has a manifest signed by a registered key; `verify ID` passes
    against the service, `export` + `verify TAR` passes offline; the re-run's manifest holds its
    verdict."""
    c = stack.client()
    job = c.wait(
        c.submit(base_spec(name="signed", params={"epochs": 1, "samples": 32}))["id"], timeout=TIMEOUT
    )
    rerun = c.wait(c.rerun(job["id"])["id"], timeout=TIMEOUT)
    assert job["status"] == rerun["status"] == "SUCCEEDED"
    keys = {k["key_id"]: k["public_key"] for k in c.keys()["data"]}
    for j in (job, rerun):
        signed = SignedManifest.model_validate(c.manifest(j["id"]))
        assert keys[signed.key_id] == signed.public_key
        m = signed.parsed
        assert m.spec_digest == j["spec_digest"] and m.env_digest == j["env_digest"]
        assert m.isolation is not None and m.isolation.mode == j["isolation"]["mode"]
        assert set(m.artifacts) == {a["name"] for a in c.artifacts(j["id"])["data"]}
    assert SignedManifest.model_validate(c.manifest(rerun["id"])).parsed.verdict == "identical"
    listed = _cli(stack, "keys")
    assert f"{signed.key_id}  {signed.public_key}" in listed.stdout, listed.stdout + listed.stderr
    online = _cli(stack, "verify", rerun["id"])
    assert online.returncode == 0 and "OK" in online.stdout, online.stdout + online.stderr
    tar = tmp_path / "job.tar"
    exported = _cli(stack, "export", job["id"], "-o", str(tar))
    assert exported.returncode == 0, exported.stderr
    offline = subprocess.run(
        [sys.executable, "-m", "reprotrain.cli", "verify", str(tar), "--json", "--key", keys[signed.key_id]],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    report = json.loads(offline.stdout)
    assert offline.returncode == 0 and report["ok"], report
    assert {f"artifact {n}" for n in signed.parsed.artifacts} <= set(report["passed"])


def test_verify_names_a_flipped_byte_and_an_edited_manifest_or_result(stack, tmp_path: Path) -> None:
    """One byte flipped in an exported artifact fails that artifact; an edited manifest fails the
    signature; an edited result fails `result`; a forged artifact in the store fails online."""
    c = stack.client()
    job = c.wait(
        c.submit(base_spec(name="signed", params={"epochs": 1, "samples": 32}))["id"], timeout=TIMEOUT
    )
    tar = tmp_path / "job.tar"
    assert _cli(stack, "export", job["id"], "-o", str(tar)).returncode == 0
    state = next(
        n for n in SignedManifest.model_validate(c.manifest(job["id"])).parsed.artifacts if "model" in n
    )

    def flip(data: bytes) -> bytes:
        return data[:100] + bytes([data[100] ^ 1]) + data[101:]

    cases = {
        "artifacts/" + state: (flip, f"artifact {state}"),
        "manifest.json": (lambda d: d.replace(b'"SUCCEEDED"', b'"FAILED"', 1), "signature"),
        "result.json": (lambda d: d.replace(b'"name": "signed"', b'"name": "forged"', 1), "result"),
    }
    for member, (change, failed) in cases.items():
        copy = tmp_path / f"{failed.replace(' ', '_').replace('/', '_')}.tar"
        copy.write_bytes(tar.read_bytes())
        _rewrite(copy, member, change)
        out = subprocess.run(
            [sys.executable, "-m", "reprotrain.cli", "verify", str(copy)],
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )  # fmt: skip
        assert out.returncode == 1, (member, out.stdout, out.stderr)
        assert f"✗ {failed}:" in out.stdout, (member, out.stdout)
    digest = next(a["digest"] for a in c.artifacts(job["id"])["data"] if a["name"] == state)
    stored = Path(stack.env["REPROTRAIN_DATA_DIR"]) / "artifacts" / digest[:2] / digest
    stored.chmod(0o644)
    stored.write_bytes(flip(stored.read_bytes()))
    online = _cli(stack, "verify", job["id"])
    assert (
        online.returncode == 1
        and f"✗ artifact {state}:" in online.stdout
        and "integrity_error" in online.stdout
    )
