"""Outputs by role, and logs compared line by line with timing noise masked."""

from __future__ import annotations

from pathlib import Path

import pytest

from reprotrain.outputs import Masker, RunFiles, first_line_diffs, role, time_renamed


@pytest.mark.parametrize(
    ("path", "incidental", "reason"),
    [
        ("out/events.out.tfevents.1795830033.vm.11141.0", True, "TensorBoard event file"),
        ("events.out.tfevents.1795830033.vm.1.0", True, "TensorBoard event file"),
        ("wandb/run-1/files/output.log", True, "Weights & Biases run directory"),
        ("train.log", True, "log file"),
        ("out/model.pt", False, "an output file"),
        ("preds_20240501_1230.csv", False, "an output file"),  # a time in its name hides nothing
    ],
)
def test_default_roles(path: str, incidental: bool, reason: str) -> None:
    """Event files, run directories and logs are incidental; other files, time-named too, are results."""
    r = role(path)
    assert (r.incidental, r.reason) == (incidental, reason)


def test_files_renamed_by_a_time_are_paired() -> None:
    """Hydra's dated run directory and a timestamped export pair up across runs; unmatched ones do not."""
    files = {
        "outputs/2024-05-01/12-30-45/model.pt": "only_a",
        "outputs/2024-05-01/12-31-02/model.pt": "only_b",
        "preds_20240501_1230.csv": "only_a",
        "preds_20240501_1231.csv": "only_b",
        "run-1795830033.json": "only_a",
        "extra.txt": "only_b",
    }
    assert time_renamed(files) == {
        "outputs/2024-05-01/12-30-45/model.pt": "outputs/2024-05-01/12-31-02/model.pt",
        "preds_20240501_1230.csv": "preds_20240501_1231.csv",
    }


def test_the_spec_overrides_the_defaults() -> None:
    """A declared output is a result even if it looks like a log; a declared volatile file is not."""
    assert not role("metrics.log", outputs=["*.log"]).incidental
    assert role("out/samples.txt", volatile=["out/samples*"]).reason == "declared volatile (out/samples*)"


def _logs(tmp_path: Path, a: str, b: str) -> tuple[Path, Path]:
    (tmp_path / "a.log").write_text(a)
    (tmp_path / "b.log").write_text(b)
    return tmp_path / "a.log", tmp_path / "b.log"


def test_timing_lines_are_noise_a_loss_is_not(tmp_path: Path) -> None:
    """'step time 20.49ms', '3.1 it/s', 'ms/batch 24.38', a timestamp differ only in noise; a differing
    loss is real."""
    a, b = _logs(
        tmp_path,
        "start 2026-11-28 01:40:45\nstep 0 | loss 2.3 | step time 20.49ms\n"
        "100%|##| 3/3 [00:01<00:00, 3.10it/s]\n",
        "start 2026-11-28 01:41:02\nstep 0 | loss 2.3 | step time 21.02ms\n"
        "100%|##| 3/3 [00:02<00:00, 2.95it/s]\n",
    )
    noise, real = first_line_diffs(a, b, Masker())
    assert real is None and noise is not None and noise.line == 1
    # pytorch/examples' word_language_model: the time per batch comes after its unit
    line = "| epoch   1 |     5/    7 batches | lr 20.00 | ms/batch {} | loss  3.35 | ppl    28.42\n"
    a, b = _logs(tmp_path, line.format("24.38") + "0.31 s/step\n", line.format("24.36") + "0.29 s/step\n")
    noise, real = first_line_diffs(a, b, Masker())
    assert real is None and noise is not None and noise.line == 1
    a, b = _logs(tmp_path, line.format("24.38"), line.format("24.38").replace("3.35", "3.36"))
    assert first_line_diffs(a, b, Masker())[1] is not None  # the loss beside it still counts
    a, b = _logs(tmp_path, "iter 0: loss 2.30, iter_dt 12.85ms\n", "iter 0: loss 2.31, iter_dt 12.85ms\n")
    noise, real = first_line_diffs(a, b, Masker())
    assert (
        noise is None
        and real is not None
        and (real.line, real.a, real.b)
        == (
            1,
            "iter 0: loss 2.30, iter_dt 12.85ms",
            "iter 0: loss 2.31, iter_dt 12.85ms",
        )
    )


def test_a_log_that_ends_early_differs_and_spec_noise_is_masked(tmp_path: Path) -> None:
    """An extra line is a real difference; a pattern from the spec masks what it matches."""
    a, b = _logs(tmp_path, "x\n", "x\ny\n")
    assert first_line_diffs(a, b, Masker())[1].a is None
    a, b = _logs(tmp_path, "run id abc123\n", "run id def456\n")
    assert first_line_diffs(a, b, Masker([r"run id \w+"]))[1] is None


def test_local_run_files(tmp_path: Path) -> None:
    """A run directory's files: job files by name, outputs under work/; missing ones are None."""
    (tmp_path / "work" / "out").mkdir(parents=True)
    (tmp_path / "work" / "out" / "model.pt").write_bytes(b"m")
    (tmp_path / "stdout.log").write_text("hi\n")
    files = RunFiles.local(tmp_path)
    assert files.output("out/model.pt") == tmp_path / "work" / "out" / "model.pt"
    assert files.job_file("stdout.log") == tmp_path / "stdout.log"
    assert files.output("nope") is None and files.job_file("stderr.log") is None


def test_a_jobs_own_job_directory_is_an_output_not_the_runs_files(tmp_path: Path) -> None:
    """A job writing `_job/state/model.safetensors` cannot pass it off as the run's tracked state."""
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "model.safetensors").write_bytes(b"real")
    (tmp_path / "work" / "_job" / "state").mkdir(parents=True)
    (tmp_path / "work" / "_job" / "state" / "model.safetensors").write_bytes(b"forged")
    files = RunFiles.local(tmp_path)
    assert files.job_file("state/model.safetensors").read_bytes() == b"real"
    assert files.output("_job/state/model.safetensors").read_bytes() == b"forged"
