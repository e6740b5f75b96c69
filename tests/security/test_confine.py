"""A hostile job on a real stack (API, Celery worker, Redis, SQLite or PostgreSQL) finds nothing of
the service: no database, broker, artifact store, bundle cache, other job or worker code to read
or write, no process to signal, no network; its own directory and temp stay writable."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, base_spec, script_spec

TIMEOUT = 120

# Tries each attack and reports, per target, "blocked: why" or "OPEN: what it got".
HOSTILE = r"""
import json, os, signal, socket, subprocess, sys
t = json.loads(os.environ["TARGETS"])
report = {}

def attempt(name, fn):
    try:
        got = fn()
        report[name] = "blocked: nothing there" if got in (None, b"", [], "") else f"OPEN: {got!r}"[:300]
    except OSError as e:
        report[name] = f"blocked: {type(e).__name__}: {e.strerror}"

def write(path):
    with open(path, "w") as f:
        f.write("forged")
    return path

def read(path):
    with open(path, "rb") as f:
        return f.read(64)

def connect(port, host="127.0.0.1"):
    socket.create_connection((host, port), timeout=2).close()
    return f"connected to {host}:{port}"

def unix(path):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    return f"connected to {path}"

def secrets_in_proc():
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and pid != str(os.getpid()):
            try:
                env = open(f"/proc/{pid}/environ", "rb").read()
            except OSError:
                continue
            found += [pid] if b"REPROTRAIN_" in env or b"hunter2" in env else []
    return found

def signal_others():
    hit = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) not in (1, os.getpid()):
            try:
                os.kill(int(pid), 0)
                hit.append(pid)
            except OSError:
                pass
    return hit

attempt("read database", lambda: read(t["database"]) if t["database"] else None)
attempt("a `sh -c` child reads the database", lambda: subprocess.run(
    ["sh", "-c", f"cat {t['database'] or t['data']}/* 2>/dev/null; ls {t['artifacts']} 2>/dev/null"],
    capture_output=True).stdout)
attempt("write database dir", lambda: write(os.path.join(os.path.dirname(t["database"] or t["data"]), "x")))
attempt("list data dir", lambda: [d for d in os.listdir(t["data"]) if d != "jobs"])  # jobs/: its way
attempt("write artifact store", lambda: write(os.path.join(t["artifacts"], "forged")))
attempt("list artifact store", lambda: os.listdir(t["artifacts"]))
attempt("list job dirs", lambda: (lambda d: d if len(d) > 1 else [])(  # its own is the one there
    [d for d in os.listdir(t["jobs"]) if d != "_slots"]))
attempt("list bundle cache", lambda: os.listdir(os.path.join(t["jobs"], "_bundles")))
attempt("write worker code", lambda: write(os.path.join(t["code"], "reprotrain", "forged.py")))
attempt("write by the interpreter", lambda: write(os.path.join(os.path.dirname(sys.executable), "x")))
attempt("read /etc/shadow", lambda: read("/etc/shadow"))
attempt("redis over tcp", lambda: connect(t["redis_port"]))
attempt("postgres over tcp", lambda: connect(5432))
attempt("postgres socket", lambda: unix("/run/postgresql/.s.PGSQL.5432"))
attempt("another host", lambda: connect(80, "192.0.2.1"))
attempt("secrets in /proc", secrets_in_proc)
attempt("signal a process", signal_others)
os.makedirs("out", exist_ok=True)
open("out/mine.txt", "w").write("own work directory is writable")
open(os.path.join(os.environ.get("TMPDIR", "/tmp"), "scratch"), "w").write("own temp is writable")
print(json.dumps(report))
"""


def _run_hostile(stack, redis_server, tmp_path: Path, network: str) -> tuple[dict, dict]:
    data = Path(stack.env["REPROTRAIN_DATA_DIR"])
    db = stack.env["REPROTRAIN_DATABASE_URL"]
    c = stack.client()
    c.wait(c.submit(base_spec())["id"], timeout=TIMEOUT)  # another job, with a directory to look for
    spec = script_spec(c, tmp_path, HOSTILE, "hostile", "hostile.py")
    targets = {
        "database": db.removeprefix("sqlite:///") if db.startswith("sqlite") else None,
        "data": str(data),
        "artifacts": str(data / "artifacts"),
        "jobs": str(data / "jobs"),
        "code": str(ROOT),
        "redis_port": redis_server.port,
    }
    job = c.submit({**spec, "device": "cpu", "network": network, "env": {"TARGETS": json.dumps(targets)}})
    job = c.wait(job["id"], timeout=TIMEOUT)
    assert job["status"] == "SUCCEEDED", job["error"]
    lines = b"".join(c.logs(job["id"])).decode().strip().splitlines()
    return json.loads(lines[-1]), job


def test_a_hostile_job_reaches_nothing_of_the_service(stack, redis_server, tmp_path: Path) -> None:
    """With `network: none` (the default) every attack is blocked, and the result says how the job
    was confined; the job's own outputs are still collected."""
    report, job = _run_hostile(stack, redis_server, tmp_path, "none")
    isolation = job["isolation"]
    if isolation["mode"] == "none":
        pytest.skip(f"this machine cannot confine jobs: {isolation.get('note')}")
    opened = {k: v for k, v in report.items() if not v.startswith("blocked")}
    assert opened == {}, opened
    assert isolation["network"] == "none"
    assert isolation["mode"] == ("namespaces" if os.geteuid() == 0 else "userns")
    names = {a["name"] for a in stack.client().artifacts(job["id"])["data"]}
    assert any(n.endswith("out/mine.txt") for n in names), names


def test_network_host_is_asked_for_and_recorded(stack, redis_server, tmp_path: Path) -> None:
    """`network: host` reaches the worker's network (here: Redis), and the result says so; the
    filesystem stays confined."""
    report, job = _run_hostile(stack, redis_server, tmp_path, "host")
    isolation = job["isolation"]
    if isolation["mode"] == "none":
        pytest.skip(f"this machine cannot confine jobs: {isolation.get('note')}")
    assert isolation["network"] == "host"
    assert report["redis over tcp"].startswith("OPEN")
    fs = {k: v for k, v in report.items() if "over tcp" not in k and "socket" not in k and "host" not in k}
    assert all(v.startswith("blocked") for v in fs.values()), fs


if sys.platform != "linux":  # pragma: no cover - namespaces are Linux's
    pytest.skip("confinement is Linux only", allow_module_level=True)


@pytest.mark.parametrize("mode", ["namespaces", "userns"])
def test_each_mode_blocks_the_same(run_job, redis_server, tmp_path: Path, mode: str) -> None:
    """Either mode, asked for by name: what a worker hides stays hidden, its code and interpreter
    read-only, no network, no process outside the job. userns is what an ordinary user gets; as
    root it maps root, without capabilities, which owns every file here: only the mounts hold."""
    from reprotrain.job.launcher import ForkRunner

    data = tmp_path / "data"
    (data / "artifacts").mkdir(parents=True)
    (data / "jobs" / "_bundles").mkdir(parents=True)
    (data / "reprotrain.db").write_bytes(b"SQLite format 3\0")
    code = tmp_path / "code"
    code.mkdir()
    (code / "hostile.py").write_text(HOSTILE)
    targets = {"database": str(data / "reprotrain.db"), "data": str(data), "code": str(ROOT)}
    targets |= {"artifacts": str(data / "artifacts"), "jobs": str(data / "jobs")}
    targets["redis_port"] = redis_server.port
    spec = {**base_spec(command=["python", "hostile.py"], env={"TARGETS": json.dumps(targets)}), "params": {}}
    spec.pop("entrypoint")
    try:
        runner = ForkRunner(isolation=mode)
    except Exception as e:  # noqa: BLE001 - a kernel without it: the server says why
        pytest.skip(f"{mode} is not available here: {e}")
    with runner:
        r, job_dir = run_job(spec, runner=runner, code_dir=code, hidden=[data])
    assert r.status == "SUCCEEDED", r.error
    assert r.isolation.mode == mode and r.isolation.network == "none"
    report = json.loads((job_dir / "stdout.log").read_text().strip().splitlines()[-1])
    opened = {k: v for k, v in report.items() if not v.startswith("blocked")}
    assert opened == {}, opened


FALLBACK = r"""
import ctypes, json, os, sys
from reprotrain.job import confine

class NoMountSetattr:  # a kernel (or seccomp filter) without mount_setattr: ENOSYS
    def __init__(self, libc): self.libc = libc
    def __getattr__(self, name):
        if name != "syscall":
            return getattr(self.libc, name)
        return lambda *a: (ctypes.set_errno(38), -1)[1]

confine._libc = NoMountSetattr(confine._libc)
job, data, code = sys.argv[1:4]
plan = confine.job_plan(confine.probe(sys.argv[4], 65534), "none", writable=[job], hidden=[data])
if os.fork() == 0:
    confine.enter(plan)
    out = {}
    for name, path in (("hidden", os.path.join(data, "db")), ("own", os.path.join(job, "x")),
                       ("code", os.path.join(code, "forged"))):
        try:
            open(path, "a").write("x")
            out[name] = "written"
        except OSError as e:
            out[name] = e.strerror
    print(json.dumps(out), flush=True)
    os._exit(0)
os.wait()
"""


@pytest.mark.parametrize("mode", ["namespaces", "userns"])
def test_without_mount_setattr_each_mount_is_remounted(tmp_path: Path, mode: str) -> None:
    """Where mount_setattr is missing (older kernels, older seccomp profiles) the read-only view is
    made mount by mount, with the same outcome: hidden data gone, code read-only, own dir writable."""
    import subprocess

    job, data = tmp_path / "job", tmp_path / "data"
    job.mkdir()
    data.mkdir()
    (data / "db").write_text("secret")
    code = ROOT / "reprotrain"  # the package itself: ROOT may lie under /tmp, the job's own scratch
    argv = [sys.executable, "-c", FALLBACK, str(job), str(data), str(code), mode]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    if out.returncode != 0 and "not available" in out.stderr:
        pytest.skip(f"{mode} is not available here")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["hidden"] == "No such file or directory"
    assert report["own"] == "written" and report["code"] == "Read-only file system"
    assert (data / "db").read_text() == "secret" and not (code / "forged").exists()


def test_a_job_that_needs_the_network_is_told_why_it_failed(run_job, tmp_path: Path) -> None:
    """Without network, a failed name lookup fails the job with what to change in its spec; an
    error that has nothing to do with the network gets no such hint."""
    from reprotrain.isolation import Isolation
    from reprotrain.job.supervisor import offline_hint
    from reprotrain.result import JobError

    (tmp_path / "fetch.py").write_text(
        "import urllib.request\nurllib.request.urlopen('http://example.com')\n"
    )
    spec = {**base_spec(command=["python", "fetch.py"]), "params": {}}
    spec.pop("entrypoint")
    r, _ = run_job(spec, code_dir=tmp_path)
    if r.isolation.mode == "none":
        pytest.skip(f"this machine cannot confine jobs: {r.isolation.note}")
    assert r.status == "FAILED" and r.error.type == "URLError"
    assert 'set `network: "host"`' in r.error.detail
    off = Isolation(mode="namespaces", network="none")
    assert offline_hint(JobError(type="ZeroDivisionError", message="division by zero"), off).detail is None


# Plants, in the job's own (writable) directory, what the worker reads or writes after the job:
# links to the worker's key and data, a link where the worker writes its result, FIFOs where it
# reads; and reports which sockets it inherited (a way back to its supervisor).
PLANTER = r"""
import json, os
t = json.loads(os.environ["TARGETS"])
jd = os.path.dirname(os.environ["REPROTRAIN_EVENTS"])
def points_to(fd):
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:  # the listing's own descriptor, closed by now
        return ""
fds = [fd for fd in os.listdir("/proc/self/fd") if int(fd) > 2]
sockets = [fd for fd in fds if points_to(fd).startswith(("socket:", "pipe:"))]
print(json.dumps({"inherited": sockets}), flush=True)
os.unlink(jd + "/stderr.log"); os.symlink(t["key"], jd + "/stderr.log")
os.symlink(t["data"], jd + "/work")
os.symlink(t["victim"], jd + "/result.json.tmp")
os.unlink(jd + "/events.jsonl"); os.mkfifo(jd + "/events.jsonl")
os.mkfifo("fifo-output")
os.symlink(t["key"], "key-link.txt")
"""


def test_what_a_job_plants_in_its_directory_is_never_followed(stack, tmp_path: Path) -> None:
    """Links to the key and the data directory, a link where the result is written, FIFOs where
    logs are read: the job ends, nothing of the key or the data leaks into logs or artifacts, the
    linked file is untouched, the worker takes the next job; the job holds no socket or pipe of
    its supervisor."""
    data = Path(stack.env["REPROTRAIN_DATA_DIR"])
    victim = tmp_path / "victim.sh"
    victim.write_text("#!/bin/sh\necho untouched\n")
    targets = {"key": str(data / "keys" / "worker-ed25519.pem"), "data": str(data), "victim": str(victim)}
    c = stack.client()
    spec = script_spec(c, tmp_path / "code", PLANTER, "planter", "plant.py")
    job = c.wait(c.submit({**spec, "env": {"TARGETS": json.dumps(targets)}})["id"], timeout=120)
    if job["isolation"]["mode"] == "none":
        pytest.skip("this machine cannot confine jobs")
    assert job["status"] in ("SUCCEEDED", "FAILED"), job
    out = b"".join(c.logs(job["id"])).decode()
    assert out, (job["error"], job["isolation"])
    report = json.loads(out.strip().splitlines()[0])
    assert report["inherited"] == []
    assert b"PRIVATE KEY" not in b"".join(c.logs(job["id"], stream="stderr"))
    names = {a["name"] for a in c.artifacts(job["id"])["data"]}
    assert not any(n.endswith((".db", ".pem", "fifo-output")) or "keys/" in n for n in names), names
    for a in c.artifacts(job["id"])["data"]:
        assert b"PRIVATE KEY" not in c.download(job["id"], a["name"])
    assert victim.read_text() == "#!/bin/sh\necho untouched\n"
    assert not (data / "work").exists() and not (data / "keys" / "work").exists()
    after = c.wait(
        c.submit(base_spec(name="after-planter", params={"epochs": 1, "samples": 8}))["id"], timeout=120
    )
    assert after["status"] == "SUCCEEDED", after["error"]


FORGER = """
import reprotrain.job.fingerprint as fp

_real = fp.collect


def _forged(**kw):
    got = _real(**kw)
    torch = got.torch.model_copy(update={"version": "9.9.9"})
    return got.model_copy(update={"torch": torch, "host": got.host.model_copy(update={"hostname": "forged"})})


def train(ctx):
    fp.collect = _forged  # the job process reports its environment after user code ran
    return {"done": 1}
"""


def test_a_job_cannot_rewrite_the_environment_it_runs_in(run_job, tmp_path: Path) -> None:
    """User code patching the job process's fingerprint collection: the static environment and the
    host in the result are the fork server's own reading, so env_digest is the honest one."""
    import socket

    import torch

    (tmp_path / "forger.py").write_text(FORGER)
    honest, _ = run_job(base_spec(), code_dir=ROOT)
    r, _ = run_job({**base_spec(entrypoint="forger:train"), "params": {}}, code_dir=tmp_path)
    assert r.status == "SUCCEEDED", r.error
    assert r.fingerprint.torch.version == torch.__version__ != "9.9.9"
    assert r.fingerprint.host.hostname == socket.gethostname()
    assert r.env_digest == honest.env_digest
