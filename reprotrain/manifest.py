"""Signed run manifests: what a finished job produced, signed by the worker that ran it.

A manifest lists every digest a run is judged by (spec, bundle, inputs, environment, outputs,
trace, the stored result, a re-run's verdict) and how the job was confined. The worker signs its
canonical JSON with its ed25519 key; the public key is registered in the store, so a manifest
checks out against the service (`reprotrain verify JOB`) or, exported with its artifacts, offline
(`reprotrain verify job.tar`): the signature, then every digest recomputed from the bytes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import Field

from reprotrain.errors import ReprotrainError, VerifyFailed
from reprotrain.hashing import HASH_NAME, canonical_json, digest_bytes, digest_json
from reprotrain.isolation import Isolation
from reprotrain.model import Stored

SCHEMA = "reprotrain.manifest/1"


class ArtifactEntry(Stored):
    digest: str
    size: int


class Manifest(Stored):
    """What is signed: the digests a run is judged by. Hex digests are blake3 unless named."""

    format: str = SCHEMA
    hash: str = HASH_NAME
    job_id: str
    name: str
    status: str
    rerun_of: str | None = None
    spec_digest: str
    bundle: str | None = None  # sha256:…, the uploaded archive's digest
    inputs: dict[str, str] = Field(default_factory=dict)  # name → digest
    env_digest: str | None = None
    isolation: Isolation | None = None
    artifacts: dict[str, ArtifactEntry] = Field(default_factory=dict)  # artifact name → digest, size
    trace_digest: str  # of the trace's canonical JSON, as GET /v1/jobs/{id}/trace returns it
    result_digest: str  # of the stored result's canonical JSON
    verdict: str | None = None  # a re-run's verdict against rerun_of
    verdict_digest: str | None = None


class SignedManifest(Stored):
    """The manifest exactly as signed (a plain mapping: every byte of it is covered), its signer."""

    manifest: dict[str, Any]
    key_id: str
    public_key: str  # hex of the raw ed25519 public key (also in the store, under key_id)
    signature: str  # hex

    @property
    def parsed(self) -> Manifest:
        return Manifest.model_validate(self.manifest)


class WorkerKey:
    """A worker's signing key, made on first start and kept (0600) where the worker keeps its data."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self.private = private
        self.public_hex = raw_public(private.public_key()).hex()
        self.key_id = key_id(self.public_hex)

    @classmethod
    def load_or_create(cls, path: Path) -> WorkerKey:
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise VerifyFailed(f"{path} is not an ed25519 private key")
            return cls(key)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        try:
            os.link(tmp, path)  # two workers starting at once: the first key wins, both use it
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        return cls.load_or_create(path)

    def sign(self, manifest: Manifest) -> SignedManifest:
        body = manifest.model_dump(mode="json")
        signature = self.private.sign(canonical_json(body)).hex()
        return SignedManifest(
            manifest=body, key_id=self.key_id, public_key=self.public_hex, signature=signature
        )


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_hex: str) -> str:
    return digest_bytes(bytes.fromhex(public_hex))[:32]


def build(
    result: dict[str, Any],
    artifacts: list[tuple[str, str, int]],
    *,
    rerun_of: str | None,
    verdict: dict[str, Any] | None,
) -> Manifest:
    """The manifest of one finished job, from its result as stored and its artifact rows."""
    return Manifest(
        job_id=result["job_id"],
        name=result["name"],
        status=result["status"],
        rerun_of=rerun_of,
        spec_digest=result["spec_digest"],
        bundle=(result.get("spec") or {}).get("bundle"),
        inputs={n: i["digest"] for n, i in (result.get("inputs") or {}).items()},
        env_digest=result.get("env_digest"),
        isolation=result.get("isolation"),
        artifacts={n: ArtifactEntry(digest=d, size=s) for n, d, s in artifacts},
        trace_digest=digest_json(result.get("trace") or []),
        result_digest=digest_json(result),
        verdict=(verdict or {}).get("verdict"),
        verdict_digest=digest_json(verdict) if verdict else None,
    )


def check_signature(signed: SignedManifest, trusted_public_hex: str | None = None) -> None:
    """The signature is the key's over this very manifest; with `trusted_public_hex`, the key is
    that one. Raises VerifyFailed naming what does not check out."""
    if trusted_public_hex is not None and signed.public_key != trusted_public_hex:
        trusted = key_id(trusted_public_hex)
        raise VerifyFailed(f"signed by key {signed.key_id}, not by the trusted key {trusted}")
    if key_id(signed.public_key) != signed.key_id:
        raise VerifyFailed(f"key id {signed.key_id} does not name the public key it came with")
    try:
        public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(signed.public_key))
        public.verify(bytes.fromhex(signed.signature), canonical_json(signed.manifest))
    except (InvalidSignature, ValueError):
        raise VerifyFailed(
            f"the manifest of job {signed.manifest.get('job_id')} does not match its signature: it was "
            f"edited, or not signed by key {signed.key_id}"
        ) from None


class Checked(Stored):
    """What `verify` found: each check's name and, where it failed, why."""

    job_id: str
    key_id: str
    passed: list[str] = Field(default_factory=list)
    failed: dict[str, str] = Field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


def check_contents(
    signed: SignedManifest, stored: dict[str, Any], read: Any, trusted_public_hex: str | None = None
) -> Checked:
    """Check a signed manifest against the bytes: its signature, the stored result and verdict
    (`stored`: {"result": …, "verdict": …}), and every artifact, recomputed from what
    `read(name)` gives (bytes, or raises OSError / a ReprotrainError saying why there are none)."""
    out = Checked(job_id=str(signed.manifest.get("job_id")), key_id=signed.key_id)
    try:
        check_signature(signed, trusted_public_hex)
    except VerifyFailed as e:
        out.failed["signature"] = e.message
        return out  # nothing in an unsigned manifest is evidence of anything
    out.passed.append("signature")
    m = signed.parsed
    result, verdict = stored.get("result") or {}, stored.get("verdict")
    for name, want, got in (
        ("result", m.result_digest, digest_json(result)),
        ("trace", m.trace_digest, digest_json(result.get("trace") or [])),
        ("verdict", m.verdict_digest, digest_json(verdict) if verdict else None),
    ):
        _record(out, name, want, got, "does not match the manifest's digest: it was changed")
    for name, entry in sorted(m.artifacts.items()):
        try:
            data = read(name)
        except ReprotrainError as e:
            out.failed[f"artifact {name}"] = f"not readable: {e.code}: {e.message}"
            continue
        except (OSError, KeyError) as e:
            out.failed[f"artifact {name}"] = f"not readable: {e}"
            continue
        got = digest_bytes(data) if len(data) == entry.size else f"{len(data)} bytes, not {entry.size}"
        _record(out, f"artifact {name}", entry.digest, got, "bytes do not match the manifest's digest")
    return out


def _record(out: Checked, name: str, want: str | None, got: str | None, why: str) -> None:
    if want == got:
        out.passed.append(name)
    else:
        out.failed[name] = f"{why} ({got} ≠ {want})"
