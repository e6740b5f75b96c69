"""Confinement of a job process and of every process it starts, before any user code runs.

The forked job child is single-threaded, so it can enter namespaces of its own without exec'ing
(what bubblewrap does): a mount namespace in which the whole filesystem is read-only but for the
job's own directories and a private /tmp, /var/tmp and /dev/shm, with the worker's data, the
fork server's socket and home directories covered; a PID namespace with a /proc of its own, so
no process outside the job can be named, signalled or read; with `network: none`, a network
namespace that has only loopback; and no capabilities (as root: another uid). The process that
entered stays outside the PID namespace as the relay: it forwards SIGTERM and SIGINT, and exits
as the job did, so the fork server and the supervisor see one process per job as before.

Linux only; `reprotrain.isolation` says what each mode gives.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import os
import shutil
import signal
import socket
import struct
import sys
from pathlib import Path

from reprotrain.files import chown_tree
from reprotrain.isolation import Isolation, Mode, Network, Plan

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
SYS_MOUNT_SETATTR = 442  # one number on every architecture since Linux 5.12
AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY = -100, 0x8000, 1
PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 38, 47, 4
SCRATCH = ("/tmp", "/var/tmp", "/dev/shm")  # the job's own temp: fresh, empty, writable
SECRETS = ("/etc/shadow", "/etc/gshadow", "/etc/ssh")  # covered too: root without caps owns them

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class ConfineError(OSError):
    """A step of the confinement failed: the job must not run."""


def _ok(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise ConfineError(err, f"{what}: {os.strerror(err)}")


def _mount(src: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = [None if s is None else s.encode() for s in (src, target, fstype, data)]
    _ok(_libc.mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), enc[3]), f"mount {target}")


class _MountAttr(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in ("attr_set", "attr_clr", "propagation", "userns_fd")]


def _set_readonly(path: str, readonly: bool, recursive: bool) -> None:
    """Flip the read-only flag of the mount at `path` (and, recursive, of every mount below it)."""
    attr = _MountAttr(MOUNT_ATTR_RDONLY if readonly else 0, 0 if readonly else MOUNT_ATTR_RDONLY, 0, 0)
    ret = _libc.syscall(
        SYS_MOUNT_SETATTR, AT_FDCWD, path.encode(), AT_RECURSIVE if recursive else 0,
        ctypes.byref(attr), ctypes.sizeof(attr),
    )  # fmt: skip
    if ret == 0:
        return
    err = ctypes.get_errno()
    if err not in (errno.ENOSYS, errno.EPERM):  # EPERM: a seccomp filter that predates the call
        raise ConfineError(err, f"mount_setattr {path}: {os.strerror(err)}")
    for point, flags in _mounts(path, recursive):  # the older way: one remount per mount
        flags = flags | MS_RDONLY if readonly else flags & ~MS_RDONLY
        _mount(None, point, None, MS_REMOUNT | MS_BIND | flags)


_OPTION_FLAGS = {"ro": MS_RDONLY, "nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC}
_OPTION_FLAGS |= {"noatime": 1024, "nodiratime": 2048, "relatime": 1 << 21, "strictatime": 1 << 24}


def _mounts(path: str, recursive: bool) -> list[tuple[str, int]]:
    """Mount points at (or under) path with their per-mount flags, parents first; a remount must
    repeat the flags a user namespace cannot drop (nosuid, nodev, …)."""
    found: dict[str, int] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        point = fields[4].encode().decode("unicode_escape")
        if point == path or (recursive and point.startswith(path.rstrip("/") + "/")):
            found[point] = sum(_OPTION_FLAGS.get(o, 0) for o in fields[5].split(","))  # the top one wins
    return sorted(found.items(), key=lambda item: item[0].count("/"))


def _drop_capabilities() -> None:
    """No capabilities left in any set, and none to gain by exec (no_new_privs)."""

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [(n, ctypes.c_uint32) for n in ("effective", "permitted", "inheritable")]

    _ok(_libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear ambient capabilities")
    _ok(_libc.capset(ctypes.byref(Header(0x20080522, 0)), (Data * 2)()), "capset")
    _ok(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


def _loopback_up() -> None:
    """A new network namespace has `lo`, down; jobs that talk to themselves (gloo, a local
    server in a test) need it up."""
    siocgifflags, siocsifflags = 0x8913, 0x8914
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = fcntl.ioctl(s, siocgifflags, struct.pack("16sH14x", b"lo", 0))
        flags = struct.unpack("16sH14x", ifr)[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sH14x", b"lo", flags | 1))


def _user_namespace(uid: int, gid: int) -> None:
    """Map this process's own uid and gid, and nothing else, into its new user namespace."""
    Path("/proc/self/setgroups").write_text("deny")
    Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
    Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")


def _cover(path: str, kind: str) -> None:
    """Hide a path: an empty tmpfs over a directory (writable for `scratch`), /dev/null over a file."""
    if not os.path.lexists(path):
        return
    if os.path.isdir(path):
        opts = "mode=1777,size=50%" if kind == "scratch" else "mode=755,size=1m"
        _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, opts)
    else:
        _mount("/dev/null", path, None, MS_BIND)


def _expose(path: str, fd: int, writable: bool) -> None:
    """Bind the original `path` (held open as fd) back at its place, over whatever covers it."""
    is_dir = os.path.isdir(f"/proc/self/fd/{fd}")
    try:
        if is_dir:
            os.makedirs(path, exist_ok=True)
        elif not os.path.lexists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
    except OSError as e:
        raise ConfineError(e.errno or 0, f"cannot make a mount point for {path}: {e.strerror}") from e
    _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND)
    _set_readonly(path, readonly=not writable, recursive=False)


def _steps(plan: Plan) -> list[tuple[str, str]]:
    """(path, what) in an order where each step lands on top of the ones around it: shallowest
    first, so a directory kept inside a hidden one is bound after the cover, and vice versa."""
    steps = [(p, "scratch") for p in [*SCRATCH, *plan.scratch]]
    steps += [(p, "hide") for p in [*plan.hidden, *SECRETS]]
    steps += [(p, "read") for p in plan.readable] + [(p, "write") for p in plan.writable]
    order = {"scratch": 0, "hide": 1, "read": 2, "write": 3}
    return sorted(
        {(os.path.normpath(p), k) for p, k in steps}, key=lambda s: (s[0].count("/"), order[s[1]], s[0])
    )


def enter(plan: Plan) -> None:
    """Confine this process as the plan says; returns in the confined job (PID 2 of its namespace).

    The caller (the job process) is single-threaded and runs no user code yet. Any failure raises
    ConfineError before user code could run: a job never runs less confined than its plan says."""
    if plan.mode == "none":
        return
    uid, gid = os.getuid(), os.getgid()
    flags = CLONE_NEWNS | CLONE_NEWPID | (CLONE_NEWNET if plan.network == "none" else 0)
    _ok(_libc.unshare(flags | (CLONE_NEWUSER if plan.mode == "userns" else 0)), "unshare")
    if plan.mode == "userns":
        _user_namespace(uid, gid)
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we do here shows outside, nor back
    # held open before anything covers them; opened in this namespace, so binds can take them
    paths = [os.path.normpath(p) for p in [*plan.readable, *plan.writable]]
    keep = {p: os.open(p, os.O_PATH) for p in paths if os.path.exists(p)}
    _set_readonly("/", readonly=True, recursive=True)
    covers = []
    for path, kind in _steps(plan):
        if kind in ("scratch", "hide"):
            _cover(path, kind)
            if kind == "hide" and os.path.isdir(path):
                covers.append(path)
        elif path in keep:
            under = any(path.startswith(c.rstrip("/") + "/") for c in [*covers, *SCRATCH, *plan.scratch])
            if kind == "write" or under:
                _expose(path, keep[path], writable=kind == "write")
    for path in covers:  # the hidden directories: empty and read-only
        _set_readonly(path, readonly=True, recursive=False)
    if plan.network == "none":
        _loopback_up()
    if plan.uid is not None:
        for path in plan.writable:
            chown_tree(path, plan.uid, plan.uid)
    for fd in keep.values():
        os.close(fd)
    _relay_or_continue(plan)


def _relay_or_continue(plan: Plan) -> None:
    """Start PID 1 of the new namespace, then the job in it; this process relays their end.

    PID 1 is `sleep`, exec'd (cheap: no copy of this process): the job must not be PID 1 itself,
    which ignores every signal it has no handler for (a job could not even kill itself). The job
    reaps its own orphans (it is their subreaper); PID 1 only holds the namespace, and is killed
    when the job ends, taking whatever the job left behind with it."""
    sys.stdout.flush()
    sys.stderr.flush()
    if SLEEP is None:
        raise ConfineError(errno.ENOENT, "no `sleep` program to be PID 1 of the job's namespace")
    init = os.posix_spawn(SLEEP, [SLEEP, "infinity"], {}, setsigdef=FORWARDED)
    job = os.fork()
    if job == 0:
        _become_job(plan)
        return
    for sig in FORWARDED:  # the supervisor signals the whole group; a lone signal reaches us only
        signal.signal(sig, lambda s, _f: _forward(job, s))
    _, status = os.waitpid(job, 0)
    _forward(init, signal.SIGKILL)
    os.waitpid(init, 0)
    code = os.waitstatus_to_exitcode(status)
    if code < 0:  # end as the job did, so the supervisor sees the same signal
        if -code != signal.SIGKILL:
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code & 0xFF)


SLEEP = shutil.which("sleep")
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def _forward(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _become_job(plan: Plan) -> None:
    """In the job, inside its PID namespace: its own /proc, then no privileges left."""
    from reprotrain.procs import die_with_parent

    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _drop_privileges(plan)
    die_with_parent()  # after the uid change, which clears the parent-death signal


def _drop_privileges(plan: Plan) -> None:
    if plan.uid is not None:
        os.setgroups([])
        os.setresgid(plan.uid, plan.uid, plan.uid)
        os.setresuid(plan.uid, plan.uid, plan.uid)  # all capabilities go with uid 0
    _drop_capabilities()


@functools.cache  # the worker's interpreter and path do not change while it runs
def python_paths() -> tuple[str, ...]:
    """What a job must read to run Python at all: the interpreter's prefixes, every directory on
    this interpreter's path, and this package's own folders (an editable install maps several)."""
    import importlib.util

    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(sys.executable)}
    paths |= {p for p in sys.path if p and os.path.exists(p)}
    for name in ("reprotrain", "reprotrain.service", "reprotrain.worker", "reprotrain.examples"):
        spec = importlib.util.find_spec(name)
        paths |= set(spec.submodule_search_locations or []) if spec else set()
    return tuple(sorted({os.path.realpath(p) for p in paths} | paths))


def job_plan(
    isolation: Isolation,
    network: Network,
    *,
    writable: list[str] = (),  # type: ignore[assignment]
    readable: list[str] = (),  # type: ignore[assignment]
    hidden: list[str] = (),  # type: ignore[assignment]
) -> Plan:
    """One job's plan in the mode this worker gives: the job's own paths, the interpreter readable,
    the home directory an empty one of the job's own."""
    if isolation.mode == "none":
        return Plan(mode="none", network="host", note=isolation.note)
    return Plan(
        mode=isolation.mode,
        network=network,
        uid=isolation.uid,
        writable=list(writable),
        readable=[*python_paths(), *readable],
        # /run holds local services' sockets (PostgreSQL's among them): no network, none of them
        hidden=[*hidden, *(["/run"] if network == "none" else [])],
        scratch=[str(Path.home())],
        note=isolation.note,
    )


def probe(want: str, job_uid: int) -> Isolation:
    """The strongest mode this process can give its jobs (or only `want`, unless it is "auto").

    Each candidate is tried for real in a throwaway child; namespaces mode then checks that the
    job uid can read the interpreter and this package, and keeps the uid (without capabilities)
    when it cannot. Raises ConfineError when `want` names a mode that fails here."""
    if want == "none":
        return Isolation(mode="none", network="host", note="confinement is off (REPROTRAIN_ISOLATION=none)")
    candidates: list[Mode] = ["namespaces", "userns"] if want == "auto" else [want]  # type: ignore[list-item]
    if want == "auto" and os.geteuid() != 0:
        candidates = ["userns"]
    failures = []
    for mode in candidates:
        uids: list[int | None] = [job_uid, None] if mode == "namespaces" else [None]
        for uid in uids:
            error = _try(job_plan(Isolation(mode=mode, network="none", uid=uid), "none"))
            if error is None:
                note = None
                if mode == "namespaces" and uid is None:
                    note = f"uid {job_uid} cannot read the interpreter: jobs keep uid 0, without capabilities"
                return Isolation(mode=mode, network="none", uid=uid, note=note)
            failures.append(f"{mode}{'' if uid is None else f' as uid {uid}'}: {error}")
    if want != "auto":
        raise ConfineError(0, f"isolation {want!r} is not available here: {'; '.join(failures)}")
    note = "this kernel allows no confinement: " + "; ".join(failures)
    return Isolation(mode="none", network="host", note=note)


def _try(plan: Plan) -> str | None:
    """Enter the plan in a child that then reads what a job must read; None when that worked."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            enter(plan)
            import reprotrain

            for path in (sys.executable, os.__file__, reprotrain.__file__):
                with open(path, "rb") as f:
                    f.read(1)
            os._exit(0)
        except BaseException as e:  # noqa: BLE001 - report and leave, whatever happened
            os.write(w, f"{type(e).__name__}: {e}".encode()[:500])
            os._exit(1)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        message = f.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) == 0:
        return None
    return message or f"exit status {os.waitstatus_to_exitcode(status)}"
