"""Bad input fails alone, with a 4xx naming the problem: NUL and lone surrogates anywhere, nesting
past the limit, oversized bodies, control characters in ids and query parameters; the good
submits beside them are all stored."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from reprotrain.spec import MAX_DEPTH
from tests.helpers import base_spec


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


BAD_BODIES = {
    "nul-in-value": (json.dumps(base_spec(params={"note": "a\u0000b"})), 422, "params.note"),
    "nul-in-key": (json.dumps(base_spec(params={"k\u0000": 1})), 422, "params.k\\0"),
    "nul-in-name": (json.dumps(base_spec(name="job\u0000")), 422, "name"),
    "lone-surrogate": (json.dumps(base_spec(params={"x": "\ud800"})), 422, "params.x"),
    "depth-300": (
        json.dumps(base_spec()).replace('"params": {', f'"params": {{"deep": {_deep(300)}, ', 1),
        422,
        None,
    ),
    "depth-100000": ('{"params": {"deep": ' + _deep(100_000) + "}}", 422, None),
}


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_a_bad_spec_is_a_422_naming_where(stack, case: str) -> None:
    """Each bad body: 422 with the field it is in (where there is one), never a 500."""
    body, status, field = BAD_BODIES[case]
    r = httpx.post(
        f"{stack.url}/v1/jobs", content=body, headers={"Content-Type": "application/json"}, timeout=60
    )
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == "spec_invalid"
    if field:
        assert error["field"] == field, error
    if case.startswith("depth"):
        assert str(MAX_DEPTH) in error["message"]


def test_an_oversized_body_is_413_before_it_is_read(stack) -> None:
    """50 MB of params: 413 request_too_large, whether Content-Length says so or the body streams."""
    big = json.dumps(base_spec(params={"blob": "x" * (50 << 20)})).encode()
    r = httpx.post(f"{stack.url}/v1/jobs", content=big, timeout=60)
    assert (r.status_code, r.json()["error"]["code"]) == (413, "request_too_large")

    def chunks():
        for i in range(0, len(big), 1 << 20):
            yield big[i : i + 1 << 20]

    r = httpx.post(f"{stack.url}/v1/jobs", content=chunks(), timeout=60)
    assert (r.status_code, r.json()["error"]["code"]) == (413, "request_too_large")


@pytest.mark.parametrize(
    "path",
    [
        "/v1/jobs/abc%00def",
        "/v1/jobs?name=a%00b",
        "/v1/jobs?rerun_of=%00",
        "/v1/jobs/x%0Ay/cancel",
        "/v1/jobs/a%00/compare/b",
        "/v1/jobs/a%00/rerun",
    ],
)
def test_control_characters_in_ids_and_queries_are_422(stack, path: str) -> None:
    """A NUL or newline in a path or a query parameter: 422 request_invalid, not a database error."""
    method = "POST" if path.endswith(("cancel", "rerun")) else "GET"
    r = httpx.request(method, stack.url + path, timeout=30)
    assert (r.status_code, r.json()["error"]["code"]) == (422, "request_invalid"), r.text


def test_bad_submits_never_fail_their_neighbours(stack) -> None:
    """20 bad among 180 good concurrent submits: 180 × 201, 20 × 422, every good one stored."""
    good = json.dumps(base_spec(name="neighbour", params={"epochs": 1, "samples": 8}))
    bad = json.dumps(base_spec(name="neighbour", params={"note": "\u0000"}))
    bodies = [bad if i % 10 == 0 else good for i in range(200)]
    with httpx.Client(base_url=stack.url, timeout=60) as c, ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda b: c.post("/v1/jobs", content=b), bodies))
    codes = [a.status_code for a in answers]
    assert codes.count(201) == 180 and codes.count(422) == 20, sorted(set(codes))
    for a in answers:
        if a.status_code == 201:
            assert httpx.get(f"{stack.url}/v1/jobs/{a.json()['id']}", timeout=30).status_code == 200


def test_artifact_names_never_reach_the_filesystem(stack) -> None:
    """An artifact is found by its stored name only: traversal, encoded or not, an absolute path
    and a digest-looking name are 404 and serve nothing."""
    c = stack.client()
    job = c.wait(c.submit(base_spec(name="traversal", params={"epochs": 1, "samples": 8}))["id"], timeout=120)
    assert job["status"] == "SUCCEEDED", job["error"]
    digest = c.artifacts(job["id"])["data"][0]["digest"]
    for name in (
        "%2E%2E/%2E%2E/%2E%2E/etc/passwd",
        "outputs/..%2F..%2Freprotrain.db",
        "%2Fetc%2Fpasswd",
        digest,
    ):
        r = httpx.get(f"{stack.url}/v1/jobs/{job['id']}/artifacts/{name}", timeout=30)
        assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found"), (name, r.text[:200])


def test_a_post_that_takes_no_body_refuses_one(stack) -> None:
    """Re-run, cancel and bisect take nothing but their path: a body that says something (a seed
    for the re-run, say, which would otherwise be dropped unseen) is a 422 naming the body, and
    nothing is created or cancelled; no body, or an empty JSON value, is taken."""
    c = stack.client()
    job = c.wait(c.submit(base_spec(name="no-body", params={"epochs": 1, "samples": 8}))["id"], timeout=120)
    assert job["status"] == "SUCCEEDED", job["error"]
    ident = job["id"]

    def chunked():
        yield b'{"seed": '
        yield b"2}"

    for path in (f"/v1/jobs/{ident}/rerun", f"/v1/jobs/{ident}/cancel", f"/v1/jobs/{ident}/bisect/{ident}"):
        for body in ('{"seed": 2}', "x" * 100_000, chunked()):
            r = httpx.post(stack.url + path, content=body, timeout=30)
            assert r.status_code == 422, (path, r.text)
            error = r.json()["error"]
            assert (error["code"], error["field"]) == ("request_invalid", "body"), error
            assert "takes no body" in error["message"]
    reruns = httpx.get(f"{stack.url}/v1/jobs", params={"rerun_of": ident}, timeout=30).json()
    assert reruns["count"] == 0
    for empty in ({}, None):
        r = httpx.post(f"{stack.url}/v1/jobs/{ident}/rerun", json=empty, timeout=30)
        assert (r.status_code, r.json()["rerun_of"]) == (201, ident), r.text
    assert httpx.get(f"{stack.url}/v1/jobs", params={"rerun_of": ident}, timeout=30).json()["count"] == 2
