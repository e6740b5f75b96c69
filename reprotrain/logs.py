"""Reading a job's logs: the exception its last Python traceback ended with, and the log's tail."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

TAIL_LINES = 20
TAIL_BYTES = 64 << 10  # how much of a log's end is read: enough for any traceback worth showing
MAX_MESSAGE = 2000
_TRACEBACK = "Traceback (most recent call last):"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # terminal colours: meaningless in a stored error
_EXCEPTION = re.compile(r"^(?P<type>[A-Za-z_][\w.]*)(?::\s?(?P<message>.*))?$")


@dataclass(frozen=True)
class Raised:
    """The exception a Python traceback in a log ended with."""

    type: str  # the class name, without its module (`UnpicklingError`)
    message: str
    traceback: str  # that whole traceback, as printed


def read_tail(path: Path, max_bytes: int = TAIL_BYTES) -> str:
    """The end of a log file ('' when there is none); a first partial line is dropped."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return ""
    text = _ANSI.sub("", data.decode("utf-8", errors="replace"))
    return text.split("\n", 1)[1] if size > max_bytes and "\n" in text else text


def tail(text: str, lines: int = TAIL_LINES) -> str | None:
    """The last lines of a log, or None when it is empty."""
    kept = text.rstrip("\n").splitlines()[-lines:]
    return "\n".join(kept) if any(line.strip() for line in kept) else None


def last_raised(text: str) -> Raised | None:
    """The exception the last traceback in `text` ended with: frames are indented, the exception
    line is the first one that is not, and what follows it is the rest of a multi-line message."""
    start = text.rfind(_TRACEBACK)
    if start < 0:
        return None
    lines = text[start:].splitlines()
    i = 1
    while i < len(lines) and (lines[i].startswith((" ", "\t")) or not lines[i].strip()):
        i += 1
    if i >= len(lines) or not (m := _EXCEPTION.match(lines[i])):
        return None
    message = "\n".join([m.group("message") or "", *lines[i + 1 :]]).strip()
    return Raised(
        type=m.group("type").rsplit(".", 1)[-1],
        message=message[:MAX_MESSAGE],
        traceback="\n".join(lines)[-4 * MAX_MESSAGE :],
    )
