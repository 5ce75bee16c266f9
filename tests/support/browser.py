"""Headless Chromium for browser tests: Debian's `chromium`, driven by Playwright.

Never downloads a browser. A missing Chromium fails the test with the command
that installs it (`.ci/run` runs that command)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("ARBITER_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: Where screenshots of browser tests go (a CI artefact folder; not committed).
ARTIFACTS = Path(os.environ.get("ARBITER_TEST_ARTIFACTS", Path(__file__).parents[2] / ".artifacts"))


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """A launched headless Chromium, for one test module.

    Not session-wide: Playwright's sync API keeps an event loop running in the
    main thread while it is open, and every later test calling `asyncio.run`
    (the CLI commands do) would fail.
    """
    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM}: run "
            "`apt-get update && apt-get install -y chromium chromium-driver` (as .ci/run does)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page: Any, name: str) -> Path:
    """Save a screenshot as a test artefact; returns its path."""
    path = ARTIFACTS / "studio" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))
    return path
