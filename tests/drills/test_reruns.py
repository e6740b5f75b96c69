"""Drill 10: concurrent re-runs of one job get distinct ids and leave the original as it was; a
re-run of an unknown id is 404."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.helpers import base_spec


def test_concurrent_reruns_of_one_id(stack) -> None:
    """20 re-runs of one finished job at once: 20 × 201, 20 distinct ids, each rerun_of it; the
    original's status, spec and result unchanged; an unknown id (and a malformed one) is 404."""
    c = stack.client()
    original = c.wait(c.submit(base_spec(name="rerun-drill", params={"epochs": 1, "samples": 8}))["id"])
    before = c.get(original["id"])
    with httpx.Client(base_url=stack.url, timeout=60) as http, ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda _: http.post(f"/v1/jobs/{original['id']}/rerun"), range(20)))
    assert [a.status_code for a in answers] == [201] * 20
    ids = {a.json()["id"] for a in answers}
    assert len(ids) == 20 and original["id"] not in ids
    assert all(a.json()["rerun_of"] == original["id"] for a in answers)
    after = c.get(original["id"])
    assert {k: after[k] for k in ("status", "spec", "spec_digest", "digests", "attempts")} == {
        k: before[k] for k in ("status", "spec", "spec_digest", "digests", "attempts")
    }
    for unknown in ("0" * 32, "not-a-job"):
        r = httpx.post(f"{stack.url}/v1/jobs/{unknown}/rerun", timeout=30)
        assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")
