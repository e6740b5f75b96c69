"""Job event log lines: their text and JSON forms, and bursts of them written at once."""

from __future__ import annotations

import io
import json
import logging
import time

import pytest

from reprotrain import joblog


class CountingStream(io.StringIO):
    """A stream that counts its writes (each one a syscall on stderr)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, s: str) -> int:
        self.writes += 1
        return super().write(s)


@pytest.fixture
def stream():
    """A counting stream; the root logger's handlers and level as they were, afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield CountingStream()
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


def test_text_line_names_the_job_event_and_its_fields(stream):
    joblog.configure("text", stream=stream)
    joblog.job_event("finished", "ab" * 16, status="SUCCEEDED", rerun_of=None, duration_s=4.5)
    [line] = lines(stream)
    stamp, rest = line[:23], line[24:]
    assert time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S") and stamp[19] == "," and stamp[20:].isdigit()
    assert rest == f"INFO reprotrain.jobs: job {'ab' * 16} finished status=SUCCEEDED duration_s=4.5"


def test_text_time_is_the_standard_formatters(stream):
    """The cached second gives what logging.Formatter gives, across a change of second."""
    ours, standard = joblog.TextFormatter(), logging.Formatter(joblog.TEXT)
    for created in (1_700_000_000.001, 1_700_000_000.999, 1_700_000_001.5, 1_700_000_000.25):
        record = logging.LogRecord("reprotrain.jobs", logging.INFO, "", 0, "job x", None, None)
        record.created, record.msecs = created, (created - int(created)) * 1000
        assert ours.formatTime(record) == standard.formatTime(record)
        assert ours.formatTime(record, "%H") == standard.formatTime(record, "%H")


def test_json_line_carries_id_event_and_fields(stream):
    joblog.configure("json", stream=stream)
    joblog.job_event("verdict", "cd" * 16, kind="bit_identical", ts="clash")
    [line] = lines(stream)
    doc = json.loads(line)
    assert (doc["job_id"], doc["event"], doc["kind"], doc["field_ts"]) == (
        "cd" * 16,
        "verdict",
        "bit_identical",
        "clash",
    )
    assert doc["level"] == "info" and doc["logger"] == "reprotrain.jobs"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_burst_is_one_write_with_the_same_lines(stream, fmt):
    joblog.configure(fmt, stream=stream)
    ids = [f"{i:032x}" for i in range(5)]
    for job_id in ids:
        joblog.job_event("sent", job_id, queue="default")
    one_by_one, writes = lines(stream), stream.writes
    stream.seek(0)
    stream.truncate()
    stream.writes = 0
    with joblog.batched():
        for job_id in ids:
            joblog.job_event("sent", job_id, queue="default")
        with joblog.batched():  # nested: the outer one writes
            joblog.job_event("sent", ids[0], queue="other")
        assert stream.getvalue() == ""  # held back until the burst ends
    assert stream.writes == 1 and writes >= 5
    strip = (lambda s: s[24:]) if fmt == "text" else (lambda s: {**json.loads(s), "ts": None})
    got = [strip(line) for line in lines(stream)]
    assert got[:5] == [strip(line) for line in one_by_one]
    assert "queue=other" in str(got[5]) or got[5]["queue"] == "other"


def test_a_burst_cut_short_still_writes_what_was_logged(stream):
    joblog.configure("text", stream=stream)
    with pytest.raises(RuntimeError), joblog.batched():
        joblog.job_event("submitted", "ef" * 16, queue="default")
        raise RuntimeError("boom")
    assert [line[24:] for line in lines(stream)] == [
        f"INFO reprotrain.jobs: job {'ef' * 16} submitted queue=default"
    ]
    joblog.job_event("sent", "ef" * 16)  # and lines after it are written at once again
    assert len(lines(stream)) == 2


def test_a_burst_keeps_the_level_and_other_threads_write_at_once(stream):
    import threading

    joblog.configure("text", logging.WARNING, stream)
    with joblog.batched():
        joblog.job_event("sent", "01" * 16)  # below the level: not held, not written
        logging.getLogger("reprotrain.api").warning("broker slow")
        other = threading.Thread(
            target=lambda: logging.getLogger("reprotrain.api").warning("from another thread")
        )
        other.start()
        other.join()
        assert [line[24:] for line in lines(stream)] == ["WARNING reprotrain.api: from another thread"]
    assert [line[24:] for line in lines(stream)] == [
        "WARNING reprotrain.api: from another thread",
        "WARNING reprotrain.api: broker slow",
    ]
