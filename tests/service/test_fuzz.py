"""Property-based fuzzing of every route from the OpenAPI schema: no input a client sends gives a 500."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402

from tests.helpers import start_stack  # noqa: E402


@schemathesis.serializer("application/gzip")
def _gzip(ctx, value) -> bytes:  # bundles: arbitrary bytes, mostly not a tar.gz
    return value if isinstance(value, bytes) else str(value).encode()


@pytest.fixture(scope="module")
def fuzz_url(tmp_path_factory):
    """A SQLite + filesystem-broker stack with no worker: fuzzed jobs stay QUEUED."""
    tmp = tmp_path_factory.mktemp("fuzz")
    stack = start_stack(tmp, f"sqlite:///{tmp / 'db.sqlite'}", None, workers=0)
    yield stack.url
    stack.stop()


def test_no_route_answers_500(fuzz_url: str) -> None:
    """Random paths, queries and bodies for every operation: never a server error, always the error shape."""
    schema = schemathesis.openapi.from_url(f"{fuzz_url}/openapi.json")

    failures = []
    for result in schema.get_all_operations():
        op = result.ok()

        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=op.as_strategy())
        def check(case) -> None:
            response = case.call(base_url=fuzz_url, timeout=10)
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} → {response.status_code}: {response.text[:200]}"
                )
            elif response.status_code >= 400 and "application/json" in str(
                response.headers.get("content-type")
            ):
                body = response.json()
                assert set(body) == {"error"}, body
                assert {"code", "message", "field"} <= set(body["error"]), body

        check()
    assert failures == []
