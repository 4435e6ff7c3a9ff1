"""A real Chromium for the console's browser tests: Debian's `chromium` package (installed with
apt-get when missing and running as root), driven by Playwright's async API. Playwright's own
browser download is never used."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from playwright.async_api import BrowserContext, Locator, Page

from tests.helpers.stack import ROOT

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
# Screenshots of each console page the tests visit (gitignored with the rest of .data/).
ARTIFACTS = ROOT / ".data" / "test-artifacts" / "console"
# Root in a container has no user namespace for Chromium's sandbox.
LAUNCH_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"]


def _found() -> str | None:
    for candidate in CHROMIUM_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium")


def chromium_path() -> str:
    """The Chromium binary; installs Debian's `chromium` with apt-get when it is missing and we
    are root (as on CI), else fails saying how to install it."""
    found = _found()
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env)
        found = _found()
        if found:
            return found
    raise RuntimeError("Chromium is missing: `apt-get install -y chromium` (as root), or `make test` as root")


def artifact(name: str) -> Path:
    """Where the screenshot `name` goes (the folder is made on first use)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / f"{name}.png"


async def sign_in(page: Page, api_url: str, key: str) -> None:
    """Open the console (which asks to sign in) and sign in with `key`."""
    await page.goto(f"{api_url}/console")
    assert page.url.endswith("/console/login")
    await page.get_by_label("API key").fill(key)
    await navigate(page, page.get_by_role("button", name="Sign in"))


async def signed_in_page(context: BrowserContext, api_url: str, key: str) -> Page:
    """A new page of `context`, signed in to the console with `key`."""
    page = await context.new_page()
    await sign_in(page, api_url, key)
    return page


async def navigate(page: Page, target: Locator, **wait: Any) -> None:
    """Click a link or submit button and wait for the page it leads to (`wait`: expect_navigation's
    options, e.g. wait_until="commit" for a page that may reload itself while loading)."""
    async with page.expect_navigation(**wait):
        await target.click()
