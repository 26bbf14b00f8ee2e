"""Headless Chromium for the browser tests (the status page and the demo).

Driven through Selenium with the system's ``chromium`` and ``chromedriver``
(Debian's ``chromium`` and ``chromium-driver`` packages; ``.ci/run`` installs
them). Selenium is given both paths, so it never tries to download a
driver. Without them the browser tests are skipped, saying why.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,1100",
)


def _binaries() -> tuple[str | None, str | None]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    return browser, shutil.which("chromedriver")


def missing_reason() -> str | None:
    """Why the browser tests cannot run here, or None."""
    browser, driver = _binaries()
    if browser is None or driver is None:
        return (
            "headless Chromium is not installed "
            "(apt-get install chromium chromium-driver; .ci/run does it)"
        )
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -r requirements-test.txt)"
    return None


def chrome(tmp_path: Path) -> Iterator[Any]:
    """A fresh headless Chromium with its own profile directory; quit afterwards."""
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = _binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in _FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver: Any, name: str) -> Path:
    """Save a PNG of the page under tests/artifacts/ (gitignored); its path."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    return path
