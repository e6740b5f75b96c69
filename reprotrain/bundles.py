"""Code bundles: content-addressed storage of uploaded tar.gz archives, their validation and extraction."""

from __future__ import annotations

import contextlib
import fnmatch
import gzip
import hashlib
import io
import os
import re
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from reprotrain.errors import BundleInvalid, BundleTooLarge

DIGEST_PREFIX = "sha256:"
_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
_CHUNK = 1 << 20
_OVERHEAD_PER_MEMBER = 4096  # header, padding and long-name / pax records a member may add
_MAX_LINK_HOPS = 40
_SPECIAL = {tarfile.CHRTYPE: "character device", tarfile.BLKTYPE: "block device", tarfile.FIFOTYPE: "FIFO"}
# What a broken gzip or tar stream raises; plain OSError (disk full, permissions) is not the bundle's fault.
_CORRUPT = (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error)


def _invalid(message: str, cls: type[BundleInvalid] = BundleInvalid) -> BundleInvalid:
    return cls(message, field="bundle")


def _refuse(member: tarfile.TarInfo, why: str, cls: type[BundleInvalid] = BundleInvalid) -> BundleInvalid:
    return _invalid(f"member {member.name!r} {why}", cls)


class _CappedReader:
    """A read-only stream that raises BundleTooLarge once more than `limit` bytes have come through it."""

    def __init__(self, raw: BinaryIO, limit: int) -> None:
        self.raw, self.limit, self.count = raw, limit, 0

    def read(self, n: int = -1) -> bytes:
        room = self.limit - self.count + 1  # one byte more than allowed, to notice the excess
        data = self.raw.read(room if n < 0 else min(n, room))
        self.count += len(data)
        if self.count > self.limit:
            raise _invalid(f"bundle's tar stream unpacks to more than {self.limit} bytes", BundleTooLarge)
        return data


@contextlib.contextmanager
def _open_tar(path: Path, *, max_unpacked_bytes: int, max_members: int) -> Iterator[tarfile.TarFile]:
    """The archive at path as a streaming TarFile (gzip or plain), with stream errors made BundleInvalid.

    The decompressed stream is capped (so a gzip bomb in headers or trailing padding cannot run away) and
    read to its end on a clean exit, so gzip's length and CRC trailer are checked too.
    """
    limit = max_unpacked_bytes + (max_members + 2) * _OVERHEAD_PER_MEMBER
    with contextlib.ExitStack() as stack:
        fh = stack.enter_context(open(path, "rb"))
        magic = fh.read(2)
        if not magic:
            raise _invalid("bundle is empty")
        fh.seek(0)
        raw = stack.enter_context(gzip.GzipFile(fileobj=fh, mode="rb")) if magic == b"\x1f\x8b" else fh
        reader = _CappedReader(raw, limit)
        try:
            tf = stack.enter_context(tarfile.open(fileobj=reader, mode="r|", tarinfo=_RawChecked))
        except tarfile.ReadError:
            raise _invalid("not a tar.gz archive") from None
        except _CORRUPT as e:
            raise _invalid(f"truncated or corrupt archive: {e}") from None
        try:
            yield tf
            while reader.read(_CHUNK):
                pass
        except _CORRUPT as e:
            where = f" after member {tf.members[-1].name!r}" if tf.members else ""
            raise _invalid(f"truncated or corrupt archive{where}: {e}") from None


def _parts(name: str) -> list[str]:
    return [p for p in name.split("/") if p not in ("", ".")]


def _resolve(parts: list[str], links: dict[str, str]) -> list[str] | None:
    """Resolve a path inside the archive, following the archive's own symlinks; None if it leaves the root."""
    out: list[str] = []
    todo, hops = list(parts), 0
    while todo:
        part = todo.pop(0)
        if part == "..":
            if not out:
                return None
            out.pop()
        elif part not in ("", "."):
            out.append(part)
            if (target := links.get("/".join(out))) is not None:
                hops += 1
                if hops > _MAX_LINK_HOPS or target.startswith("/"):
                    return None
                out.pop()
                todo = target.split("/") + todo
    return out


class _RawChecked(tarfile.TarInfo):
    """A member whose raw header bytes were checked as well: tarfile cuts a name at its first NUL,
    so `a\\0b.py` would pass as `a`; the bytes after that NUL are a reason to refuse the member."""

    raw_problem: str | None = None

    @classmethod
    def frombuf(cls, buf: bytes, encoding: str, errors: str) -> _RawChecked:
        obj = super().frombuf(buf, encoding, errors)
        for field, what in ((buf[0:100], "name"), (buf[157:257], "link target"), (buf[345:500], "name")):
            if b"\0" in field.rstrip(b"\0"):
                obj.raw_problem = f"has a NUL byte in its {what}"
        return obj  # type: ignore[return-value]

    def _proc_gnulong(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:  # type: ignore[override]
        """tarfile's own (Python 3.11), with the long name's raw bytes checked before they are cut."""
        buf = tarfile_.fileobj.read(self._block(self.size))  # type: ignore[union-attr, attr-defined]
        try:
            nxt = self.fromtarfile(tarfile_)
        except tarfile.HeaderError as e:
            raise tarfile.SubsequentHeaderError(str(e)) from None
        nxt.offset = self.offset
        text = tarfile.nts(buf, tarfile_.encoding, tarfile_.errors)  # type: ignore[attr-defined, arg-type]
        what = "name" if self.type == tarfile.GNUTYPE_LONGNAME else "link target"
        if what == "name":
            nxt.name = text.removesuffix("/") if nxt.isdir() else text
        else:
            nxt.linkname = text
        if b"\0" in buf[: self.size].rstrip(b"\0"):
            nxt.raw_problem = f"has a NUL byte in its {what}"  # type: ignore[attr-defined]
        return nxt


def _check_member(m: tarfile.TarInfo, seen: dict[str, tarfile.TarInfo], links: dict[str, str]) -> None:
    """Refuse one member on its own and against the members before it; record it in seen and links."""
    if getattr(m, "raw_problem", None):
        raise _refuse(m, str(m.raw_problem))  # type: ignore[attr-defined]
    for text, what in ((m.name, "name"), (m.linkname, "link target")):
        if "\x00" in text:
            raise _refuse(m, f"has a NUL byte in its {what}")
        if "\\" in text:
            raise _refuse(m, f"has a backslash in its {what}")
        if bad := next((c for c in text if ord(c) < 32 or ord(c) == 127), None):
            raise _refuse(m, f"has a control character ({bad!r}) in its {what}")
    if m.name.startswith("/"):
        raise _refuse(m, "is an absolute path")
    parts = _parts(m.name)
    key = "/".join(parts)
    if ".." in parts:
        raise _refuse(m, "has a '..' path component")
    if not (m.isreg() or m.isdir() or m.issym() or m.islnk()):
        raise _refuse(m, f"is a {_SPECIAL.get(m.type, f'member of unsupported type {m.type!r}')}")
    if not parts and not m.isdir():
        raise _refuse(m, "names the archive root")
    if key in seen:
        raise _refuse(m, "appears twice")
    if (m.issym() or m.islnk()) and (not m.linkname or m.linkname.startswith("/")):
        raise _refuse(m, f"links to {m.linkname!r}, which is absolute or empty")
    if m.islnk():  # a hard link's target is relative to the archive root and must be an earlier file
        target = seen.get("/".join(_parts(m.linkname)))
        if ".." in _parts(m.linkname) or target is None or not target.isreg():
            raise _refuse(m, f"hard-links to {m.linkname!r}, which is not an earlier file in the bundle")
    if m.issym():
        links[key] = m.linkname
    seen[key] = m


def _scan(tf: tarfile.TarFile, *, max_unpacked_bytes: int, max_members: int) -> None:
    """Check every member, the sizes and the count; then where each member and symlink lands."""
    seen: dict[str, tarfile.TarInfo] = {}
    links: dict[str, str] = {}
    total = 0
    for count, m in enumerate(tf, start=1):
        if count > max_members:
            raise _refuse(m, f"is one more than the {max_members} members a bundle may have")
        _check_member(m, seen, links)
        total += m.size if m.isreg() else 0
        if total > max_unpacked_bytes:
            raise _refuse(m, f"takes the bundle past {max_unpacked_bytes} bytes unpacked", BundleTooLarge)
    if not seen:
        raise _invalid("bundle is empty")
    for key, m in seen.items():
        parts = key.split("/")
        for parent in ("/".join(parts[:i]) for i in range(1, len(parts))):
            if parent in seen and not (seen[parent].isdir() or seen[parent].issym()):
                raise _refuse(m, f"is inside {seen[parent].name!r}, which is not a directory")
    for key, target in links.items():
        if _resolve([*_parts(key)[:-1], *target.split("/")], links) is None:
            raise _refuse(seen[key], f"is a symlink to {target!r}, which points outside the bundle or loops")


def validate_bundle(path: Path, *, max_unpacked_bytes: int, max_members: int = 20000) -> None:
    """Raise BundleInvalid (or BundleTooLarge) unless the archive at path is safe to extract."""
    with _open_tar(path, max_unpacked_bytes=max_unpacked_bytes, max_members=max_members) as tf:
        _scan(tf, max_unpacked_bytes=max_unpacked_bytes, max_members=max_members)


def archive_digest(path: Path) -> str:
    """A stored archive's digest as a spec names it ("sha256:<hex>"), from its bytes now."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return DIGEST_PREFIX + h.hexdigest()


def _spool(chunks: Iterable[bytes], fd: int, max_bytes: int) -> tuple[str, int]:
    """Write chunks to fd, hashing and counting; BundleTooLarge before a byte past max_bytes is written."""
    digest, size = hashlib.sha256(), 0
    with os.fdopen(fd, "wb") as out:
        for chunk in chunks:
            size += len(chunk)
            if size > max_bytes:
                raise _invalid(f"bundle is larger than {max_bytes} bytes", BundleTooLarge)
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest(), size


def store_bundle(
    chunks: Iterable[bytes],
    bundles_dir: Path,
    *,
    max_bytes: int,
    max_unpacked_bytes: int,
    max_members: int = 20000,
) -> tuple[str, int]:
    """Stream an upload into bundles_dir as <sha256 hex>.tar.gz once it validates; ("sha256:<hex>", size).

    On any failure nothing is left behind; storing the same bytes twice keeps one file.
    """
    bundles_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=bundles_dir, prefix=".upload-", suffix=".part")
    tmp = Path(tmp_name)
    try:
        hexdigest, size = _spool(chunks, fd, max_bytes)
        validate_bundle(tmp, max_unpacked_bytes=max_unpacked_bytes, max_members=max_members)
        final = bundles_dir / f"{hexdigest}.tar.gz"
        if final.exists():
            tmp.unlink()
        else:
            tmp.chmod(0o644)
            os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return DIGEST_PREFIX + hexdigest, size


def bundle_path(bundles_dir: Path, digest: str) -> Path:
    """Where the bundle with digest 'sha256:<64 lowercase hex>' is stored (whether or not it exists)."""
    if not isinstance(digest, str) or not _DIGEST_RE.fullmatch(digest):
        raise _invalid(f"malformed bundle digest {digest!r}: expected 'sha256:' and 64 lowercase hex digits")
    return bundles_dir / f"{digest.removeprefix(DIGEST_PREFIX)}.tar.gz"


def extract_bundle(path: Path, dest: Path, *, max_unpacked_bytes: int, max_members: int = 20000) -> None:
    """Validate, then extract into the existing dest through tarfile's 'data' filter: a second line of
    defence that also drops setuid/setgid/sticky and group/other write bits, keeps exec, never chowns."""
    limits = {"max_unpacked_bytes": max_unpacked_bytes, "max_members": max_members}
    validate_bundle(path, **limits)
    with _open_tar(path, **limits) as tf:
        tf.errorlevel = 2
        try:
            tf.extractall(dest, filter="data")
        except tarfile.FilterError as e:
            raise _refuse(e.tarinfo, f"was refused on extraction: {e}") from None
        except tarfile.ExtractError as e:
            raise _invalid(f"bundle could not be extracted: {e}") from None


def _tree(src_dir: Path, exclude: tuple[str, ...]) -> list[tuple[str, Path]]:
    """(relative posix path, path) of every entry under src_dir not excluded, sorted; links not followed."""

    def kept(names: list[str]) -> list[str]:
        return [n for n in names if not any(fnmatch.fnmatchcase(n, pat) for pat in exclude)]

    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(src_dir):
        dirnames[:] = kept(dirnames)  # pruned here, so every component of a kept path was matched
        base = Path(dirpath)
        for name in dirnames + kept(filenames):
            found.append(((base / name).relative_to(src_dir).as_posix(), base / name))
    return sorted(found)


def _tarinfo(rel: str, path: Path) -> tarfile.TarInfo | None:
    """A member with normalised metadata (mtime 0, root owner, no names, fixed modes); None to skip."""
    st, info = path.lstat(), tarfile.TarInfo(rel)
    if stat.S_ISLNK(st.st_mode):
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, os.readlink(path), 0o777
    elif stat.S_ISDIR(st.st_mode):
        info.type, info.mode = tarfile.DIRTYPE, 0o755
    elif stat.S_ISREG(st.st_mode):
        info.size, info.mode = st.st_size, 0o755 if st.st_mode & 0o111 else 0o644
    else:
        return None  # sockets, FIFOs, devices have no place in a code bundle
    return info


def make_bundle(
    src_dir: Path, *, exclude: tuple[str, ...] = (".git", "__pycache__", ".venv", "*.pyc", "runs")
) -> bytes:
    """A deterministic tar.gz of src_dir: the same names, bytes, exec bits and links give the same bytes."""
    buf = io.BytesIO()
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tf,
    ):
        for rel, path in _tree(src_dir, exclude):
            info = _tarinfo(rel, path)
            if info is not None:
                with open(path, "rb") if info.isreg() else contextlib.nullcontext() as f:
                    tf.addfile(info, f)
    return buf.getvalue()
