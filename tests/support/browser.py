"""Headless Chromium for browser tests: Debian's `chromium`, driven by Playwright.

Never downloads a browser build. A missing Chromium is installed from Debian's
packages when the tests run as root on a Debian machine (as the README's test
command does on a fresh machine); otherwise, or if that fails, the test fails
with the command that installs it."""

from __future__ import annotations

import os
import shutil
import subprocess
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
        problem = _install_chromium()
        if problem is not None:
            pytest.fail(
                f"Chromium is not installed at {CHROMIUM} ({problem}): run "
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


def _install_chromium() -> str | None:
    """Install Debian's chromium and chromium-driver; None on success, else why not."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "installing it needs root and apt-get"
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"],
    ):
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=900, check=False,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )  # fmt: skip
        if done.returncode != 0:
            return f"`{' '.join(command)}` failed: {done.stderr.strip()[-300:]}"
    return None if CHROMIUM.exists() else "apt-get installed no /usr/bin/chromium"
