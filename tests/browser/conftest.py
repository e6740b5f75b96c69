"""Browser tests of the web UI: Playwright driving Debian's chromium (`apt-get install chromium`;
Playwright's own browser download is not used), against a real `reprotrain serve`.

Playwright's sync API runs an event loop in the calling thread for as long as it is started, and
other tests call asyncio.run there; so each module starts and stops its own Playwright rather than
keeping one browser for the whole session (as pytest-playwright's fixtures would)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT, Serve, start_serve, unavailable

SHOTS = ROOT / "build" / "ui-screenshots"  # the screenshots the tests save (README, "Web UI")


def chromium() -> str:
    found = (
        os.environ.get("REPROTRAIN_TEST_CHROMIUM")
        or shutil.which("chromium")
        or shutil.which("chromium-browser")
    )
    if not found:
        unavailable("no chromium on the PATH (apt-get install chromium)")
    return str(found)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (make venv)")
    exe = chromium()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies) and page; console errors fail the test."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    pg.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    pg.errors = errors
    yield pg
    context.close()
    assert not [e for e in errors if "401" not in e], errors  # a 401 is how the UI learns to sign in


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    """`reprotrain serve` on loopback without tokens: the UI needs no sign-in."""
    s = start_serve(tmp_path_factory.mktemp("ui-serve"))
    yield s
    s.stop()


def shot(page: Any, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
