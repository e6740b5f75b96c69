"""Reading logs: the exception a traceback ended with, multi-line and chained; the tail."""

from __future__ import annotations

from pathlib import Path

from reprotrain.logs import last_raised, read_tail, tail

CHAINED = """step 1 loss 0.5
Traceback (most recent call last):
  File "t.py", line 3, in <module>
    x = {}["k"]
        ~~^^^^^
KeyError: 'k'

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "t.py", line 5, in <module>
    torch.load(p)
_pickle.UnpicklingError: Weights only load failed. This file can still be loaded:
(1) In PyTorch 2.6, we changed the default value of the `weights_only` argument.
(2) Alternatively, to load with `weights_only=True` please check the recommended steps.
"""


def test_the_last_traceback_names_the_final_exception() -> None:
    """Chained tracebacks: the last counts; a dotted type loses its module; the message keeps its lines."""
    raised = last_raised(CHAINED)
    assert raised is not None and raised.type == "UnpicklingError"
    assert raised.message.startswith("Weights only load failed.") and "`weights_only`" in raised.message
    assert raised.traceback.startswith("Traceback") and "KeyError" not in raised.traceback


def test_no_traceback_no_exception() -> None:
    """A log without a traceback names no exception; an exception without a message has ''."""
    assert last_raised("step 1\nstep 2\n") is None
    raised = last_raised('Traceback (most recent call last):\n  File "x", line 1\nKeyboardInterrupt\n')
    assert raised is not None and (raised.type, raised.message) == ("KeyboardInterrupt", "")


def test_tail_of_a_large_log(tmp_path: Path) -> None:
    """Only the end of a big log is read, from a whole line; the tail is its last lines."""
    log = tmp_path / "stderr.log"
    log.write_text("".join(f"line {i}\n" for i in range(100_000)))
    text = read_tail(log, max_bytes=1000)
    assert text.startswith("line ") and text.endswith("line 99999\n")
    assert tail(text, 2) == "line 99998\nline 99999"
    assert tail("\n\n") is None and read_tail(tmp_path / "none.log") == ""


def test_terminal_colours_are_dropped(tmp_path: Path) -> None:
    """Escape codes a library prints (torch bolds a warning) do not reach the stored error."""
    log = tmp_path / "stderr.log"
    log.write_text('Traceback (most recent call last):\n  File "x"\nValueError: \x1b[1mbold\x1b[0m end\n')
    assert last_raised(read_tail(log)).message == "bold end"
