"""The web UI in a real browser against a real `reprotrain serve`: the runs table updating live,
a job's page, the compare page of a seeded divergence, an artifact download, sign-in with a
token, and /docs with every request beyond this server blocked."""

from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from reprotrain.client import Client
from tests.browser.conftest import shot
from tests.helpers import Serve, base_spec, script_spec, start_serve

SLOW_JOB = """\
import time
from reprotrain.report import log
for step in range(10):
    print(f"step {step}", flush=True)
    log(step, total=10, loss=1.0 / (step + 1))
    time.sleep(0.5)
"""
NOISE = {
    "name": "noise",
    "entrypoint": "reprotrain.examples.nondeterministic:train",
    "params": {"mode": "urandom", "noise_step": 5, "steps": 12},
    "seed": 7,
    "determinism": {"policy": "strict"},
    "device": "cpu",
    "track": {"digest_every": 1},
}


def row_status(page: Any, job_id: str) -> str | None:
    row = page.locator(f'tr[data-id="{job_id}"]')
    return row.get_attribute("data-status") if row.count() else None


def test_the_runs_table_follows_jobs_live_without_a_reload(page: Any, serve: Serve, tmp_path: Path) -> None:
    """Two jobs and a re-run, submitted while the table is open: their rows appear and their
    statuses move on in place; the page is never reloaded."""
    page.goto(serve.url + "/")
    page.wait_for_selector("table.runs")
    page.evaluate("window.__same_page = 1")
    with Client(serve.url) as c:
        slow = c.submit(
            script_spec(c, tmp_path / "code", SLOW_JOB, name="slow-live") | {"tags": ["ui", "slow"]}
        )
        quick = c.submit(base_spec(name="quick-live", tags=["ui"], project="ui-proj"))
        seen: dict[str, set[str]] = {slow["id"]: set(), quick["id"]: set()}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and any("SUCCEEDED" not in s for s in seen.values()):
            for job_id, states in seen.items():
                if (st := row_status(page, job_id)) is not None:
                    states.add(st)
            time.sleep(0.2)
        assert all("SUCCEEDED" in s for s in seen.values()), seen
        assert seen[slow["id"]] & {"QUEUED", "RUNNING"}, seen  # watched while it ran, then done
        assert c.get(slow["id"])["status"] == "SUCCEEDED"

        rerun = c.rerun(quick["id"])
        badge = page.locator(f'tr[data-id="{rerun["id"]}"] [data-verdict]')
        badge.wait_for(timeout=120_000)
        assert badge.get_attribute("data-verdict") == "identical"
        assert c.get(rerun["id"])["verdict"]["verdict"] == "identical"
        cell = page.locator(f'tr[data-id="{rerun["id"]}"] td').nth(10)
        assert quick["id"][:8] in cell.inner_text()  # the re-run-of link
        assert page.locator(f'tr[data-id="{quick["id"]}"] [data-role="project"]').inner_text() == "ui-proj"
    assert page.evaluate("window.__same_page") == 1

    # filters narrow the same table: a tag, then a verdict
    page.fill('input[name="tag"]', "slow")
    page.click("form#filters button")
    page.wait_for_function("() => document.querySelectorAll('tr[data-id]').length === 1")
    assert page.locator("tr[data-id]").get_attribute("data-id") == slow["id"]
    assert "tag=slow" in page.url
    page.goto(serve.url + "/")
    page.wait_for_selector("tr[data-id]")
    # a row's project and tags filter the table to theirs
    page.locator(f'tr[data-id="{quick["id"]}"] [data-role="project"]').click()
    page.wait_for_url(re.compile(r"project=ui-proj"))
    page.wait_for_function("() => document.querySelectorAll('tr[data-id]').length === 2")
    ids = {page.locator("tr[data-id]").nth(i).get_attribute("data-id") for i in range(2)}
    assert ids == {quick["id"], rerun["id"]}  # the job and its re-run, which has its spec
    assert page.locator('input[name="project"]').input_value() == "ui-proj"
    page.goto(serve.url + "/")
    page.locator(f'tr[data-id="{slow["id"]}"] a.tag', has_text="slow").click()
    page.wait_for_url(re.compile(r"tag=slow"))
    page.wait_for_function("() => document.querySelectorAll('tr[data-id]').length === 1")
    page.goto(serve.url + "/")
    page.wait_for_selector("tr[data-id]")
    shot(page, "runs")
    page.locator(f'tr[data-id="{slow["id"]}"] td').first.click()  # a row opens its job
    page.wait_for_url(re.compile(f"/jobs/{slow['id']}$"))
    page.wait_for_selector('.chart[data-metric="loss"]')
    # an identical re-run's difference is zero throughout: drawn on a small range, not 0–100
    page.goto(f"{serve.url}/compare/{quick['id']}/{rerun['id']}")
    with Client(serve.url) as c:
        absent = c.compare(quick["id"], rerun["id"]).get("absent")
    assert absent  # the example writes no stdout: the page says what neither run has
    words = page.locator('[data-role="verdict"]').inner_text()
    assert f"Neither run has: {', '.join(absent)}" in words, words
    diff = page.locator('.chart[data-metric$=": red − blue"]').first
    diff.wait_for()
    name = diff.get_attribute("data-metric")
    page.wait_for_function("(n) => window.reprotrain.charts[n].data[0].length > 0", arg=name)
    assert page.evaluate("(n) => window.reprotrain.charts[n].data[1].every((v) => v === 0)", name)
    assert page.evaluate(
        "(n) => [window.reprotrain.charts[n].scales.y.min, window.reprotrain.charts[n].scales.y.max]", name
    ) == [-1, 1]


def test_a_running_job_page_grows_its_chart_and_log(page: Any, serve: Serve, tmp_path: Path) -> None:
    with Client(serve.url) as c:
        job = c.submit(script_spec(c, tmp_path / "code", SLOW_JOB, name="slow-page"))
        page.goto(f"{serve.url}/jobs/{job['id']}")
        page.wait_for_function(
            "() => window.reprotrain.charts.loss && window.reprotrain.charts.loss.data[0].length > 0",
            timeout=60_000,
        )
        first = page.evaluate("window.reprotrain.charts.loss.data[0].length")
        # while it runs, how far it is of the 10 steps it declared
        shown = page.locator('[data-role="progress"]')
        shown.wait_for()
        text = shown.inner_text()
        assert re.fullmatch(r"step \d+ of 10 \(\d+ %(, about .+ left)?\)", text), text
        page.wait_for_function(
            "() => document.querySelector('h1 [data-status]')?.dataset.status === 'SUCCEEDED'",
            timeout=60_000,
        )
        page.wait_for_function("() => window.reprotrain.charts.loss.data[0].length === 10")
        assert first < 10, "the chart was first drawn with the whole trace: nothing grew live"
        trace = [e["metrics"]["loss"] for e in c.trace(job["id"])["data"]]
        assert page.evaluate("window.reprotrain.charts.loss.data[1]") == trace
        page.wait_for_function("() => document.getElementById('log').textContent.includes('step 9')")
        assert page.locator("#log").inner_text().splitlines() == [f"step {i}" for i in range(10)]


@pytest.fixture(scope="module")
def diverged(serve: Serve) -> tuple[str, str, dict[str, Any]]:
    """A job that adds OS entropy at step 5, and its re-run: a divergence seeded at a known step."""
    with Client(serve.url) as c:
        a = c.wait(c.submit(NOISE)["id"], timeout=120)
        b = c.wait(c.rerun(a["id"])["id"], timeout=120)
        assert b["verdict"]["verdict"] == "diverged", b["verdict"]
        return a["id"], b["id"], b["verdict"]


def test_the_compare_page_overlays_both_runs_and_marks_the_divergence(
    page: Any, serve: Serve, diverged: tuple[str, str, dict[str, Any]]
) -> None:
    a, b, verdict = diverged
    step = verdict["divergence"]["step"]
    assert step == 5  # the job's own noise_step
    page.goto(f"{serve.url}/compare/{a}/{b}")
    chart = page.locator('.chart[data-metric="loss"]')
    chart.wait_for()
    page.wait_for_function(
        "() => window.reprotrain.charts.loss && window.reprotrain.charts.loss.data[0].length === 12"
    )
    u = "window.reprotrain.charts.loss"
    assert page.evaluate(f"{u}.series.length") == 3  # steps, then one series per run
    ya, yb = page.evaluate(f"{u}.data[1]"), page.evaluate(f"{u}.data[2]")
    with Client(serve.url) as c:
        assert ya == [e["metrics"]["loss"] for e in c.trace(a)["data"]]
        assert yb == [e["metrics"]["loss"] for e in c.trace(b)["data"]]
    assert ya[: step + 1] == yb[: step + 1] and ya[step + 1 :] != yb[step + 1 :]
    assert chart.get_attribute("data-marker-step") == str(step)
    # the dashed marker is drawn at that step: the canvas is red there, and not a little beside it
    red = """([step, dx]) => {
        const u = window.reprotrain.charts.loss, r = window.devicePixelRatio;
        const x = Math.round(u.valToPos(step, 'x', true)) + Math.round(dx * r);
        const ctx = u.ctx, top = u.bbox.top, h = u.bbox.height;
        let hits = 0;
        for (let y = top + 2; y < top + h - 2; y += 3) {
            const [R, G, B] = ctx.getImageData(x, y, 1, 1).data;
            if (R > 180 && G < 90 && B < 90) hits++;
        }
        return hits / Math.floor((h - 4) / 3);
    }"""
    assert page.evaluate(red, [step, 0]) > 0.3
    assert page.evaluate(red, [step - 0.5, 0]) < 0.1 and page.evaluate(red, [step + 0.5, 0]) < 0.1
    words = page.locator('[data-role="verdict"]').inner_text()
    assert f"Diverged at step {step}" in words and verdict["divergence"]["tensor"] in words
    # two metric values that six digits do not tell apart are shown with every digit
    nums = "([a, b]) => window.reprotrain.format.nums(a, b)"
    close = [7.889509201049805, 7.889513969421387]
    assert page.evaluate(nums, close) == "7.889509201049805 → 7.889513969421387"
    assert page.evaluate(nums, [0.5, 0.25]) == "0.5 → 0.25"
    assert page.locator('[data-role="files"] tr', has_text="model").locator(".st-differs").count() == 1
    shot(page, "compare")


def test_a_reruns_own_page_shows_its_verdict_and_artifacts_download(
    page: Any, serve: Serve, diverged: tuple[str, str, dict[str, Any]]
) -> None:
    _, b, _ = diverged
    page.goto(f"{serve.url}/jobs/{b}")
    page.wait_for_selector("#against .chart[data-metric='loss'][data-marker-step='5']")
    assert "diverged" in page.locator("#verdict").inner_text()
    page.wait_for_selector("#determinism table")
    assert "deterministic_algorithms" in page.locator("#determinism").inner_text()
    assert "matmul false · cudnn false" in page.locator("#determinism").inner_text()  # not raw JSON
    link = page.locator("a[data-artifact$='model.safetensors']")
    link.wait_for()
    with page.expect_download() as info:
        link.click()
    name = link.get_attribute("data-artifact")
    with Client(serve.url) as c:
        assert Path(info.value.path()).read_bytes() == c.download(b, name)
    shot(page, "job")


@pytest.fixture(scope="module")
def token_serve(tmp_path_factory: pytest.TempPathFactory) -> Any:
    s = start_serve(tmp_path_factory.mktemp("ui-token"), env={"REPROTRAIN_API_TOKENS": "ui-s3cret-token"})
    yield s
    s.stop()


def test_with_tokens_the_ui_asks_once_and_shows_nothing_before(page: Any, token_serve: Serve) -> None:
    with Client(token_serve.url, token="ui-s3cret-token") as c:
        job = c.wait(c.submit(base_spec(name="private-run"))["id"], timeout=120)
    page.goto(token_serve.url + "/")
    page.wait_for_selector("form#login")
    assert "private-run" not in page.content()
    page.fill('input[name="token"]', "wrong")
    page.click("form#login button")
    page.wait_for_function("() => document.getElementById('login-error').textContent.includes('not valid')")
    page.fill('input[name="token"]', "ui-s3cret-token")
    page.click("form#login button")
    page.wait_for_selector(f'tr[data-id="{job["id"]}"]')
    assert "ui-s3cret-token" not in page.url
    cookie = next(k for k in page.context.cookies() if k["name"] == "reprotrain_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["expires"] == -1
    assert page.evaluate("document.cookie") == ""  # scripts cannot read it
    page.goto(f"{token_serve.url}/jobs/{job['id']}")  # still signed in: asked once
    page.wait_for_selector("h1 [data-status='SUCCEEDED']")
    page.click("#signout")
    page.wait_for_selector("form#login")
    page.reload()
    page.wait_for_selector("form#login")
    assert "private-run" not in page.content()
    assert "ui-s3cret-token" not in token_serve.output()  # not in the server's log either


@pytest.mark.parametrize(("path", "ready"), [("/docs", ".opblock"), ("/redoc", "[data-section-id]")])
def test_api_docs_render_with_the_network_blocked(page: Any, serve: Serve, path: str, ready: str) -> None:
    elsewhere: list[str] = []

    def only_here(route: Any) -> None:
        if route.request.url.startswith(serve.url):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_here)
    page.goto(serve.url + path)
    page.wait_for_selector(ready, timeout=30_000)
    assert page.locator(ready).count() >= 5
    assert "submit" in page.content().lower()
    assert not elsewhere, elsewhere  # the page's CSP stops ReDoc's CDN logo before any request
    refused = [e for e in page.errors if "Content Security Policy" in e]
    assert all("cdn.redoc.ly/redoc/logo-mini.svg" in e for e in refused), refused
    page.errors[:] = [e for e in page.errors if e not in refused]


LONG_JOB = """\
import math
from reprotrain.report import log
for step in range(20000):
    log(step, loss=math.sin(step / 300) + (5.0 if step == 12345 else 0.0))
"""


def test_a_long_trace_is_charted_downsampled_and_exact_when_zoomed(
    page: Any, serve: Serve, tmp_path: Path
) -> None:
    """20,000 steps reach the page as a few thousand points that keep a one-step spike; a zoom
    into 1,000 steps brings every exact value of that range."""
    with Client(serve.url) as c:
        job = c.wait(
            c.submit(script_spec(c, tmp_path / "code", LONG_JOB, name="long-trace"))["id"], timeout=180
        )
        assert job["status"] == "SUCCEEDED", job["error"]
    page.goto(f"{serve.url}/jobs/{job['id']}")
    page.wait_for_function(
        "() => window.reprotrain.charts.loss && window.reprotrain.charts.loss.data[0].length > 0"
    )
    steps = page.evaluate("window.reprotrain.charts.loss.data[0]")
    values = page.evaluate("window.reprotrain.charts.loss.data[1]")
    assert 500 < len(steps) <= 4 * 2000 + 2 and steps[0] == 0 and steps[-1] == 19_999
    assert max(values) == 5.0 + math.sin(12345 / 300)  # the spike survived
    assert "downsampled" in page.locator('.chart[data-metric="loss"]').inner_text()
    page.evaluate("window.reprotrain.charts.loss.setScale('x', {min: 3000, max: 3999})")
    page.wait_for_function(
        "() => { const x = window.reprotrain.charts.loss.data[0]; return x.length === 1000 && x[0] === 3000 }"
    )
    zoomed = page.evaluate("window.reprotrain.charts.loss.data")
    assert zoomed[0] == list(range(3000, 4000))
    assert zoomed[1] == [math.sin(s / 300) for s in range(3000, 4000)]


def test_the_job_page_deletes_an_ended_job_and_says_why_it_will_not_delete_an_original(
    page: Any, serve: Serve
) -> None:
    with Client(serve.url) as c:
        original = c.wait(c.submit(base_spec(name="to-delete"))["id"], timeout=120)
        rerun = c.wait(c.rerun(original["id"])["id"], timeout=120)
    page.on("dialog", lambda d: d.accept())
    page.goto(f"{serve.url}/jobs/{original['id']}")
    page.wait_for_selector("h1 [data-status='SUCCEEDED']")
    page.click("#delete")  # at once: the page's refresh after it must not take the message away
    page.wait_for_selector("#notice .error")
    page.wait_for_timeout(2500)
    assert "original of re-run" in page.locator("#notice").inner_text()
    page.goto(f"{serve.url}/jobs/{rerun['id']}")
    page.wait_for_selector("h1 [data-status='SUCCEEDED']")
    page.wait_for_load_state("networkidle")  # the page's own reads of the job are done: none 404s
    page.click("#delete")
    page.wait_for_url(serve.url + "/")
    page.wait_for_selector(f"tr[data-id='{original['id']}']")
    assert page.locator(f"tr[data-id='{rerun['id']}']").count() == 0
    with Client(serve.url) as c:
        assert c.list(name="to-delete")["count"] == 1
    # the browser logs the refused delete (409)
    page.errors[:] = [e for e in page.errors if not re.search(r"Failed to load resource.*\b409\b", e)]


def test_a_failed_job_opens_on_its_stderr_and_a_refused_rerun_says_why(page: Any, serve: Serve) -> None:
    """A failed job's page shows stderr, where its traceback is, without a click; a re-run the API
    refuses (the job was deleted meanwhile) says why on the page instead of doing nothing."""
    with Client(serve.url) as c:
        failed = c.wait(c.submit(base_spec(name="fails-ui", params={"epochs": "two"}))["id"], timeout=120)
    assert failed["status"] == "FAILED"
    page.goto(f"{serve.url}/jobs/{failed['id']}")
    page.wait_for_selector("h1 [data-status='FAILED']")
    page.wait_for_selector("#log[data-stream='stderr']")
    page.wait_for_function("() => document.getElementById('log').textContent.includes('Traceback')")
    assert page.locator(".tabs button.on").inner_text() == "stderr"
    page.wait_for_load_state("networkidle")
    with Client(serve.url) as c:
        c.delete(failed["id"])
    page.click("#rerun")
    page.wait_for_selector("#notice .error")
    assert f"no job with id '{failed['id']}'" in page.locator("#notice").inner_text()
    assert page.url.endswith(failed["id"])  # no new job, nowhere else
    page.errors[:] = [e for e in page.errors if not re.search(r"Failed to load resource.*\b404\b", e)]


def test_an_unknown_page_is_the_uis_own_404_and_a_status_choice_applies_at_once(
    page: Any, serve: Serve
) -> None:
    """A path the UI has no page for: a browser gets the UI saying so (404), an API client the
    JSON error. On the runs table, choosing a status filters without pressing Filter."""
    answer = page.goto(f"{serve.url}/workers")
    assert answer is not None and answer.status == 404
    page.wait_for_selector("text=No page here")
    r = httpx.get(f"{serve.url}/workers", timeout=30)
    assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")
    r = httpx.get(f"{serve.url}/v1/nope", headers={"Accept": "text/html"}, timeout=30)
    assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")
    page.errors[:] = [e for e in page.errors if not re.search(r"Failed to load resource.*\b404\b", e)]
    page.goto(serve.url + "/")
    page.wait_for_selector("table.runs")
    page.select_option("select[name=status]", "FAILED")
    page.wait_for_url(re.compile(r"status=FAILED"))


def test_the_compare_page_names_its_sides_as_they_are_and_the_runs_table_fits_a_narrow_window(
    page: Any, serve: Serve
) -> None:
    """Two jobs neither of which re-ran the other: the spec's columns are "a …" and "b …", not
    original and re-run, and the page says so; a job against itself says that. At 800 px the runs
    table scrolls in itself, the page does not."""
    with Client(serve.url) as c:
        a = c.wait(c.submit(base_spec(name="side-a", seed=1))["id"], timeout=120)["id"]
        b = c.wait(c.submit(base_spec(name="side-b", seed=2))["id"], timeout=120)["id"]
    page.goto(f"{serve.url}/compare/{a}/{b}")
    head = page.locator("h2:has-text('Spec: what differs') + table th")
    head.first.wait_for()
    assert head.all_inner_texts() == ["key", f"a {a[:8]}", f"b {b[:8]}"]
    assert "neither a re-run of the other" in page.locator('[data-role="verdict"]').inner_text()
    page.goto(f"{serve.url}/compare/{a}/{a}")
    page.wait_for_selector("text=Both sides are the same job.")
    page.set_viewport_size({"width": 800, "height": 900})
    page.goto(serve.url + "/")
    page.wait_for_selector("table.runs tbody tr[data-id]")
    assert page.evaluate("document.documentElement.scrollWidth") <= 800


def test_a_diverged_comparison_offers_a_bisect_whose_page_names_the_op(
    page: Any, serve: Serve, diverged: tuple[str, str, dict[str, Any]]
) -> None:
    a, b, _ = diverged
    page.goto(f"{serve.url}/compare/{a}/{b}")
    button = page.locator('[data-role="verdict"] button[data-role="bisect"]')
    button.click()
    page.wait_for_url(re.compile(r"/jobs/[0-9a-f]{32}$"))
    report = page.locator('[data-role="bisect"][data-found="op"]')
    report.wait_for(timeout=120_000)  # the page follows the bisect job until it ends
    bisect_id = page.url.rsplit("/", 1)[1]
    with Client(serve.url) as c:
        job = c.get(bisect_id)
    assert job["spec"]["bisect"]["a"] == a and job["spec"]["bisect"]["b"] == b
    # the job's own noise: OS entropy added in place to one weight at step 5, outside any module
    shown = page.locator('[data-role="bisect-op"]').inner_text()
    assert shown == job["bisect"]["first"]["op"] == "aten::add_"
    assert job["bisect"]["step"] == 5
    text = report.inner_text()
    assert "first differing op: aten::add_ in step 5" in text and "ops before it, which agreed" in text
    shot(page, "bisect")
    # back on the comparison: the bisect made is linked, and another is asked for, not made at once
    page.goto(f"{serve.url}/compare/{a}/{b}")
    page.locator('[data-role="bisect-made"] a').click()
    page.wait_for_url(f"{serve.url}/jobs/{bisect_id}")
    page.go_back()
    assert page.locator('[data-role="verdict"] button[data-role="bisect"]').inner_text() == "Bisect again"
