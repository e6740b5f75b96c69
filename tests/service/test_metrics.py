"""/metrics by Prometheus conventions: HTTP requests by route template and status, jobs submitted
and ended with their run time, queue depth, running jobs, re-sends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from reprotrain.broker import StubBroker
from reprotrain.result import Result
from reprotrain.service.maintenance import Maintenance
from reprotrain.spec import parse_spec
from reprotrain.status import Status
from tests.helpers import base_spec
from tests.service.test_ui_api import Browser, make_app


def samples(client: Browser) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    r = client.call("GET", "/metrics")
    assert r.status_code == 200
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Any]:
    a = make_app(tmp_path)
    yield a
    a.state.store.close()


def test_requests_are_counted_by_route_template_and_status(app: Any) -> None:
    client = Browser(app)
    job = client.call("POST", "/v1/jobs", json=base_spec(queue="gpu")).json()
    client.call("GET", f"/v1/jobs/{job['id']}")
    client.call("GET", f"/v1/jobs/{job['id'][:8]}")
    client.call("GET", "/v1/jobs/ffffffffffff")
    client.call("GET", "/nowhere")
    client.call("GET", "/nowhere")
    client.call("BREW", "/v1/jobs")  # a method HTTP has not: one series for all such
    client.call("XYZZY", "/nowhere")
    found = samples(client)
    count = "reprotrain_http_request_duration_seconds_count"
    assert value(found, count, method="GET", route="/v1/jobs/{job_id}", status="200") == 2
    assert value(found, count, method="GET", route="/v1/jobs/{job_id}", status="404") == 1
    assert value(found, count, method="POST", route="/v1/jobs", status="201") == 1
    assert value(found, count, method="GET", route="unmatched", status="404") == 2
    others = {k: v for k, v in found.items() if k[0] == count and ("method", "other") in k[1]}
    assert sum(others.values()) == 2 and not [k for k in found if "BREW" in str(k) or "XYZZY" in str(k)]
    assert not [k for k in found if job["id"] in str(k)]  # never an id as a label
    assert value(found, "reprotrain_jobs_submitted_total", queue="gpu", kind="submit") == 1
    assert value(found, "reprotrain_queue_depth", queue="gpu") == 1
    assert value(found, "reprotrain_jobs", status="QUEUED") == 1


def test_ended_jobs_are_counted_once_with_their_run_time(app: Any) -> None:
    store = app.state.store
    loop = Maintenance(store, StubBroker, app.state.settings, app.state.metrics)
    ids = [store.create_jobs([(parse_spec(base_spec()), None)])[0].id for _ in range(3)]
    for job_id, status in zip(ids, (Status.SUCCEEDED, Status.SUCCEEDED, Status.FAILED), strict=True):
        store.claim(job_id, "w", 30)
        row = store.get_job(job_id)
        result = Result(
            job_id=job_id, name=row.name, spec=row.spec, spec_digest=row.spec_digest, status=status
        )
        store.finish(job_id, "w", status, result=result, error=None, artifacts=[])
    loop.count_ended()
    loop.count_ended()  # nothing new: nothing counted twice
    client = Browser(app)
    client.call("POST", f"/v1/jobs/{ids[0]}/rerun")
    found = samples(client)
    assert value(found, "reprotrain_jobs_finished_total", status="SUCCEEDED") == 2
    assert value(found, "reprotrain_jobs_finished_total", status="FAILED") == 1
    assert value(found, "reprotrain_job_duration_seconds_count", status="SUCCEEDED") == 2
    assert value(found, "reprotrain_job_duration_seconds_sum", status="SUCCEEDED") >= 0
    assert value(found, "reprotrain_jobs_submitted_total", queue="default", kind="rerun") == 1
    assert value(found, "reprotrain_jobs_running") == 0


def test_the_grafana_dashboard_reads_only_metrics_the_api_exports(app: Any) -> None:
    """deploy/grafana/reprotrain-dashboard.json: valid JSON, and every series it queries exists."""
    import json
    import re

    from tests.helpers import ROOT

    dash = json.loads((ROOT / "deploy" / "grafana" / "reprotrain-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exported = set()
    for family in app.state.metrics.registry.collect():  # every family, observed yet or not
        suffixes = {"histogram": ("_bucket", "_count", "_sum"), "counter": ("_total",)}.get(
            family.type, ("",)
        )
        exported |= {family.name + suffix for suffix in suffixes}
    used = {m for e in exprs for m in re.findall(r"\b(reprotrain_[a-z_]+)", e)}
    assert used and used <= exported, used - exported
