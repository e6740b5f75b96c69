"""Shipping live logs into the store: whole event lines only, and a cap with a marker."""

from __future__ import annotations

from pathlib import Path

from reprotrain.spec import parse_spec
from reprotrain.store import Store
from reprotrain.store.migrate import upgrade
from reprotrain.worker.task import LogShipper
from tests.helpers import base_spec


def _store(tmp_path: Path) -> Store:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(url)
    return Store(url)


def test_stdout_is_shipped_incrementally_and_capped(tmp_path: Path) -> None:
    """Appended output arrives in order; past the limit the stream ends with a truncation marker."""
    store = _store(tmp_path)
    job = store.create_job(parse_spec(base_spec()))
    shipper = LogShipper(store, job.id, tmp_path, limit=2048)
    out = tmp_path / "stdout.log"
    out.write_bytes(b"a" * 1000)
    shipper.ship()
    with open(out, "ab") as f:
        f.write(b"b" * 5000)
    shipper.ship()
    shipper.ship()
    live = store.read_log(job.id, "stdout")
    assert live.startswith(b"a" * 1000 + b"b" * 1048)
    assert live.endswith(b"the whole log is the artifact _job/stdout.log]\n")
    assert len(live) < 2048 + 200
    store.close()


def test_events_ship_whole_lines_only(tmp_path: Path) -> None:
    """A half-written event line waits until its newline arrives."""
    store = _store(tmp_path)
    job = store.create_job(parse_spec(base_spec()))
    shipper = LogShipper(store, job.id, tmp_path, limit=1 << 20)
    ev = tmp_path / "events.jsonl"
    ev.write_bytes(b'{"kind":"metric","step":0}\n{"kind":"met')
    shipper.ship()
    assert store.read_log(job.id, "events") == b'{"kind":"metric","step":0}\n'
    with open(ev, "ab") as f:
        f.write(b'ric","step":1}\n')
    shipper.ship()
    assert store.read_log(job.id, "events").count(b"\n") == 2
    store.close()


def test_a_burst_larger_than_one_chunk_arrives_whole_in_one_ship(tmp_path: Path) -> None:
    """10 MiB written at once (the job ended before the next heartbeat): one ship stores all of it,
    in order, under a 16 MiB cap, and no marker; past the cap, the marker follows the cap's bytes."""
    store = _store(tmp_path)
    job = store.create_job(parse_spec(base_spec()))
    burst = b"".join(b"line %07d\n" % i for i in range(10 << 20 >> 4))[: 10 << 20]
    (tmp_path / "stdout.log").write_bytes(burst)
    LogShipper(store, job.id, tmp_path, limit=16 << 20).ship()
    assert store.read_log(job.id, "stdout") == burst
    other = store.create_job(parse_spec(base_spec()))
    LogShipper(store, other.id, tmp_path, limit=6 << 20).ship()
    live = store.read_log(other.id, "stdout")
    assert live.startswith(burst[: 6 << 20]) and live.endswith(b"_job/stdout.log]\n")
    store.close()
