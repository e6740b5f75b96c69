"""Bundles: storing uploads by digest, refusing malicious archives, safe extraction, deterministic packing."""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from reprotrain import bundles
from reprotrain.bundles import (
    BundleInvalid,
    BundleTooLarge,
    bundle_path,
    extract_bundle,
    make_bundle,
    store_bundle,
    validate_bundle,
)

LIMITS = {"max_bytes": 1 << 20, "max_unpacked_bytes": 1 << 20}

Member = tuple[tarfile.TarInfo, bytes | None]


def _file(name: str, data: bytes = b"x", mode: int = 0o644) -> Member:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def _pax_named(name: str) -> Member:
    """A file whose name travels in a pax header, so it may hold bytes a ustar header cannot."""
    info, data = _file("placeholder")
    info.pax_headers = {"path": name}
    return info, data


def _entry(name: str, kind: bytes, linkname: str = "") -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info, None


def _tar(*members: Member, gz: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return gzip.compress(buf.getvalue(), mtime=0) if gz else buf.getvalue()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _snapshot(root: Path) -> dict[str, bytes | str]:
    """Every path under root with its bytes (files) or link target (symlinks) or '' (directories)."""
    out: dict[str, bytes | str] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        out[rel] = os.readlink(p) if p.is_symlink() else ("" if p.is_dir() else p.read_bytes())
    return out


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A sandbox whose subdirectory dest/ is the extraction target; everything else must stay untouched."""
    (tmp_path / "dest").mkdir()
    (tmp_path / "bundles").mkdir()
    return tmp_path


MALICIOUS = {
    "absolute": ([_file("/etc/x")], BundleInvalid, "'/etc/x'"),
    "dotdot": ([_file("../escape.txt")], BundleInvalid, "'../escape.txt'"),
    "inner-dotdot": ([_file("a/../../b")], BundleInvalid, "'a/../../b'"),
    "backslash": ([_file("..\\..\\evil.txt")], BundleInvalid, "backslash"),
    "nul": ([_pax_named("ok\x00.txt")], BundleInvalid, "NUL"),
    "symlink-absolute": ([_entry("pw", tarfile.SYMTYPE, "/etc/passwd")], BundleInvalid, "'pw'"),
    "symlink-up": ([_entry("a", tarfile.SYMTYPE, "../..")], BundleInvalid, "'a'"),
    "symlink-chain": (
        [_entry("s", tarfile.SYMTYPE, "."), _entry("s/up", tarfile.SYMTYPE, "..")],
        BundleInvalid,
        "'s/up'",
    ),
    "symlink-loop": ([_entry("loop", tarfile.SYMTYPE, "loop")], BundleInvalid, "'loop'"),
    "hardlink-outside": ([_entry("h", tarfile.LNKTYPE, "../outside.txt")], BundleInvalid, "'h'"),
    "hardlink-absolute": ([_entry("h", tarfile.LNKTYPE, "/etc/passwd")], BundleInvalid, "'h'"),
    "hardlink-non-member": ([_entry("h", tarfile.LNKTYPE, "later.txt")], BundleInvalid, "'h'"),
    "char-device": ([_entry("null", tarfile.CHRTYPE)], BundleInvalid, "'null' is a character device"),
    "block-device": ([_entry("sda", tarfile.BLKTYPE)], BundleInvalid, "'sda' is a block device"),
    "fifo": ([_entry("pipe", tarfile.FIFOTYPE)], BundleInvalid, "'pipe' is a FIFO"),
    "inside-a-file": ([_file("a.py"), _file("a.py/x")], BundleInvalid, "'a.py/x' is inside 'a.py'"),
    "file-over-dir": ([_file("d/x"), _file("d")], BundleInvalid, "'d/x' is inside 'd'"),
    "duplicate": ([_file("a.py"), _file("a.py")], BundleInvalid, "'a.py' appears twice"),
    "empty": ([], BundleInvalid, "bundle is empty"),
    "too-large-unpacked": ([_file("big.bin", b"\0" * (2 << 20))], BundleTooLarge, "'big.bin'"),
}


@pytest.mark.parametrize("case", list(MALICIOUS))
def test_malicious_archive_is_refused_naming_the_member(work: Path, case: str) -> None:
    """Each unsafe archive is refused on upload and on extraction, naming the member, leaving no trace."""
    members, error, needle = MALICIOUS[case]
    data = _tar(*members)
    archive = _write(work / "upload.tar.gz", data)
    before = _snapshot(work)
    with pytest.raises(error) as caught:
        store_bundle([data], work / "bundles", **LIMITS)
    assert needle in str(caught.value) and caught.value.field == "bundle"
    assert list((work / "bundles").iterdir()) == []
    with pytest.raises(error):
        extract_bundle(archive, work / "dest", max_unpacked_bytes=LIMITS["max_unpacked_bytes"])
    assert _snapshot(work) == before


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"this is not an archive at all\n" * 40, "not a tar.gz archive"),
        (gzip.compress(b"plain text, gzipped, still not a tar\n" * 40), "not a tar.gz archive"),
        (b"", "bundle is empty"),
    ],
    ids=["text", "gzipped-text", "zero-bytes"],
)
def test_non_archive_is_refused(work: Path, data: bytes, message: str) -> None:
    """Bytes that are not a tar (gzipped or not) are refused with a plain message."""
    with pytest.raises(BundleInvalid, match=message):
        store_bundle([data], work / "bundles", **LIMITS)
    assert list((work / "bundles").iterdir()) == []


def test_truncated_gzip_is_refused(work: Path) -> None:
    """A gzip stream cut short, even where the tar headers before the cut look fine, is refused."""
    data = _tar(_file("a.bin", os.urandom(20000)), _file("b.txt", b"tail"))
    for cut in (len(data) // 2, len(data) - 4):
        with pytest.raises(BundleInvalid, match="truncated or corrupt"):
            store_bundle([data[:cut]], work / "bundles", **LIMITS)
    assert list((work / "bundles").iterdir()) == []


def test_truncated_plain_tar_is_refused(work: Path) -> None:
    """A plain tar cut in the middle of a member's data is refused."""
    data = _tar(_file("a.bin", b"y" * 5000), gz=False)
    with pytest.raises(BundleInvalid, match="truncated or corrupt"):
        store_bundle([data[:2048]], work / "bundles", **LIMITS)


def test_plain_tar_is_accepted(work: Path) -> None:
    """An uncompressed tar is a valid bundle too."""
    digest, size = store_bundle([_tar(_file("a.py"), gz=False)], work / "bundles", **LIMITS)
    assert bundle_path(work / "bundles", digest).stat().st_size == size


def test_upload_too_large_stops_reading_early(work: Path) -> None:
    """An upload over max_bytes is refused as soon as it passes the limit, without reading the rest."""

    def endless() -> Iterator[bytes]:
        while True:
            yield b"z" * 60

    with pytest.raises(BundleTooLarge, match="larger than 100 bytes"):
        store_bundle(endless(), work / "bundles", max_bytes=100, max_unpacked_bytes=1 << 20)
    assert list((work / "bundles").iterdir()) == []


def test_gzip_bomb_of_trailing_zeros_is_too_large(work: Path) -> None:
    """Megabytes of zeros after the end of the tar count against the unpacked limit."""
    data = gzip.compress(_tar(_file("a.py"), gz=False) + b"\0" * (4 << 20))
    assert len(data) < 10_000
    with pytest.raises(BundleTooLarge):
        store_bundle([data], work / "bundles", max_bytes=1 << 20, max_unpacked_bytes=1 << 20, max_members=8)
    assert list((work / "bundles").iterdir()) == []


def test_too_many_members(work: Path) -> None:
    """An archive with more than max_members members is refused, naming the first one over."""
    data = _tar(*(_file(f"f{i}.txt") for i in range(4)))
    with pytest.raises(BundleInvalid, match=r"'f3\.txt'"):
        store_bundle([data], work / "bundles", **LIMITS, max_members=3)
    validate_bundle(_write(work / "ok.tar.gz", data), max_unpacked_bytes=1 << 20, max_members=4)


def test_links_inside_the_bundle_are_kept(work: Path) -> None:
    """Symlinks resolving inside (also '..' from a subdirectory) and hard links to earlier files extract."""
    data = _tar(
        _file("sub/data.txt", b"payload"),
        _entry("sub/up", tarfile.SYMTYPE, ".."),
        _entry("latest", tarfile.SYMTYPE, "sub/up/sub/data.txt"),
        _entry("copy.txt", tarfile.LNKTYPE, "sub/data.txt"),
    )
    path = _write(work / "links.tar.gz", data)
    extract_bundle(path, work / "dest", max_unpacked_bytes=1 << 20)
    dest = work / "dest"
    assert os.readlink(dest / "sub" / "up") == ".."
    assert (dest / "latest").read_bytes() == b"payload"
    assert (dest / "copy.txt").stat().st_ino == (dest / "sub" / "data.txt").stat().st_ino


def test_extraction_drops_setuid_keeps_exec(work: Path) -> None:
    """A setuid, group-writable executable extracts executable, without setuid or group write."""
    path = _write(work / "m.tar.gz", _tar(_file("run.sh", b"#!/bin/sh\n", mode=0o4775), _file("r.txt")))
    extract_bundle(path, work / "dest", max_unpacked_bytes=1 << 20)
    mode = stat.S_IMODE((work / "dest" / "run.sh").stat().st_mode)
    assert mode & stat.S_IXUSR and not mode & (stat.S_ISUID | stat.S_IWGRP | stat.S_IWOTH)
    assert not stat.S_IMODE((work / "dest" / "r.txt").stat().st_mode) & 0o111


def test_data_filter_is_a_second_line_of_defence(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With validation switched off, the extraction filter still refuses an escaping member."""
    monkeypatch.setattr(bundles, "validate_bundle", lambda *a, **k: None)
    for i, members in enumerate(([_file("../escape.txt")], [_entry("pw", tarfile.SYMTYPE, "/etc/passwd")])):
        path = _write(work / f"bypass{i}.tar.gz", _tar(*members))
        before = _snapshot(work)
        with pytest.raises(BundleInvalid, match="refused on extraction"):
            extract_bundle(path, work / "dest", max_unpacked_bytes=1 << 20)
        assert _snapshot(work) == before


def _source_tree(root: Path) -> Path:
    """A small project with an executable, an empty dir, a symlink and junk make_bundle must leave out."""
    src = root / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "train.py").write_text("print('hi')\n")
    (src / "pkg" / "__init__.py").write_text("")
    (src / "run.sh").write_text("#!/bin/sh\necho run\n")
    (src / "run.sh").chmod(0o755)
    (src / "empty").mkdir()
    os.symlink("pkg/__init__.py", src / "link.py")
    os.symlink("pkg", src / "pkglink")
    for junk in (".git/HEAD", "__pycache__/x.pyc", "pkg/__pycache__/y.pyc", "runs/r1/out.txt", "old.pyc"):
        (src / junk).parent.mkdir(parents=True, exist_ok=True)
        (src / junk).write_text("junk")
    return src


def test_round_trip_keeps_files_links_and_exec_bit(work: Path) -> None:
    """make_bundle → store_bundle → extract_bundle gives the same files, symlinks and executable bit."""
    src = _source_tree(work)
    digest, size = store_bundle([make_bundle(src)], work / "bundles", **LIMITS)
    path = bundle_path(work / "bundles", digest)
    assert path.stat().st_size == size
    extract_bundle(path, work / "dest", max_unpacked_bytes=1 << 20)
    got = _snapshot(work / "dest")
    assert got == {
        "empty": "",
        "link.py": "pkg/__init__.py",
        "pkg": "",
        "pkg/__init__.py": b"",
        "pkglink": "pkg",
        "run.sh": b"#!/bin/sh\necho run\n",
        "train.py": b"print('hi')\n",
    }
    assert os.access(work / "dest" / "run.sh", os.X_OK)
    assert not os.access(work / "dest" / "train.py", os.X_OK)


def test_make_bundle_is_deterministic(tmp_path: Path) -> None:
    """The same tree packs to the same bytes, also after its mtimes and read/write bits change."""
    src = _source_tree(tmp_path)
    first = make_bundle(src)
    assert make_bundle(src) == first
    for p in src.rglob("*"):
        if not p.is_symlink():
            os.utime(p, (1_000_000, 1_000_000))
    (src / "train.py").chmod(0o600)
    assert make_bundle(src) == first
    (src / "train.py").write_text("print('changed')\n")
    assert make_bundle(src) != first


def test_make_bundle_members_are_sorted_and_anonymous(tmp_path: Path) -> None:
    """Members are sorted relative paths with mtime 0, owner 0 and no user or group names."""
    src = _source_tree(tmp_path)
    with tarfile.open(fileobj=io.BytesIO(make_bundle(src))) as tf:
        members = tf.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names) and "train.py" in names and not any(n.startswith("/") for n in names)
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, 0, "", "")}


def test_storing_twice_gives_one_file(work: Path) -> None:
    """The same bytes stored twice give the same digest and a single file, named by the digest."""
    data = _tar(_file("a.py", b"print(1)\n"))
    first = store_bundle([data[:10], data[10:]], work / "bundles", **LIMITS)
    second = store_bundle([data], work / "bundles", **LIMITS)
    assert first == second and first[0].startswith("sha256:") and first[1] == len(data)
    assert [p.name for p in (work / "bundles").iterdir()] == [first[0].removeprefix("sha256:") + ".tar.gz"]


@pytest.mark.parametrize(
    "digest",
    [
        *("", "sha256:", "sha256:abc", "0" * 64, "md5:" + "0" * 64, "sha256:" + "A" * 64),
        *("sha256:" + "0" * 64 + "\n", "sha256:../../" + "0" * 58, "sha256:" + "0" * 65),
    ],
)
def test_bundle_path_rejects_malformed_digest(tmp_path: Path, digest: str) -> None:
    """A digest that is not 'sha256:' and 64 lowercase hex digits is refused with field 'bundle'."""
    with pytest.raises(BundleInvalid) as caught:
        bundle_path(tmp_path, digest)
    assert caught.value.field == "bundle"


def test_bundle_path_of_a_good_digest(tmp_path: Path) -> None:
    """A well-formed digest maps to <hex>.tar.gz inside the bundles directory."""
    assert bundle_path(tmp_path, "sha256:" + "ab" * 32) == tmp_path / ("ab" * 32 + ".tar.gz")


def _raw_patched(name: str, fmt: int, find: bytes, put: bytes) -> bytes:
    """A one-file archive whose raw header bytes are patched after tarfile wrote them (checksum
    fixed), as a hand-made archive would carry them: tarfile itself never writes a NUL in a name."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        info, data = _file(name)
        tf.addfile(info, io.BytesIO(data))
    raw = bytearray(buf.getvalue())
    at = raw.index(find)
    raw[at : at + len(find)] = put
    if fmt == tarfile.USTAR_FORMAT:  # patched the header itself: its checksum again
        raw[148:156] = b" " * 8
        raw[148:156] = b"%06o\0 " % sum(raw[:512])
    return gzip.compress(bytes(raw), mtime=0)


@pytest.mark.parametrize(
    ("archive", "why"),
    [
        (lambda: _raw_patched("aXb.py", tarfile.USTAR_FORMAT, b"aXb.py", b"a\0b.py"), "NUL byte in its name"),
        (lambda: _raw_patched("d/" + "x" * 120 + "Y.py", tarfile.GNU_FORMAT, b"Y.py", b"\0.py"), "NUL byte"),
        (lambda: _tar(_pax_named("a\nb.py")), "control character ('\\n') in its name"),
        (lambda: _tar(_pax_named("bell\x07.py")), "control character ('\\x07')"),
    ],
    ids=["nul-ustar", "nul-gnu-longname", "newline", "bell"],
)
def test_names_with_a_nul_or_a_control_character_are_refused(work: Path, archive, why: str) -> None:
    """A NUL inside a raw name field (ustar or a GNU long name: tarfile alone cuts the name there and
    keeps the part before it) or a control character anywhere in a name: refused, naming why."""
    path = _write(work / "b.tar.gz", archive())
    with pytest.raises(BundleInvalid) as e:
        validate_bundle(path, max_unpacked_bytes=1 << 20)
    assert why in e.value.message
