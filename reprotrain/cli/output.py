"""How the CLI prints results, jobs and verdicts for people (and as JSON for programs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reprotrain.wire import JobFiles


def _short(d: Any) -> str:
    return f"{d[:16]}…" if isinstance(d, str) else "-"


def _metrics(m: dict[str, Any]) -> str:
    return "  ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in m.items()) or "-"


def format_result(r: Any, out: Path) -> str:
    dur = r.timing.get("duration_s")
    lines = [
        f"job       {r.name}  {r.status.value}" + (f" in {dur:.2f} s" if dur else ""),
        f"metrics   {_metrics(r.metrics)}",
        f"model     {_short((r.digests.get('model') or {}).get('overall'))}",
        f"files     {len((r.digests.get('files') or {}).get('files') or {})} output file(s)",
        f"policy    {r.determinism.policy if r.determinism else '-'}",
        f"env       {_short(r.env_digest)}",
    ]
    if r.isolation is not None:
        lines.append(format_isolation(r.isolation.model_dump(mode="json")))
    if r.error:
        rest = f"{out / JobFiles.STDERR} has all of stderr"
        lines += format_error(r.error.model_dump(mode="json"), rest=rest)
    if r.nondeterministic_ops:
        lines.append("nondet    " + ", ".join(f"{o.op} ×{o.count}" for o in r.nondeterministic_ops))
    lines += _checked(r.model_dump(mode="json"))
    lines += format_resumes(r.model_dump(mode="json"))
    lines.append(f"result    {out / 'result.json'}")
    return "\n".join(lines)


def _checked(run: dict[str, Any]) -> list[str]:
    """A passed pre-flight check, or a bisect's (or failed pre-flight's) report."""
    lines = []
    if run.get("preflight"):
        pf = run["preflight"]
        steps = f"{pf['steps']} steps" if pf["steps"] else "the whole script (it reports no steps)"
        lines.append(f"preflight passed: two copies agreed on {pf['ops']} ops in {steps}")
    if run.get("bisect"):
        from reprotrain.bisect import BisectReport, describe

        lines.append("bisect    " + describe(BisectReport.model_validate(run["bisect"])))
    return lines


def format_resumes(job: dict[str, Any]) -> list[str]:
    """The latest checkpoint of a running job, and each attempt that went on from one."""
    lines = []
    ck = job.get("checkpoint")
    if ck and job.get("status") == "RUNNING":
        lines.append(
            f"checkpoint {ck['seq']} after step {ck['step']} ({ck['logs']} logged), attempt {ck['attempt']}"
        )
    for r in job.get("resumes") or []:
        step = r.get("from_step")
        how = {True: f"went on after step {step}", None: f"going on after step {step}"}.get(
            r.get("restored"), f"ran from the start ({r.get('note') or 'the checkpoint was not reached'})"
        )
        lines.append(f"resumed   attempt {r['attempt']} on {r.get('worker') or '?'}: {how}")
    return lines


def format_isolation(iso: dict[str, Any]) -> str:
    """How the run was confined, in one line; plainly when it was not."""
    if iso["mode"] == "none":
        return f"isolation NONE: the job ran as the worker does ({iso.get('note') or 'no confinement'})"
    uid = f", uid {iso['uid']}" if iso.get("uid") is not None else ""
    return f"isolation {iso['mode']}, network {iso['network']}{uid}" + (
        f" ({iso['note']})" if iso.get("note") else ""
    )


def format_error(
    error: dict[str, Any], stderr_lines: int = 8, job_id: str = "ID", rest: str | None = None
) -> list[str]:
    """The error's type and message, how the job ended, the traceback's last frames (or the last
    lines of its stderr), and where the rest is: `rest`, or the command that prints it."""
    message = (error.get("message") or "").strip().splitlines() or [""]
    lines = [f"error     {error.get('type')}: {message[0]}"]
    lines += [f"          {m}" for m in message[1:4]]
    if error.get("detail"):
        lines.append(f"          ({error['detail']})")
    traceback = (error.get("traceback") or "").splitlines()
    tail = traceback[-stderr_lines:] or (error.get("stderr_tail") or "").splitlines()[-stderr_lines:]
    if tail:
        what = "traceback" if traceback else "stderr"
        rest = rest or f"`reprotrain logs {job_id} --stderr` prints all of stderr"
        lines.append(f"{what:9} (its last lines; {rest})")
        lines += [f"  | {t}" for t in tail]
    return lines


def format_verdict(
    v: dict[str, Any], names: tuple[str, str] | None = None, bisect: bool | None = None
) -> str:
    """The verdict for a person: the level, what is identical, what differs and why, the causes;
    the bisect command where a bisect is offered (`bisect`; None: where the verdict carries the
    route, as the API's do)."""
    lines = [f"verdict   {_verdict_head(v)}"]
    div = v.get("divergence") or {}
    if "tensor_max_abs" in div:
        lines.append(
            f"tensor    {div['tensor']}: max abs {_num(div['tensor_max_abs'])}, "
            f"max rel {_num(div.get('tensor_max_rel'))} in {div.get('tensor_file') or 'the final state'}"
        )
    lines += _identical(v) + _differs(v) + _incidental(v)
    if v.get("absent"):
        lines.append(f"absent    {', '.join(v['absent'])} (neither run has it)")
    lines += _causes(v)
    lines += [f"{'notes' if i == 0 else '':9} {n}" for i, n in enumerate(v.get("notes") or [])]
    if v.get("bisect") if bisect is None else bisect:
        a, b = names or (v["a"], v["b"])
        lines.append(f"bisect    reprotrain bisect {a} {b}   # the first differing operation")
    return "\n".join(lines)


def _num(x: Any) -> str:
    """A stored number: NaN and infinities are kept as strings (or null), printed as they are."""
    return f"{x:.3g}" if isinstance(x, int | float) and not isinstance(x, bool) else str(x)


def _verdict_head(v: dict[str, Any]) -> str:
    head, div = v["verdict"], v.get("divergence") or {}
    if head != "diverged":
        return head + (f" ({v['reason']})" if v.get("reason") else "")
    if div.get("step") is not None:
        head += f" at step {div['step']}"
    if div.get("first"):
        head += f" ({div['first']} first)"
    if div.get("tensor"):
        head += f", first differing tensor {div['tensor']}"
        head += f" in {div['tensor_file']}" if div.get("tensor_file") else ""
    if "max_abs" in div:
        head += f"; metrics differ by up to {_num(div['max_abs'])} abs, {_num(div.get('max_rel'))} rel"
    if div.get("file") and not div.get("tensor"):
        head += f"; first differing file {div['file']}"
    elif div.get("differs") and div.get("step") is None and not div.get("tensor"):
        head += f"; differs: {', '.join(div['differs'])}"
    return head


def _identical(v: dict[str, Any], shown: int = 8) -> list[str]:
    same = v.get("identical") or []
    parts, files = [s for s in same if s in COMPONENT_NAMES], [s for s in same if s not in COMPONENT_NAMES]
    parts = [", ".join(parts)] if parts else []
    if files:
        more = f" (+{len(files) - shown} more)" if len(files) > shown else ""
        parts.append("files: " + ", ".join(files[:shown]) + more)
    return [f"identical {'; '.join(parts)}"] if parts else []


def _differs(v: dict[str, Any]) -> list[str]:
    incidental = {i["what"] for i in v.get("incidental") or []}
    opened = {c["file"]: c for c in v.get("checkpoints") or []}
    changed = [(f, s) for f, s in (v.get("files") or {}).items() if s != "same" and f not in incidental]
    out = [
        f"{'differs' if i == 0 else '':9} {f} ({s}){_opened(opened.get(f))}"
        for i, (f, s) in enumerate(changed)
    ]
    out = out[:8]
    for d in v.get("lines") or []:
        if not d["noise"] and d["stream"] not in incidental:
            out.append(f"{'differs' if not out else '':9} {d['stream']} line {d['line']}")
            out += _line_pair(d)
    return out


def _opened(found: dict[str, Any] | None) -> str:
    """What opening a differing checkpoint showed, for its `differs` line."""
    if not found:
        return ""
    if found.get("error"):
        return f": {found['error']}"
    if first := found.get("first_tensor"):
        size = f", max abs {_num(first['max_abs'])}" if "max_abs" in first else ""
        return f": tensor {first['key']} differs{size}"
    what = (found.get("structure") or found.get("fields") or [{}])[0].get("key")
    return f": tensors identical; {what} differs" if what else ""


def _incidental(v: dict[str, Any]) -> list[str]:
    out = []
    noise = {d["stream"]: d for d in v.get("lines") or []}
    for i, item in enumerate(v.get("incidental") or []):
        where = {"only_a": " (only in a)", "only_b": " (only in b)"}.get(item["state"], "")
        out.append(f"{'incidental' if i == 0 else '':9} {item['what']}{where}: {item['reason']}")
        if item["what"] in noise:
            out += _line_pair(noise[item["what"]])
    return out


def _line_pair(d: dict[str, Any]) -> list[str]:
    show = {None: "(no such line)"}
    return [f"            a: {show.get(d['a'], d['a'])}", f"            b: {show.get(d['b'], d['b'])}"]


def _causes(v: dict[str, Any]) -> list[str]:
    likely = [c for c in v["causes"] if c["likely_cause"]]
    head = "changed" if v["verdict"] in REPRODUCED else "causes"  # reproduced: nothing to explain
    lines = [
        f"{head if i == 0 else '':9} {c['label']}: {c['key']} {' → '.join(_pair(c['a'], c['b']))}"
        for i, c in enumerate(likely[:12])
    ]
    if not likely and v["verdict"] not in ("identical", "results_identical", "incomparable"):
        lines.append("causes    no environment or spec difference found")
    return lines


REPRODUCED = ("identical", "results_identical")  # what `compare` and `rerun --wait` exit 0 for
COMPONENT_NAMES = ("trace", "metrics", "model", "optimizer", "stdout", "stderr")


def _val(x: Any, width: int = 40) -> str:
    s = json.dumps(x, default=str)
    return s if len(s) <= width else s[: width - 3] + "…"


def _pair(a: Any, b: Any, width: int = 60) -> tuple[str, str]:
    """Two differing values, each cut to `width`, from where they part: two lists (a command)
    from their first differing item, two mappings (params) by the keys whose values differ."""
    if isinstance(a, list) and isinstance(b, list):
        i = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        items = [[json.dumps(x, default=str) for x in side[i:]] for side in (a, b)]
        return tuple(_clip("[" + ", ".join((["…"] if i else []) + rest) + "]", width) for rest in items)  # type: ignore[return-value]
    if isinstance(a, dict) and isinstance(b, dict):
        keys = [k for k in {**a, **b} if a.get(k, _NONE) != b.get(k, _NONE)]
        more = ["…"] if len(keys) < len(set(a) | set(b)) else []

        def part(d: dict[str, Any]) -> str:
            shown = [f"{json.dumps(k)}: {json.dumps(d[k], default=str)}" for k in keys if k in d]
            return _clip("{" + ", ".join(shown + more) + "}", width)

        return part(a), part(b)
    return _val(a, width), _val(b, width)


_NONE = object()


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def format_job(job: dict[str, Any]) -> str:
    lines = [
        f"job       {job['id']}  {job['name']}  {job['status']}",
        f"spec      {_short(job['spec_digest'])}" + (f"  bundle {job['bundle']}" if job["bundle"] else ""),
    ]
    if job.get("rerun_of"):
        lines.append(f"rerun of  {job['rerun_of']}")
    spec = job.get("spec") or {}
    if spec.get("project") or spec.get("tags"):
        lines.append(
            f"project   {spec.get('project') or '-'}  tags {', '.join(spec.get('tags') or []) or '-'}"
        )
    if spec.get("params"):
        lines.append(
            f"params    {_clip(', '.join(f'{k}={_val(v)}' for k, v in spec['params'].items()), 100)}"
        )
    if job.get("metrics"):
        lines.append(f"metrics   {_metrics(job['metrics'])}")
    model = ((job.get("digests") or {}).get("model") or {}).get("overall")
    if model:
        lines.append(f"model     {_short(model)}")
    if job.get("env_digest"):
        lines.append(f"env       {_short(job['env_digest'])}")
    if job.get("isolation"):
        lines.append(format_isolation(job["isolation"]))
    lines += format_resumes(job)
    if job.get("integrity_error"):
        bad = job["integrity_error"]
        lines.append(
            f"TAMPERED  {bad.get('artifact') or bad['digest']}: its stored bytes changed (integrity_error)"
        )
    if job.get("error"):
        lines += format_error(job["error"], job_id=job["id"])
    lines += _checked(job)
    if job.get("verdict"):
        lines.append(format_verdict(job["verdict"]))
    return "\n".join(lines)


def format_runs(page: dict[str, Any], metrics: list[str] | None = None) -> str:
    """`ls`: one line a job: short id (any command takes it), status, created, duration, name,
    params, chosen final metrics, a re-run's verdict."""
    rows = page["data"]
    if metrics is None:
        metrics = list(dict.fromkeys(k for r in rows[:1] for k in (r.get("metrics") or {})))[:2]
    head = ["ID", "STATUS", "CREATED", "DURATION", "NAME", "PARAMS", *(m.upper() for m in metrics), "VERDICT"]
    table = [head]
    for r in rows:
        verdict = r.get("verdict") or ""
        if r.get("diverged_at") is not None:
            verdict += f" at {r['diverged_at']}"
        table.append(
            [
                r["id"][:12],
                r["status"],
                r["created_at"][:16].replace("T", " "),
                _duration(r.get("duration_s")),
                r["name"][:24],
                _clip(",".join(f"{k}={_val(v)}" for k, v in (r.get("params") or {}).items()), 32),
                *(_cell((r.get("metrics") or {}).get(m)) for m in metrics),
                verdict,
            ]
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table]
    lines.append(f"({len(rows)} of {page['count']}; offset {page['offset']})")
    return "\n".join(lines)


def _duration(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s:.1f}s" if s < 120 else f"{s / 60:.1f}m" if s < 7200 else f"{s / 3600:.1f}h"


def _cell(v: Any) -> str:
    return "-" if v is None else f"{v:.6g}" if isinstance(v, float) else str(v)


def _clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"
