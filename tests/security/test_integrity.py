"""What is stored stays what was stored: artifacts are written once and read-only, checked against
their digest when served and when a verdict reads them, and a changed bundle cache is never run."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from reprotrain.artifacts import ArtifactStore
from reprotrain.errors import ApiError, ArtifactTampered
from reprotrain.hashing import digest_bytes
from tests.helpers import base_spec, script_spec

TIMEOUT = 120


def _forge(path: Path) -> None:
    """What a hostile host process (or a job, were it not confined) does to a stored file."""
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_stored_artifact_is_read_only_and_a_forged_one_is_replaced_on_put(tmp_path: Path) -> None:
    """put() leaves the file read-only; a forged copy under the digest is found and replaced."""
    store = ArtifactStore(tmp_path / "store")
    src = tmp_path / "model.bin"
    src.write_bytes(b"weights" * 1000)
    digest = digest_bytes(src.read_bytes())
    path = store.put(src, digest)
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    _forge(path)
    with pytest.raises(ArtifactTampered) as e:
        store.verified(digest, "outputs/model.bin")
    assert e.value.code == "integrity_error" and "outputs/model.bin" in e.value.message
    store.put(src, digest)
    assert store.verified(digest) == path and path.read_bytes() == src.read_bytes()


def test_a_forged_artifact_is_never_served_and_marks_every_job_holding_it(stack) -> None:
    """Two jobs share an output's digest; one byte of it flipped in the store: download answers 409
    integrity_error and both jobs carry integrity_error; a re-run that writes the same bytes again
    puts the good copy back (the mark stays: it is history)."""
    c = stack.client()
    spec = base_spec(name="integrity", params={"epochs": 1, "samples": 32})
    first = c.wait(c.submit(spec)["id"], timeout=TIMEOUT)
    second = c.wait(c.submit(spec)["id"], timeout=TIMEOUT)
    assert first["status"] == second["status"] == "SUCCEEDED", (first["error"], second["error"])
    (state,) = [a for a in c.artifacts(first["id"])["data"] if a["name"].endswith("model.safetensors")]
    assert state["digest"] in {a["digest"] for a in c.artifacts(second["id"])["data"]}
    good = c.download(first["id"], state["name"])
    _forge(_stored(stack, state["digest"]))
    with pytest.raises(ApiError) as e:
        c.download(first["id"], state["name"])
    assert (e.value.status, e.value.code) == (409, "integrity_error")
    for job in (first, second):
        marked = c.get(job["id"])["integrity_error"]
        assert marked["digest"] == state["digest"] and marked["actual"] != state["digest"]
    rerun = c.wait(c.rerun(first["id"])["id"], timeout=TIMEOUT)
    assert rerun["status"] == "SUCCEEDED", rerun["error"]
    assert c.download(first["id"], state["name"]) == good
    assert c.get(first["id"])["integrity_error"]["digest"] == state["digest"]


def test_a_verdict_never_reads_forged_bytes(stack, tmp_path: Path) -> None:
    """Two runs whose logs differ: the verdict reads both logs to find the first differing line; one
    forged in the store makes the verdict incomparable, naming integrity_error, and marks the job."""
    noisy = "import torch\nfor step in range(20):\n    print(step, torch.rand(1).item())\n"
    c = stack.client()
    spec = script_spec(c, tmp_path, noisy, "forged-log", "noisy.py")
    a = c.wait(c.submit({**spec, "seed": 1})["id"], timeout=TIMEOUT)
    b = c.wait(c.submit({**spec, "seed": 2})["id"], timeout=TIMEOUT)
    assert a["status"] == b["status"] == "SUCCEEDED", (a["error"], b["error"])
    assert c.compare(a["id"], b["id"])["verdict"] == "diverged"  # intact: the logs are read
    (log,) = [x for x in c.artifacts(a["id"])["data"] if x["name"].endswith("stdout.log")]
    _forge(_stored(stack, log["digest"]))
    v = c.compare(a["id"], b["id"])
    assert v["verdict"] == "incomparable" and "integrity_error" in v["reason"], v
    assert c.get(a["id"])["integrity_error"]["digest"] == log["digest"]


def _stored(stack, digest: str) -> Path:
    return Path(stack.env["REPROTRAIN_DATA_DIR"]) / "artifacts" / digest[:2] / digest


def test_a_changed_bundle_cache_is_extracted_again_and_a_changed_archive_fails_the_job(
    stack, tmp_path: Path
) -> None:
    """The worker's extracted copy of a bundle, rewritten between two runs, is not what the second
    run executes; an archive whose bytes no longer hash to its digest fails the job, unextracted."""
    c = stack.client()
    spec = script_spec(c, tmp_path, "print('the original text')\n", "victim", "victim.py")
    digest = spec["bundle"]
    first = c.wait(c.submit(spec)["id"], timeout=TIMEOUT)
    assert first["status"] == "SUCCEEDED", first["error"]
    data = Path(stack.env["REPROTRAIN_DATA_DIR"])
    cached = data / "jobs" / "_bundles" / digest.removeprefix("sha256:") / "victim.py"
    cached.write_text("print('the attacker text')\n")
    second = c.wait(c.submit(spec)["id"], timeout=TIMEOUT)
    assert b"the original text" in b"".join(c.logs(second["id"]))
    _forge(data / "artifacts" / "bundles" / f"{digest.removeprefix('sha256:')}.tar.gz")
    cached.write_text("print('the attacker text')\n")  # forces extraction from the archive
    third = c.wait(c.submit(spec)["id"], timeout=TIMEOUT)
    assert third["status"] == "FAILED"
    assert third["error"]["type"] == "ArtifactTampered" and "bundle archive" in third["error"]["message"]
