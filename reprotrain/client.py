"""Python SDK for the reprotrain REST API (httpx). The transport is injectable for tests.

ReprotrainError
└── ApiError          any non-2xx answer (status, code, field from the error body)
    └── Unreachable   no answer at all: connection refused, DNS, timeout
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from reprotrain.errors import ApiError, Unreachable
from reprotrain.status import Status

DEFAULT_URL = "http://127.0.0.1:8000"


class Client:
    """One reprotrain server. `url` and `token` usually come from REPROTRAIN_URL / REPROTRAIN_TOKEN."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = (url or DEFAULT_URL).rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            resp = self._http.request(method, path, **kw)
        except httpx.TransportError as e:
            raise Unreachable(f"cannot reach reprotrain at {self.url}: {e}") from e
        if resp.status_code >= 400:
            raise _error(resp)
        return resp

    # ---- jobs ------------------------------------------------------------------------------
    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", "/v1/jobs", json=spec).json()

    def get(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/jobs/{job_id}").json()

    def list(
        self,
        *,
        status: list[str] | None = None,
        name: str | None = None,
        rerun_of: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status:
            params["status"] = status
        if name:
            params["name"] = name
        if rerun_of:
            params["rerun_of"] = rerun_of
        return self._request("GET", "/v1/jobs", params=params).json()

    def runs(self, *, limit: int = 50, offset: int = 0, **filters: Any) -> dict[str, Any]:
        """The runs table (light rows). Filters: status, name, search, tag, verdict, rerun_of,
        project (None: not filtered), and params={"lr": 0.1, "optim.name": "adam"}."""
        params: list[tuple[str, Any]] = [("limit", limit), ("offset", offset)]
        for key, value in filters.items():
            if key == "params":
                params += [(f"param.{k}", _query_value(v)) for k, v in (value or {}).items()]
            elif isinstance(value, list | tuple):
                params += [(key, v) for v in value]
            elif value is not None:
                params.append((key, value))
        return self._request("GET", "/v1/runs", params=params).json()

    def rerun(self, job_id: str, env: str = "same") -> dict[str, Any]:
        """Re-run a job: `same`, on a worker of its environment (409 no_matching_worker when none
        is alive); `any`, on its spec's queue."""
        params = {"env": env} if env != "same" else None
        return self._request("POST", f"/v1/jobs/{job_id}/rerun", params=params).json()

    def bisect(self, a: str, b: str) -> dict[str, Any]:
        return self._request("POST", f"/v1/jobs/{a}/bisect/{b}").json()

    def delete(self, job_id: str) -> dict[str, Any]:
        return self._request("DELETE", f"/v1/jobs/{job_id}").json()

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._request("POST", f"/v1/jobs/{job_id}/cancel").json()

    def trace(self, job_id: str, since: int = 0) -> dict[str, Any]:
        return self._request("GET", f"/v1/jobs/{job_id}/trace", params={"since": since}).json()

    def fingerprint(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/jobs/{job_id}/fingerprint").json()

    def artifacts(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/jobs/{job_id}/artifacts").json()

    def download(self, job_id: str, name: str) -> bytes:
        return self._request("GET", f"/v1/jobs/{job_id}/artifacts/{name}").content

    def manifest(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/jobs/{job_id}/manifest").json()

    def stored_result(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/jobs/{job_id}/result").json()

    def workers(self) -> dict[str, Any]:
        return self._request("GET", "/v1/workers").json()

    def keys(self) -> dict[str, Any]:
        return self._request("GET", "/v1/keys").json()

    def compare(self, a: str, b: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/jobs/{a}/compare/{b}").json()

    def logs(self, job_id: str, *, stream: str = "stdout", follow: bool = False) -> Iterator[bytes]:
        params = {"stream": stream, "follow": str(follow).lower()}
        try:
            with self._http.stream(
                "GET",
                f"/v1/jobs/{job_id}/logs",
                params=params,
                timeout=None if follow else self._http.timeout,
            ) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise _error(resp)
                yield from resp.iter_bytes()
        except httpx.TransportError as e:
            raise Unreachable(f"cannot reach reprotrain at {self.url}: {e}") from e

    def upload_bundle(self, data: bytes) -> dict[str, Any]:
        return self._request(
            "POST", "/v1/bundles", content=data, headers={"Content-Type": "application/gzip"}
        ).json()

    def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        poll: float = 0.25,
        on_trace: Callable[[list[dict[str, Any]], dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the job ends; `on_trace(new_entries, trace_page)` sees progress as it comes."""
        deadline = None if timeout is None else time.monotonic() + timeout
        seen = 0
        while True:
            page = self.trace(job_id, since=seen)
            seen += len(page["data"])
            if on_trace is not None:
                on_trace(page["data"], page)
            if Status(page["status"]).is_final:
                return self.get(job_id)
            if deadline is not None and time.monotonic() > deadline:
                raise ApiError(f"job {job_id} still {page['status']} after {timeout} s", code="timeout")
            time.sleep(poll)


def _query_value(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def _error(resp: httpx.Response) -> ApiError:
    try:
        err = resp.json()["error"]
        return ApiError(err["message"], status=resp.status_code, code=err["code"], field=err.get("field"))
    except (ValueError, KeyError, TypeError):
        return ApiError(f"HTTP {resp.status_code}: {resp.text[:200]}", status=resp.status_code)
