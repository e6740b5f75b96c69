"""Real scripts that write what real training scripts write: results reproduce, the rest is listed."""

from __future__ import annotations

from pathlib import Path

from reprotrain.compare import compare
from reprotrain.outputs import RunFiles

# Like makemore: seeds itself, writes a TensorBoard-style event file named by time, host and pid,
# prints its step time, and saves the model's state dict.
TRAIN = """
import os, socket, sys, time, torch
torch.manual_seed(3407)
model = torch.nn.Linear(8, 2)
opt = torch.optim.AdamW(model.parameters(), lr=0.01)
x, y = torch.randn(64, 8), torch.randn(64, 2)
os.makedirs("out", exist_ok=True)
name = f"out/events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.0"
with open(name, "wb") as events:
    for step in range(5):
        t0 = time.time()
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        events.write(f"{time.time()} {loss.item()}".encode())
        took = (time.time() - t0) * 1000 + os.getpid() % 97
        print(f"step {step} | loss {loss.item():.4f} | step time {took:.2f}ms")
        if sys.argv[1:] == ["--noisy-loss"]:
            print(f"eval loss {loss.item() + int.from_bytes(os.urandom(2), 'big') * 1e-6:.6f}")
torch.save(model.state_dict(), "out/model.pt")
"""


def _spec(*args: str) -> dict:
    return {"command": ["python", "train.py", *args], "seed": 1, "device": "cpu"}


def _twice(run_job, tmp_path: Path, *args: str):
    (tmp_path / "train.py").write_text(TRAIN)
    (a, a_dir), (b, b_dir) = (run_job(_spec(*args), code_dir=tmp_path) for _ in range(2))
    assert a.status == b.status == "SUCCEEDED", (a.error, b.error)
    return compare(a, b, RunFiles.local(a_dir), RunFiles.local(b_dir))


def test_a_rerun_that_reproduces_every_result_is_results_identical(run_job, tmp_path: Path) -> None:
    """Same model bytes, event files named by time and pid, step times that differ: results_identical,
    each listed."""
    v = _twice(run_job, tmp_path)
    assert v.verdict == "results_identical", v
    assert "out/model.pt" in v.identical and "files" not in v.identical
    reasons = {i.what: (i.state, i.reason) for i in v.incidental}
    events = [(s, r) for w, (s, r) in reasons.items() if "tfevents" in w]
    # named by the second and the pid. Confined, the pid is always 2: within one second the two
    # runs' files share a name and differ; across seconds the names differ by the time only, and
    # the pair is listed once, under a's name. Unconfined, the pids differ: one file in each run.
    assert sorted(s for s, _ in events) in (["differs"], ["only_a"], ["only_a", "only_b"])
    assert {r for _, r in events} == {"TensorBoard event file"}
    assert reasons["stdout"][1].startswith("timing noise only")
    (line,) = [x for x in v.lines if x.stream == "stdout"]
    assert line.noise and "step time" in line.a and line.a != line.b
    assert v.notes == [f"{s}: the job seeds torch itself (torch seed 3407; spec seed 1)" for s in "ab"]


def test_a_printed_number_that_differs_is_not_noise(run_job, tmp_path: Path) -> None:
    """A loss printed with a difference in it: stdout differs for real, and the verdict shows the line."""
    v = _twice(run_job, tmp_path, "--noisy-loss")
    assert v.verdict == "diverged"
    assert v.divergence.differs == ["stdout"] and "out/model.pt" in v.identical
    real = next(x for x in v.lines if x.stream == "stdout" and not x.noise)
    assert real.a.startswith("eval loss") and real.a != real.b
